"""A shorter embedded reproduction: teacher, students and the contrastively fine-tuned student trained through
`pretrain:` backbone entries of a run config, evaluated zero-shot, cached for the rerun, and rendered as Table 6."""

import json

import yaml

from utabench.core.configfile import bundled_config
from utabench.harness.cli import main

COUNTS = {"val": 2, "v2": 1, "sketch": 1, "a": 1, "r": 1, "objectnet": 1, "flickr30k": 6, "coco": 6, "train": 7,
          "pairs": 130, "det_train": 0, "seg_train": 0, "llava_pretrain": 0, "llava_instruct": 0}
ZERO_SHOT = ("zeroshot-classification", "retrieval")


def test_short_embedded_reproduction(tmp_path, capsys):
    embedded = yaml.safe_load(bundled_config("embedded.yaml").read_text())
    embedded["world"] = {"seed": 0, "counts": COUNTS}
    embedded["backbones"] = [b for b in embedded["backbones"] if "pretrain" in b]
    embedded["tasks"] = {task: sets for task, sets in embedded["tasks"].items() if task in ZERO_SHOT}
    config = tmp_path / "short.yaml"
    config.write_text(yaml.safe_dump(embedded))
    args = ["run-all", "--config", str(config), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(args + ["--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.count("] pretraining ") == 6  # the teacher once (shared by the students), four students, UTA†
    records = [json.loads(p.read_text()) for p in (tmp_path / "r").rglob("*.json")]
    assert len(records) == 6 * 10 and {r["status"] for r in records} == {"complete"}  # 7 + 3 sets, wds included
    students = {r["backbone"]: r for r in records if r["dataset"] == "imagenet-1k"}
    assert {b: r["pretrain"]["objective"] for b, r in students.items()} == {
        "world-clip-teacher": "clip", "uta-student": "uta", "mim-student": "mim", "fd-student": "fd",
        "uta-mim-student": "uta+mim", "uta-student-cft": "clip-ft"}
    assert students["uta-student-cft"]["pretrain"]["init"] == students["uta-student"]["provenance"]["backbone"][
        "checkpoint"]
    teacher_ckpt = students["world-clip-teacher"]["provenance"]["backbone"]["checkpoint"]
    assert students["uta-student"]["pretrain"]["teacher"] == teacher_ckpt
    table6 = out[out.index("### Table 6"):]
    for label in ("| FD", "| MIM", "| UTA+MIM", "| UTA ", "| UTA†", "CLIP (teacher)"):
        assert label in table6
    uta_row = next(line for line in table6.splitlines() if "uta-student" in line)
    relative = float(uta_row.split("|")[5].strip().rstrip("×"))
    assert 0.55 < relative < 0.72  # 40% of the patches dropped (the world students' mask ratio)

    assert main(args + ["--results", str(tmp_path / "r2")]) == 0  # cached: nothing is trained again
    assert "] pretraining " not in capsys.readouterr().out
    assert len(list((tmp_path / "r2").rglob("*.json"))) == 6 * 10
