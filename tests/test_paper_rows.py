"""Which published row a backbone is set against, table by table: pairs tell UTA from UTA†, the input size tells
@224 from @336, and a missing or ambiguous match is said in the table instead of taking the first row."""

from __future__ import annotations

import pandas as pd
import pytest

from utabench.core.tablespec import TABLES
from utabench.harness.paper import match_row
from utabench.harness.store import load_results, record_path, write_record
from utabench.harness.tables import paper_table, render, table_rows

UTA_B16_2B = {"method": "UTA", "model": "B/16@224", "pairs": "2B"}  # the released UTA-B/16 (contrastively tuned)
UTA_B14_0B = {"method": "UTA", "model": "B/14@224", "pairs": "0B"}  # the image-only pretrained UTA-B
UTA_L14_336 = {"method": "UTA", "model": "L/14@336", "pairs": "4B"}


def _match(table, paper):
    return match_row(paper_table(TABLES.get(str(table))), paper, table)


@pytest.mark.parametrize("paper,column,value", [
    (UTA_B16_2B, "IN-1K", 77.0), (UTA_B14_0B, "IN-1K", 76.0), (UTA_L14_336, "IN-1K", 81.4),
    ({"method": "UTA", "model": "L/14@224", "pairs": "4B"}, "IN-1K", 80.8),
    ({"method": "EVA-02-CLIP", "model": "L/14@336", "pairs": "6B"}, "ObjectNet", 78.4),
])
def test_table1_rows(paper, column, value):
    match = _match(1, paper)
    assert match.row is not None and match.row[column] == value and not match.unstated


def test_table1_missing_and_ambiguous():
    assert _match(1, {"method": "UTA", "model": "B/16@336", "pairs": "2B"}).label.startswith("no row of Table 1")
    ambiguous = _match(1, {"method": "UTA", "model": "L/14"})
    assert ambiguous.row is None and ambiguous.label.startswith("ambiguous in Table 1")
    assert "L/14@336 4B" in ambiguous.label


def test_table2_rows_are_the_224_models():
    assert _match(2, UTA_B16_2B).row["Flickr30k text R@1"] == 91.3
    assert _match(2, UTA_B14_0B).row["Flickr30k text R@1"] == 88.4
    assert _match(2, {"method": "UTA", "model": "L/14@224", "pairs": "4B"}).row["COCO text R@1"] == 66.5
    missing = _match(2, UTA_L14_336)  # Table 2 has no 336 row: the 224 one must not be taken
    assert missing.row is None and missing.label == "no row of Table 2 for UTA L/14@336 4B"
    assert _match(2, {"method": "UTA", "model": "g/14@336", "pairs": "3B"}).row is None


def test_table3_rows_say_what_the_table_leaves_open():
    match = _match(3, UTA_B16_2B)
    assert match.row["Overall"] == 78.8 and match.unstated == ["input", "pairs"]
    assert "does not state its input, pairs" in match.label
    assert _match(3, {"method": "CLIP", "model": "B/16@224", "pairs": "13B"}).row["Detail"] == 69.9
    assert _match(3, {"method": "EVA-02-CLIP", "model": "B/16@224", "pairs": "8B"}).row is None


def test_table4_tells_uta_from_uta_dagger():
    dagger = _match(4, UTA_B16_2B)
    assert dagger.row["method"] == "UTA†" and (dagger.row["IN-1K ZS"], dagger.row["ADE20K mIoU"]) == (77.0, 55.1)
    plain = _match(4, UTA_B14_0B)
    assert plain.row["method"] == "UTA" and (plain.row["IN-1K ZS"], plain.row["ADE20K mIoU"]) == (76.0, 55.6)
    assert _match(4, {"method": "UTA", "model": "B"}).label.startswith("ambiguous in Table 4")
    assert _match(4, UTA_L14_336).row is None


def test_table5_tells_uta_from_uta_dagger():
    row = _match(5, UTA_B16_2B).row
    assert row["method"] == "UTA†"
    assert [row[c] for c in ("COCO APbox", "COCO APmask", "LVIS APbox", "LVIS APmask")] == [55.6, 47.5, 47.9, 42.2]
    assert _match(5, UTA_B14_0B).row["COCO APbox"] == 55.8


def _record(results, backbone, task, dataset_type, metrics, paper, details=None):
    write_record(record_path(results, backbone, task, dataset_type), {
        "status": "complete", "backbone": backbone, "task": task, "dataset": dataset_type,
        "dataset_type": dataset_type, "metrics": metrics, "paper": paper,
        "provenance": {"task_details": details or {}}})


def test_rendered_tables_use_the_right_rows(tmp_path):
    results = tmp_path / "r"
    _record(results, "uta-b16", "zeroshot-classification", "imagenet", {"top1": 77.5}, UTA_B16_2B)
    _record(results, "uta-b16", "segmentation", "ade20k", {"mIoU": 55.0}, UTA_B16_2B)
    _record(results, "uta-l14-336", "retrieval", "flickr30k", {"text_r1": 92.0}, UTA_L14_336)
    frame = load_results(results)
    rows = pd.DataFrame(table_rows(frame, TABLES.get("4")))
    zs = rows[(rows.backbone == "uta-b16") & (rows.column == "IN-1K ZS")].iloc[0]
    assert zs.paper == 77.0 and zs.delta == pytest.approx(0.5) and zs.paper_row.startswith("UTA† B")
    retrieval = pd.DataFrame(table_rows(frame, TABLES.get("2")))
    assert retrieval.paper.isna().all() and retrieval.delta.isna().all()
    text = render(frame, tables=(2, 4))
    assert "↳ paper: no row of Table 2 for UTA L/14@336 4B" in text and "↳ paper: UTA† B" in text


@pytest.mark.parametrize("variant,judge_ok,has_delta", [("coco", True, True), ("in-the-wild", True, False),
                                                        ("coco", False, False)])
def test_table3_compares_only_gpt4_judged_coco_runs(tmp_path, variant, judge_ok, has_delta):
    results = tmp_path / "r"
    details = {"variant": variant, "judge": "openai:gpt-4-0314" if judge_ok else "offline-word-f1",
               "judge_comparable_to_paper": judge_ok}
    _record(results, "uta-b16", "llava-bench", f"llava-bench{'-coco' if variant == 'coco' else ''}",
            {"conversation": 80.0, "detail": 66.0, "complex": 89.0, "overall": 79.0}, UTA_B16_2B, details)
    rows = pd.DataFrame(table_rows(load_results(results), TABLES.get("3")))
    overall = rows[rows.column == "Overall"].iloc[0]
    assert overall.paper == 78.8
    assert (overall.delta == pytest.approx(0.2)) if has_delta else pd.isna(overall.delta)
    assert rows[rows.column == "Variant"].iloc[0].ours == variant
    if not has_delta:
        assert overall.note and ("LLaVA-Bench (in-the-wild)" in overall.note or "not GPT-4" in overall.note)
