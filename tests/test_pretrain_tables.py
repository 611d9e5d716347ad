"""Tables 6-8 from records: Table 6's downstream columns for each student, and Tables 7 / 8 rows named by their
paper rows (from the pretraining config's `paper:` entry), with the published row and the difference beneath."""

from __future__ import annotations

import pandas as pd

from utabench.harness.plugins import load_all
from utabench.harness.tables import render

load_all()  # the tables that tasks and pretraining register

def _record(backbone, task, dataset_type, metrics, **pretrain):
    row = {"backbone": backbone, "task": task, "dataset_type": dataset_type, "status": "complete",
           "provenance.backbone.checkpoint": f"/{backbone}.safetensors"}
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    row.update({f"pretrain.{k}": v for k, v in pretrain.items()})
    return row


def _records():
    teacher = {"objective": "clip"}
    ratio05 = {"objective": "uta", "teacher": "/teacher.safetensors", "paper.table": 8, "paper.row": "ratio 0.5",
               "flops.student_per_image": 5.0e9}
    unmasked = {"objective": "fd", "teacher": "/teacher.safetensors", "paper.table": 8, "paper.row": "ratio 0.0",
                "flops.student_per_image": 10.0e9}
    clip_l = {"objective": "uta", "teacher": "/teacher.safetensors", "paper.table": 7, "paper.row": "CLIP-L/14"}
    student = {"objective": "uta", "teacher": "/teacher.safetensors", "flops.student_per_image": 6.0e9}
    tuned = {"objective": "clip-ft", "init": "/student.safetensors"}
    return pd.DataFrame([
        _record("teacher", "zeroshot-classification", "imagenet", {"top1": 75.0}, **teacher),
        _record("r05", "zeroshot-classification", "imagenet", {"top1": 70.0}, **ratio05),
        _record("r05", "finetune-classification", "imagenet", {"top1": 80.0}, **ratio05),
        _record("r05", "segmentation", "ade20k", {"mIoU": 50.0}, **ratio05),
        _record("r00", "zeroshot-classification", "imagenet", {"top1": 72.0}, **unmasked),
        _record("l14", "zeroshot-classification", "imagenet", {"top1": 66.0}, **clip_l),
        _record("l14", "detection", "coco", {"box_ap": 50.0, "mask_ap": 44.0}, **clip_l),
        _record("student", "zeroshot-classification", "imagenet", {"top1": 60.0}, **student),
        _record("student", "finetune-classification", "imagenet", {"top1": 85.0}, **student),
        _record("student", "detection", "lvis", {"box_ap": 30.0, "mask_ap": 25.0}, **student),
        _record("tuned", "zeroshot-classification", "imagenet", {"top1": 63.0}, **tuned),
    ])


def _line(text, start):
    return next(line for line in text.splitlines() if line.startswith(start))


def _cells(line):
    return [cell.strip() for cell in line.split("|")[1:-1]]


def test_table8_rows_are_named_by_their_paper_rows_with_the_published_row_and_delta():
    out = render(_records(), tables=[8], with_paper=False)
    assert _cells(_line(out, "| ratio 0.5 ")) == ["ratio 0.5", "r05", "0.50×", "70.0", "80.0", "—", "—", "50.0"]
    lines = out.splitlines()
    paper = _cells(lines[lines.index(_line(out, "| ratio 0.5 ")) + 1])
    assert paper == ["↳ paper", "", "0.50×", "74.8", "87.3", "55.3", "46.8", "55.0"]
    assert _cells(lines[lines.index(_line(out, "| ratio 0.5 ")) + 2]) == [
        "↳ Δ (ours − paper)", "", "—", "-4.8", "-7.3", "—", "—", "-5.0"]
    assert "| ratio 0.0 " in out and "| l14 " not in out and "| student " not in out


def test_table7_gives_the_teachers_zero_shot_beside_the_students():
    out = render(_records(), tables=[7], with_paper=False)
    assert _cells(_line(out, "| CLIP-L/14 ")) == ["CLIP-L/14", "l14", "75.0", "66.0", "—", "50.0", "44.0", "—"]
    assert _cells(_line(out, "| ↳ Δ"))[2:] == ["+1.0", "-1.7", "—", "-5.6", "-3.3", "—"]


def test_table6_has_the_downstream_columns_and_leaves_out_the_ablation_rows():
    out = render(_records(), tables=[6], with_paper=False)
    header = _cells(_line(out, "| backbone"))
    student = dict(zip(header, _cells(_line(out, "| student "))))
    assert student["objective"] == "UTA" and student["from"] == "teacher" and student["% of teacher"] == "80.0"
    assert (student["FT"], student["LVIS APbox"], student["LVIS APmask"], student["COCO APbox"]) == (
        "85.0", "30.0", "25.0", "—")
    tuned = dict(zip(header, _cells(_line(out, "| tuned "))))
    assert tuned["objective"] == "UTA†" and tuned["from"] == "student" and tuned["% of teacher"] == "84.0"
    assert "| r05 " not in out and "| l14 " not in out


def test_table6_student_of_a_table6_config_has_the_published_row_and_delta():
    table6_uta = {"objective": "uta", "teacher": "/teacher.safetensors", "paper.table": 6, "paper.row": "UTA",
                  "flops.student_per_image": 6.0e9}
    fd = {"objective": "fd", "teacher": "/teacher.safetensors", "flops.student_per_image": 10.0e9}
    records = pd.concat([_records(), pd.DataFrame([
        _record("t6-uta", "zeroshot-classification", "imagenet", {"top1": 74.0}, **table6_uta),
        _record("t6-uta", "detection", "coco", {"box_ap": 55.0, "mask_ap": 47.0}, **table6_uta),
        _record("fd-student", "zeroshot-classification", "imagenet", {"top1": 73.0}, **fd),
    ])], ignore_index=True)
    out = render(records, tables=[6], with_paper=False)
    header = _cells(_line(out, "| backbone"))
    lines = out.splitlines()
    at = lines.index(_line(out, "| t6-uta "))
    ours, paper, delta = (dict(zip(header, _cells(lines[at + i]))) for i in range(3))
    assert (ours["objective"], ours["FLOPs (× FD)"], ours["ZS IN-1K"], ours["COCO APbox"]) == (
        "UTA", "0.60×", "74.0", "55.0")
    assert (paper["backbone"], paper["objective"], paper["FLOPs (× FD)"], paper["ZS IN-1K"], paper["FT"],
            paper["COCO APbox"], paper["LVIS APmask"], paper["ADE20K mIoU"], paper["ZS avg"]) == (
        "↳ paper", "UTA", "0.60×", "75.0", "87.3", "55.7", "43.1", "55.4", "—")
    assert (delta["backbone"], delta["FLOPs (× FD)"], delta["ZS IN-1K"], delta["COCO APbox"], delta["COCO APmask"],
            delta["FT"]) == ("↳ Δ (ours − paper)", "—", "-1.0", "-0.7", "-0.4", "—")
    assert "↳ paper" not in lines[lines.index(_line(out, "| student ")) + 1]  # its config names no paper row
