"""`utabench report`: one self-contained HTML page of a results directory: every table with the paper's rows and
deltas, a bar chart per task across backbones, the training curves of every pretraining and fine-tuning run the
records name (from their `log.jsonl`), the training and validation loss of each pretrained backbone whose config
has a `validation` block (paper Fig. 4, from the records' `pretrain.validation`), the Fig. 3 masking map, and each
record's provenance on demand. Plots are
drawn with matplotlib and embedded as PNG data; the page loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from utabench.core.io import atomic_write_text, read_jsonl
from utabench.core.tablespec import TABLES, table_numbers
from utabench.harness.record import Record
from utabench.harness.record import frame as records_frame
from utabench.harness.store import read_records
from utabench.harness.tables import table_blocks
from utabench.pretrain.masking import MaskGenerator, MaskSpec, location_probability

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}td:first-child,th:first-child{text-align:left}
img{max-width:100%}details{margin:.2em 0}pre{background:#f6f6f6;padding:.5em;overflow:auto}"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _tables(records: pd.DataFrame) -> List[str]:
    out = []
    for number in table_numbers():
        spec = TABLES.get(str(number))
        out.append(f"<h3>{html.escape(spec.title)}</h3>")
        for block in table_blocks(records, spec):
            out.append(f"<p>{html.escape(block)}</p>" if isinstance(block, str) else block.to_html(index=False))
    return out


def _bar_charts(records: List[Record]) -> List[str]:
    """Per task: each dataset's first metric, one bar per backbone, with its 95% bootstrap interval as an error bar
    where the record has one."""
    import matplotlib.pyplot as plt

    by_task: Dict[str, Dict[Tuple[str, str], float]] = {}
    low_of: Dict[str, Dict[Tuple[str, str], float]] = {}
    high_of: Dict[str, Dict[Tuple[str, str], float]] = {}
    metric_of: Dict[str, str] = {}
    for record in records:
        if record.status != "complete" or not record.metrics:
            continue
        task = record.task
        metric = metric_of.setdefault(task, next(iter(record.metrics)))
        if metric in record.metrics:
            value = record.metrics[metric]
            by_task.setdefault(task, {})[(record.dataset, record.backbone)] = value
            low, high = record.ci.get(metric) or (value, value)
            low_of.setdefault(task, {})[(record.dataset, record.backbone)] = max(0.0, value - low)
            high_of.setdefault(task, {})[(record.dataset, record.backbone)] = max(0.0, high - value)
    out = []
    for task, values in by_task.items():
        frame = pd.Series(values).unstack()  # rows: datasets, columns: backbones
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(frame.index) * max(1, len(frame.columns)) / 3), 3.2))
        below, above = (pd.Series(side[task]).unstack().reindex_like(frame).fillna(0.0) for side in (low_of, high_of))
        errors = np.stack([below.to_numpy().T, above.to_numpy().T], axis=1)  # (backbones, 2, datasets)
        shown = bool(errors.any())
        frame.plot.bar(ax=ax, rot=0, yerr=errors if shown else None, capsize=3 if shown else 0)
        ax.set_title(f"{task}: {metric_of[task]}" + (" (error bars: 95% bootstrap interval)" if shown else ""))
        ax.legend(fontsize=7, loc="best")
        out += [f"<h3>{html.escape(task)}</h3>", _png(fig)]
    return out


def _training_logs(records: List[Record]) -> Dict[str, Path]:
    """{label: log.jsonl} of the pretraining runs behind the backbones and the fine-tuning runs of the records."""
    logs = {}
    for record in records:
        checkpoint = (record.backbone_spec or {}).get("checkpoint")
        if record.pretrain and checkpoint:
            logs[f"pretraining: {record.backbone} ({record.pretrain.get('objective')})"] = Path(checkpoint)
        finetuned = record.provenance.get("task_details", {}).get("finetuned")
        if finetuned and record.task == "finetune-classification":
            logs[f"fine-tuning: {record.backbone} on {record.dataset}"] = Path(finetuned)
    found = {}
    for label, path in logs.items():
        for folder in (path.parent, path.parent.parent):
            if (folder / "log.jsonl").is_file():
                found[label] = folder / "log.jsonl"
                break
    return found


def _curves(records: List[Record]) -> List[str]:
    import matplotlib.pyplot as plt

    logs = _training_logs(records)
    out = []
    for kind in ("pretraining", "fine-tuning"):
        runs = {label: path for label, path in logs.items() if label.startswith(kind)}
        if not runs:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for label, path in sorted(runs.items()):
            rows = [row for row in read_jsonl(path, "training log") if "loss" in row and "step" in row]
            ax.plot([row["step"] for row in rows], [row["loss"] for row in rows], label=label.split(": ", 1)[1])
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{kind} loss")
        ax.legend(fontsize=7)
        out += [f"<h3>{kind}</h3>", _png(fig)]
    return out or ["<p>(no training runs behind these records)</p>"]


def _validation_curves(records: List[Record]) -> List[str]:
    """Paper Fig. 4: per pretrained backbone with a validation curve, its validation loss and the mean training
    loss of the steps before each point."""
    import matplotlib.pyplot as plt

    curves = {}
    for record in records:
        curve = (record.pretrain or {}).get("validation")
        if curve and curve.get("steps"):
            curves.setdefault(record.backbone, curve)
    out = []
    for backbone, curve in sorted(curves.items()):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        trained = [(s, t) for s, t in zip(curve["steps"], curve["train_loss"]) if t is not None]
        ax.plot([s for s, _ in trained], [t for _, t in trained], marker=".", label="training (mean since last point)")
        ax.plot(curve["steps"], curve["loss"], marker=".", label=f"validation ({curve.get('holdout')} held-out images, "
                f"{curve.get('mask')} masks)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (negative cosine)")
        title = f"{backbone}: training and validation loss"
        later = [v for s, v in zip(curve["steps"], curve["loss"]) if s > 0] + [t for _, t in trained]
        if curve["steps"][0] == 0 and later:  # the untrained student's point would flatten the rest: off the axis
            low, high = min(later), max(later)
            ax.set_ylim(low - 0.05 * (high - low or 1), high + 0.05 * (high - low or 1))
            title += f" (validation at step 0: {curve['loss'][0]:.3f}, above the axis)"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        out += [f"<h3>{html.escape(backbone)}</h3>", _png(fig)]
    return out or ["<p>(no pretraining run with a validation loss: a pretraining config's `validation` block, e.g. "
                   "configs/world-validation.yaml)</p>"]


def _masking_map(samples: int = 2000) -> str:
    import matplotlib.pyplot as plt


    fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
    for ax, kind in zip(axes, ("block", "block-r")):
        prob = location_probability(MaskGenerator((16, 16), MaskSpec(kind, 0.5)), samples, seed=0)
        shown = ax.imshow(prob, cmap="viridis")
        ax.set_title(f"{kind}, ratio 0.5: max/min {prob.max() / prob.min():.2f}", fontsize=9)
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.046)
    return _png(fig)


def _provenance(records: List[Record]) -> List[str]:
    out = []
    for record in records:
        title = f"{record.backbone} / {record.task} / {record.dataset}: {record.status}"
        body = html.escape(json.dumps(record.to_dict(), indent=1, default=str))
        out.append(f"<details><summary>{html.escape(title)}</summary><pre>{body}</pre></details>")
    return out


def write_report(results: Path, out: Path) -> Path:
    """Write the page for `results` to `out` (atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    records = read_records(results)
    frame = records_frame(records)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>utabench report: {html.escape(str(results))}"
             f"</title><style>{STYLE}</style></head><body>",
             f"<h1>utabench report</h1><p>{len(records)} records in {html.escape(str(results))}</p>",
             "<h2>Tables</h2>", *_tables(frame),
             "<h2>Per task, across backbones</h2>", *(_bar_charts(records) or ["<p>(no records)</p>"]),
             "<h2>Training curves</h2>", *_curves(records),
             "<h2>Pretraining: training and validation loss (paper Fig. 4)</h2>", *_validation_curves(records),
             "<h2>Masking (paper Fig. 3): where masks fall, over 2000 masks of a 16 x 16 grid</h2>", _masking_map(),
             "<h2>Records and their provenance</h2>", *_provenance(records), "</body></html>"]
    return atomic_write_text(out, "\n".join(parts))
