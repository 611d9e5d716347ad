"""Which published row a backbone is set against, table by table: pairs tell UTA from UTA†, the input size tells
@224 from @336, and a missing or ambiguous match is said in the table instead of taking the first row."""

from __future__ import annotations

import pandas as pd
import pytest

from utabench.core.tablespec import TABLES
from utabench.harness.paper import match_row
from utabench.harness.record import Record
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


def _cells(line):
    return [cell.strip() for cell in line.split("|")[1:-1]]


def _record(results, backbone, task, dataset_type, metrics, paper, details=None):
    write_record(record_path(results, backbone, task, dataset_type), Record.from_dict({
        "status": "complete", "backbone": backbone, "task": task, "dataset": dataset_type,
        "dataset_type": dataset_type, "metrics": metrics, "paper": paper,
        "provenance": {"task_details": details or {}}}))


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


def test_table2_keys_open_clip_l_by_its_model_and_prints_its_34b(tmp_path):
    """The paper prints Open-CLIP L/14 with 34B pairs in Table 2 and 32B in Table 1 (laion2B-s32B): the Table 2 row
    is keyed 32B, the model it describes, and still printed 34B."""
    open_clip_l = {"method": "Open-CLIP", "model": "L/14@224", "pairs": "32B"}
    assert _match(1, open_clip_l).row["IN-1K"] == 75.5
    match = _match(2, open_clip_l)
    assert match.row["COCO image R@10"] == 79.4 and match.label == "Open-CLIP L 34B (as printed; the 32B model)"
    assert _match(2, {**open_clip_l, "pairs": "34B"}).row is None
    results = tmp_path / "r"
    _record(results, "openclip-l14", "retrieval", "flickr30k", {"text_r1": 88.0}, open_clip_l)
    rows = pd.DataFrame(table_rows(load_results(results), TABLES.get("2")))
    r1 = rows[rows.column == "Flickr30k text R@1"].iloc[0]
    assert r1.paper == 88.7 and r1.delta == pytest.approx(-0.7)
    text = render(load_results(results), tables=(2,))
    assert "| ↳ paper: Open-CLIP L 34B (as printed; the 32B model) | 88.7 " in text
    printed = [_cells(line)[:4] for line in text.splitlines() if line.startswith("| Open-CLIP ")]  # the published
    assert printed == [["Open-CLIP", "B", "34B", "86.3"], ["Open-CLIP", "L", "34B", "88.7"],
                       ["Open-CLIP", "g", "34B", "91.4"]]


def test_table4_keeps_its_random_choice_mark(tmp_path):
    """Table 4 prints EVA-02's zero-shot as "0.1‡" (random choice without contrastive fine-tuning): read as 0.1 for
    the difference, shown with its mark and the caption's note."""
    eva02_b = {"method": "EVA-02", "model": "B/14@224"}
    row = _match(4, eva02_b).row
    assert row["IN-1K ZS"] == 0.1 and f"{row['IN-1K ZS']:.1f}" == "0.1‡" and row["IN-1K FT"] == 87.4
    assert paper_table(TABLES.get("4"))["IN-1K ZS"].max() == 79.3  # the column stays numeric
    results = tmp_path / "r"
    _record(results, "eva02-b14", "zeroshot-classification", "imagenet", {"top1": 0.2}, eva02_b)
    _record(results, "eva02-b14", "segmentation", "ade20k", {"mIoU": 55.0}, eva02_b)
    frame = load_results(results)
    rows = pd.DataFrame(table_rows(frame, TABLES.get("4")))
    zs = rows[rows.column == "IN-1K ZS"].iloc[0]
    assert zs.paper == 0.1 and zs.delta == pytest.approx(0.1)
    note = "‡ indicates the results equal to random choice without contrastive fine-tuning."
    for with_paper in (True, False):  # the paper line shows the mark, so the note comes with it
        text = render(frame, tables=(4,), with_paper=with_paper)
        paper_line = next(line for line in text.splitlines() if line.startswith("| ↳ paper: EVA-02 B"))
        assert _cells(paper_line)[1:] == ["0.1‡", "87.4", "55.3"] and note in text
    published = [_cells(line) for line in render(frame, tables=(4,)).splitlines() if line.startswith("| EVA-02 ")]
    assert [cells[4] for cells in published] == ["0.1‡", "0.1‡"]
    assert "0.1‡" not in render(frame, tables=(4,), fmt="csv")  # the long CSV gives the number
