"""The ablation configs of the paper's Tables 6-8 as data: each names its published row, runs 90 epochs on the
paper's recipe, and sets what its row varies; `base:` inheritance and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from utabench.core.errors import UtabenchError
from utabench.pretrain.config import load_pretrain_config
from utabench.training.fingerprint import run_fingerprint

PRETRAIN = Path(__file__).resolve().parents[1] / "utabench" / "configs" / "pretrain"
ROWS = {  # file: (table, row, objective, mask type, mask ratio)
    "table6-uta": (6, "UTA", "uta", "block-r", 0.4), "table6-mim": (6, "MIM", "mim", "block", 0.4),
    "table6-fd": (6, "FD", "fd", None, None), "table6-uta-mim": (6, "UTA+MIM", "uta+mim", "block-r", 0.4),
    "table7-clip-l14": (7, "CLIP-L/14", "uta", "block-r", 0.4),
    "table7-eva01-clip-g14": (7, "EVA-01-CLIP-g/14", "uta", "block-r", 0.4),
    "table8-ratio-0.0": (8, "ratio 0.0", "fd", None, None), "table8-ratio-0.4": (8, "ratio 0.4", "uta", "block-r", 0.4),
    "table8-ratio-0.5": (8, "ratio 0.5", "uta", "block-r", 0.5), "table8-ratio-0.7": (8, "ratio 0.7", "uta", "block-r", 0.7),
    "table8-block": (8, "Block", "uta", "block", 0.5), "table8-random": (8, "Random", "uta", "random", 0.5),
    "table8-block-r": (8, "Block-R", "uta", "block-r", 0.5),
}


@pytest.fixture(autouse=True)
def _paths(monkeypatch):
    monkeypatch.setenv("UTABENCH_CKPT", "/ckpt")
    monkeypatch.setenv("UTABENCH_DATA", "/data")


def test_every_ablation_row_has_its_config():
    assert sorted(p.stem for p in PRETRAIN.glob("table[678]-*.yaml")) == sorted(ROWS)  # (Table 10: test_text_uta)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_ablation_config(name):
    table, row, objective, mask, ratio = ROWS[name]
    cfg = load_pretrain_config(str(PRETRAIN / f"{name}.yaml"))
    assert cfg["paper"] == {"table": table, "row": row} and cfg["objective"] == objective
    assert cfg["optim"]["epochs"] == 90 and cfg["optim"]["batch_size"] == 4096 and cfg["optim"]["lr"] == 1.5e-3
    if mask:
        assert (cfg["mask"]["type"], cfg["mask"]["ratio"]) == (mask, ratio)
    teacher = cfg["teacher"]["spec"]
    assert teacher == ("clip:ViT-L-14-quickgelu" if name == "table7-clip-l14" else "clip:EVA01-g-14-plus")


def test_rows_that_are_one_run_share_one_fingerprint():
    """The paper prints some runs twice (Table 6 UTA = Table 7 EVA-01-CLIP = Table 8 ratio 0.4; FD = ratio 0.0):
    they are one training, cached once."""
    def fp(name):
        return run_fingerprint(load_pretrain_config(str(PRETRAIN / f"{name}.yaml")))
    assert fp("table6-uta") == fp("table7-eva01-clip-g14") == fp("table8-ratio-0.4")
    assert fp("table6-fd") == fp("table8-ratio-0.0") and fp("table8-ratio-0.5") == fp("table8-block-r")
    assert len({fp(name) for name in ROWS}) == 9


def test_base_chain_errors(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"base": "b.yaml"}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"base": "a.yaml"}))
    with pytest.raises(UtabenchError, match="`base:` chain loops back"):
        load_pretrain_config(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"base": "uta-b14.yaml", "paper": {"table": 6, "row": "MAE"}}))
    with pytest.raises(UtabenchError, match="Table 6 has no row 'MAE'; its rows: FD, MIM, UTA\\+MIM, UTA"):
        load_pretrain_config(str(tmp_path / "c.yaml"))


def test_run_fingerprints_keep_their_values():
    """Cached pretraining runs are keyed by the run fingerprint: its value for a configuration never changes (these
    are the values from before the fingerprint moved to training/fingerprint.py)."""
    pinned = {"table6-uta": "89b281c7d1aae2ee", "table6-fd": "c8ad4bb5fa0c77e6", "table6-mim": "2807b7248d631ecd",
              "table7-clip-l14": "b5f4cad119ddb712", "table8-random": "d3a2659fef83b56b"}
    assert {name: run_fingerprint(load_pretrain_config(str(PRETRAIN / f"{name}.yaml"))) for name in pinned} == pinned
