"""`utabench tables --compare A B`: B − A on every (task, dataset) both backbones have, each metric with its paired
bootstrap interval (the same resamples of the same samples for both: `utabench/tasks/bootstrap.py`) and whether the
interval excludes 0. Records on different samples (dataset fingerprints or sample ids that differ) are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import pandas as pd

from utabench.core.errors import UtabenchError
from utabench.harness.record import Record
from utabench.harness.store import read_records, record_path
from utabench.tasks.bootstrap import LEVEL, RESAMPLES, SEED, load_samples, paired_delta, samples_file

COLUMNS = ["task", "dataset", "metric", "a", "b", "delta", "low", "high", "excludes_zero"]


def _samples(results: Path, record: Record):
    named = record.provenance.get("samples") or {}
    path = samples_file(record_path(results, record.backbone, record.task, record.dataset))
    return load_samples(path, named.get("sha256"))


def compare_rows(results: str | Path, a: str, b: str) -> Tuple[List[dict], List[str]]:
    """One row per (task, dataset, metric) both have (see COLUMNS), and notes on the pairs left out."""
    results = Path(results)
    records = [r for r in read_records(results) if r.status == "complete"]
    by: Dict[str, Dict[Tuple[str, str], Record]] = {}
    for record in records:
        by.setdefault(record.backbone, {})[(record.task, record.dataset)] = record
    for name in (a, b):
        if name not in by:
            known = ", ".join(sorted(by)) or "none"
            raise UtabenchError(f"--compare: no complete records of backbone {name!r} in {results} (backbones: "
                                f"{known})")
    rows, notes = [], []
    for key in sorted(set(by[a]) & set(by[b])):
        first, second = by[a][key], by[b][key]
        if not (first.provenance.get("samples") and second.provenance.get("samples")):
            if first.ci or second.ci or first.task in ("zeroshot-classification", "retrieval"):
                notes.append(f"{key[0]} / {key[1]}: no per-sample outcomes kept for "
                             f"{' and '.join(r.backbone for r in (first, second) if not r.provenance.get('samples'))} "
                             "(recorded before they were; run it again with --force)")
            continue
        prints = [(r.provenance.get("dataset") or {}).get("fingerprint") for r in (first, second)]
        if prints[0] != prints[1]:
            raise UtabenchError(f"--compare: {key[0]} / {key[1]} of {a} and {b} ran on different data (dataset "
                                f"fingerprints {str(prints[0])[:12]} and {str(prints[1])[:12]}); a paired comparison "
                                "needs the same samples")
        try:
            deltas = paired_delta(_samples(results, first), _samples(results, second),
                                  [m for m in first.metrics if m in second.metrics])
        except UtabenchError as exc:
            raise UtabenchError(f"--compare: {key[0]} / {key[1]} of {a} and {b}: {exc}") from None
        for metric, d in deltas.items():
            rows.append({"task": key[0], "dataset": key[1], "metric": metric, **d})
    if not rows and not notes:
        raise UtabenchError(f"--compare: {a} and {b} have no (task, dataset) in common")
    return rows, notes


def render_compare(results: str | Path, a: str, b: str, fmt: str = "markdown") -> str:
    rows, notes = compare_rows(results, a, b)
    if fmt == "csv":
        return pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False)
    if fmt != "markdown":
        raise UtabenchError(f"unknown table format {fmt!r}; choose markdown or csv")
    shown = pd.DataFrame([{
        "Task": r["task"], "Dataset": r["dataset"], "Metric": r["metric"], a: f"{r['a']:.2f}", b: f"{r['b']:.2f}",
        "Δ (B − A)": f"{r['delta']:+.2f}", f"{LEVEL:.0%} interval": f"[{r['low']:+.2f}, {r['high']:+.2f}]",
        "excludes 0": "yes" if r["excludes_zero"] else "no"} for r in rows])
    parts = [f"### Paired comparison: B = {b} against A = {a}"]
    if rows:
        parts.append(shown.to_markdown(index=False, disable_numparse=True))
    parts.append(f"Δ = B − A, in points; its interval is the {LEVEL:.0%} percentile bootstrap of Δ over {RESAMPLES} "
                 f"resamples (seed {SEED}) of the images, the same resamples for both backbones (retrieval: each image "
                 "with its texts); 'excludes 0': the interval lies above or below 0.")
    if notes:
        parts.append("\n".join(f"- {note}" for note in notes))
    return "\n\n".join(parts) + "\n"
