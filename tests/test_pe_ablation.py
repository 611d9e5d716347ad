"""The positional-embedding ablation (Table 9, seed 000's Table 7): a student pretrained without the absolute
embedding (or without RoPE too) exports a checkpoint that computes the same function when loaded as an ordinary
`uta` backbone (fine-tuning starts where pretraining ended, from a zero embedding); the config switch keeps every
other run's fingerprint; Table 9 pairs each ✗ student with its ✓ twin, with the published rows and gaps."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from test_pretrain_tables import _record  # a record row of a flat results frame

from utabench.backbones.factory import build_backbone
from utabench.backbones.uta_checkpoint import timm_to_release
from utabench.core.errors import UtabenchError
from utabench.harness.plugins import load_all
from utabench.harness.tables import render
from utabench.pretrain.config import build_config, config_path, read_raw
from utabench.pretrain.objectives import OBJECTIVES
from utabench.pretrain.run import pretrain
from utabench.pretrain.student import Student
from utabench.training.fingerprint import run_fingerprint

load_all()
TEACHER = {"spec": "clip:utabench-clip-world", "seed": 1}


def _raw(**student):
    raw = read_raw(config_path("world-student.yaml"))
    raw["teacher"] = TEACHER
    raw["student"] = {**raw["student"], **student}
    return raw


def test_the_switch_is_checked_and_only_a_change_changes_the_fingerprint(monkeypatch):
    monkeypatch.setenv("UTABENCH_CKPT", "/ckpt")  # the paper-setting configs' weights and data
    monkeypatch.setenv("UTABENCH_DATA", "/data")
    plain = run_fingerprint(build_config(_raw()))
    assert run_fingerprint(build_config(_raw(pos_embed={"absolute": True, "rope": True}))) == plain
    no_abs = build_config(_raw(pos_embed={"absolute": False}))
    no_rope = build_config(_raw(pos_embed={"absolute": False, "rope": False}))
    assert len({plain, run_fingerprint(no_abs), run_fingerprint(no_rope)}) == 3
    with pytest.raises(UtabenchError, match="student.pos_embed: unknown key 'absolut'"):
        build_config(_raw(pos_embed={"absolut": False}))
    with pytest.raises(UtabenchError, match="student.pos_embed"):
        build_config(_raw(pos_embed={"absolute": "sometimes"}))
    # the paper-setting configs: Table 6's students without the absolute embedding, named by Table 9's rows
    for name, row in (("table9-uta-no-pe.yaml", "UTA ✗"), ("table9-mim-no-pe.yaml", "MIM ✗")):
        cfg = build_config(read_raw(config_path(name)))
        assert cfg["student"]["pos_embed"] == {"absolute": False, "rope": True}
        assert cfg["paper"] == {"table": 9, "row": row} and cfg["optim"]["epochs"] == 90


@pytest.mark.parametrize("objective", ["uta", "mim"])
@pytest.mark.parametrize("rope", [True, False])
def test_the_export_loads_as_a_uta_backbone_that_computes_the_students_function(tmp_path, objective, rope):
    torch.manual_seed(0)
    student = Student("world", OBJECTIVES.get(objective), pos_embed={"absolute": False, "rope": rope}).eval()
    assert student.visual.pos_embed is None and (student.visual.rope is not None) == rope
    x = torch.rand(2, 3, 48, 48)
    if objective == "uta":  # the kept-token path runs without the tables it drops
        out = student(x, keep=torch.tensor([[0, 3, 7], [1, 2, 35]]))
        assert out.shape == (2, 4, 64)
    else:
        mask = torch.zeros(2, 36, dtype=torch.bool)
        mask[:, :9] = True
        assert student(x, mask=mask).shape == (2, 37, 64)
    state = timm_to_release(student.visual, None, student.config["vision"]["pt_seq_len"])
    assert torch.equal(state["visual.pos_embed"], torch.zeros(1, 37, 64))  # added back at zero
    assert ("visual.rope.freqs_cos" in state) == rope
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "final.safetensors"))
    model = "world"
    if not rope:
        model = str(tmp_path / "model.json")
        (tmp_path / "model.json").write_text(json.dumps(student.config))
    backbone = build_backbone({"spec": f"uta:{model}", "checkpoint": str(tmp_path / "final.safetensors"),
                               "text": None}).eval()
    assert isinstance(backbone.visual.pos_embed, torch.nn.Parameter)  # fine-tuning learns it from zero
    with torch.no_grad():
        expected = student.visual.head(student.visual.norm(student.visual.forward_features(x)))[:, 0]
        assert torch.allclose(backbone.visual(x), expected, atol=1e-5)


def test_pretraining_without_rope_exports_the_model_config_it_trained(world, tmp_path):
    torch.set_num_threads(2)
    raw = {"objective": "uta", "student": {"model": "world", "pos_embed": {"absolute": False, "rope": False}},
           "teacher": TEACHER, "data": {"type": "imagefolder", "root": str(world / "imagenet" / "train")},
           "mask": {"type": "block-r", "ratio": 0.5, "min_block": 4},
           "optim": {"batch_size": 4, "steps": 2, "warmup_steps": 1, "lr": 1e-3}, "workers": 0}
    meta = pretrain(build_config(raw), tmp_path, progress=False, log=lambda _: None)
    assert meta["backbone"]["spec"] == f"uta:{tmp_path / 'model.json'}"
    assert json.loads((tmp_path / "model.json").read_text())["vision"]["rope"] is False
    backbone = build_backbone(meta["backbone"])
    assert backbone.visual.rope is None and not backbone.visual.pos_embed.detach().any()


def _records(mim_gap: float, uta_gap: float, paper_rows: bool = False) -> pd.DataFrame:
    rows = []
    for objective, gap in (("mim", mim_gap), ("uta", uta_gap)):
        common = {"objective": objective, "teacher": "/teacher.safetensors"}
        ablated = {**common, "pos_embed.absolute": False, "pos_embed.rope": True}
        if paper_rows:
            ablated.update({"paper.table": 9, "paper.row": f"{objective.upper()} ✗"})
        for name, info, shift in ((f"{objective}-student", common, 0.0), (f"{objective}-no-pe", ablated, gap)):
            rows += [_record(name, "finetune-classification", "imagenet", {"top1": 80.0 + shift}, **info),
                     _record(name, "detection", "coco", {"box_ap": 30.0 + shift, "mask_ap": 25.0 + shift}, **info),
                     _record(name, "segmentation", "ade20k", {"mIoU": 40.0 + shift}, **info)]
            if objective == "uta":
                rows.append(_record(name, "zeroshot-classification", "imagenet", {"top1": 70.0 + shift}, **info))
    return pd.DataFrame(rows)


def _rows(text):
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("|")]


def test_table9_pairs_each_student_without_the_embedding_with_its_twin_and_the_published_rows():
    rows = _rows(render(_records(-3.0, -1.0, paper_rows=True), tables=[9], with_paper=False))
    ours = {(r[0], r[1]): r[2:] for r in rows if r[0]}
    assert ours["MIM", "✗"] == ["mim-no-pe", "—", "77.0", "27.0", "22.0", "37.0"]
    assert ours["MIM", "✓"] == ["mim-student", "—", "80.0", "30.0", "25.0", "40.0"]
    assert ours["MIM", "gap (✗ − ✓)"] == ["", "—", "-3.0", "-3.0", "-3.0", "-3.0"]
    assert ours["UTA", "gap (✗ − ✓)"] == ["", "-1.0", "-1.0", "-1.0", "-1.0", "-1.0"]
    at = rows.index(["UTA", "✗", "uta-no-pe", "69.0", "79.0", "29.0", "24.0", "39.0"])
    assert rows[at + 1] == ["", "↳ paper", "UTA ✗", "73.8", "86.7", "53.8", "45.7", "53.6"]
    assert rows[at + 2] == ["", "↳ Δ (ours − paper)", "", "-4.8", "-7.7", "-24.8", "-21.7", "-14.6"]
    assert rows[-1] == ["", "↳ paper gap", "", "-1.2", "-0.6", "-1.9", "-1.7", "-1.8"]  # UTA's, as published
    # Table 6 and the claims' students leave the ablated ones out
    six = render(_records(-3.0, -1.0), tables=[6], with_paper=False)
    assert "| uta-student " in six and "no-pe" not in six
