"""`utabench claims`: every claim PASS on records with the figures of a measured embedded run, `not run` without its
records, and a doctored record (a MIM student above UTA) makes it exit 1 with that claim named."""

from __future__ import annotations

import json

from utabench.harness.claims import FAIL, NOT_RUN, PASS, check
from utabench.harness.cli import main
from utabench.harness.record import Record
from utabench.harness.store import load_results, record_path, write_record

# world seed 0 on the AVX2-only VM (README): backbone -> objective, and the figures of each task
OBJECTIVES = {"teacher": "clip", "uta": "uta", "mim": "mim", "fd": "fd", "uta-mim": "uta+mim", "uta-cft": "clip-ft",
              "uta-val": "uta"}
ZERO_SHOT = {"teacher": 89.5, "uta": 84.25, "mim": 16.0, "fd": 86.25, "uta-mim": 79.25, "uta-cft": 91.5,
             "random": 10.0, "uta-val": 85.75}
RECALL = {"teacher": 24.1, "uta": 20.8, "uta-cft": 23.1, "random": 3.9}
FINETUNED = {"uta": 63.0, "mim": 40.25, "random": 11.0}
LLAVA = {"teacher": 84.6, "uta": 86.6, "uta-cft": 89.9, "random": 63.7}
DENSE = {("detection", "coco"): ({"box_ap": 32.2, "mask_ap": 30.1}, {"box_ap": 13.3, "mask_ap": 13.9}),
         ("detection", "lvis"): ({"box_ap": 36.5, "mask_ap": 36.5}, {"box_ap": 20.0, "mask_ap": 19.1}),
         ("segmentation", "ade20k"): ({"mIoU": 15.03}, {"mIoU": 10.24})}
PROBE = {"uta": 86.25, "mim": 41.25, "random": 11.75}  # linear-probe top-1, world seed 0 (2-core AVX-512 EPYC)
FLOPS = {"uta": 0.64e9, "fd": 1.0e9}
# configs/world-validation.yaml (world seed 0, 2-core VM): the UTA student with 300 of its 3000 images held out
VALIDATION = {"holdout": 300, "mask": "random 0.5", "steps": [0, *range(100, 2001, 100), 2016],
              "loss": [-0.0448, -0.8183, -0.8459, -0.8725, -0.9001, -0.8966, -0.9069, -0.9157, -0.9177, -0.9217,
                       -0.923, -0.9302, -0.9342, -0.9371, -0.9378, -0.9421, -0.9426, -0.9433, -0.9448, -0.9454, -0.9457,
                       -0.9457],
              "train_loss": [None, -0.7232, -0.8468, -0.8762, -0.8929, -0.8985, -0.9091, -0.9154, -0.9189, -0.9246,
                             -0.9261, -0.9304, -0.9347, -0.9372, -0.9415, -0.9436, -0.9463, -0.9463, -0.9492, -0.9499,
                             -0.9491, -0.9483]}


def _write(results, backbone, task, kind, metrics, images=400):
    objective = OBJECTIVES.get(backbone.removesuffix("-dense"))
    pretrain = {"objective": objective, "flops": {"student_per_image": FLOPS.get(backbone)}} if objective else None
    if backbone == "uta-val":
        pretrain["validation"] = VALIDATION
    write_record(record_path(results, backbone, task, kind), Record.from_dict({
        "status": "complete", "backbone": backbone, "task": task, "dataset": kind, "dataset_type": kind,
        "metrics": metrics, "paper": None, "pretrain": pretrain,
        "provenance": {"random_init_seed": None if objective else 0, "dataset": {"num_images": images}}}))


def _results(tmp_path, **changes):
    results = tmp_path / "results"
    for backbone, top1 in {**ZERO_SHOT, **changes}.items():
        _write(results, backbone, "zeroshot-classification", "imagenet", {"top1": top1})
    for backbone, recall in RECALL.items():
        for kind, images, r1 in (("flickr30k", 100, 8.6), ("coco", 150, 4.8)):
            metrics = {f"{side}_r{k}": recall for side in ("text", "image") for k in (1, 5, 10)}
            _write(results, backbone, "retrieval", kind, {**metrics, "image_r1": r1 if backbone == "teacher" else
                                                          recall}, images)
    for backbone, top1 in FINETUNED.items():
        _write(results, backbone, "finetune-classification", "imagenet", {"top1": top1})
    for backbone, overall in LLAVA.items():
        _write(results, backbone, "llava-bench", "llava-bench", {"overall": overall})
    for backbone, top1 in PROBE.items():
        _write(results, backbone, "linear-probe", "wds", {"top1": top1})
    for (task, kind), (uta, random) in DENSE.items():
        _write(results, "uta", task, kind, uta)
        _write(results, "random-dense", task, kind, random)
    return results


def test_every_claim_passes_on_a_measured_run(tmp_path, capsys):
    results = _results(tmp_path)
    verdicts = check(load_results(results))
    assert {v.status for v in verdicts} == {PASS}, [v.line() for v in verdicts if v.status != PASS]
    assert len(verdicts) == 24
    assert main(["claims", "--results", str(results)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "claims: 24 PASS, 0 FAIL, 0 not run"
    line = next(v for v in out if "UTA >= 90% of teacher" in v)
    assert line == ("PASS     UTA >= 90% of teacher: uta zero-shot top-1 84.25 >= 0.9 x teacher's 89.50 = 80.55 "
                    "(margin +3.70)")


def test_a_mim_student_above_uta_fails_its_claim_and_exits_1(tmp_path, capsys):
    results = _results(tmp_path)
    record = record_path(results, "mim", "zeroshot-classification", "imagenet")
    doctored = json.loads(record.read_text())
    doctored["metrics"]["top1"] = 85.0
    record.write_text(json.dumps(doctored))
    assert main(["claims", "--results", str(results)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "FAIL     MIM far under UTA: uta zero-shot top-1 84.25 > mim's 85.00 + 15 = 100.00 (margin -15.75)" in out
    assert out[-1] == ("claims: 22 PASS, 2 FAIL, 0 not run (failed: MIM far under UTA; UTA+MIM between MIM and "
                       "teacher)")


def test_claims_without_their_records_are_not_run(tmp_path, capsys):
    results = tmp_path / "results"
    _write(results, "teacher", "zeroshot-classification", "imagenet", {"top1": 89.5})
    verdicts = {v.claim: v.status for v in check(load_results(results))}
    assert verdicts["teacher zero-shot"] == PASS and verdicts["Block-R masking uniform"] == PASS
    assert verdicts["UTA >= 90% of teacher"] == NOT_RUN and verdicts["coco box_ap: UTA over random init"] == NOT_RUN
    assert FAIL not in verdicts.values()
    assert main(["claims", "--results", str(tmp_path / "absent")]) == 2
    assert "results directory" in capsys.readouterr().err
