"""`utabench report`: the page holds every table with the published rows, a bar chart per task, the fine-tuning
run's training curve, the masking map and each record's provenance, loads nothing from the network, and renders in
headless Chromium (its DOM keeps the tables and plots; the screenshot is not blank)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
from PIL import Image

from utabench.core.tablespec import TABLES, table_numbers
from utabench.harness.cli import main

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _results(world, tmp_path):
    results = tmp_path / "r"
    recipe = tmp_path / "ft.yaml"
    recipe.write_text(json.dumps({"objective": "finetune", "layer_decay": 0.75, "ema": 0.9, "checkpoint_every": 5,
                                  "workers": 0, "augment": {"scale": [0.5, 1.0]}, "eval": {"crop_pct": 1.0},
                                  "optim": {"batch_size": 8, "steps": 6, "warmup_steps": 2, "lr": 1e-3,
                                            "min_lr": 1e-6, "betas": [0.9, 0.999], "eps": 1e-8,
                                            "weight_decay": 0.05}}))
    common = ["--dataset", f"imagenet:{world / 'imagenet'}", "--classes", str(world / "classes.json"),
              "--results", str(results), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress"]
    for backbone in ("uta:tiny", "clip:utabench-clip-tiny"):
        assert main(["run", "zeroshot-classification", "--backbone", backbone, *common]) == 0
    assert main(["run", "finetune-classification", "--backbone", "uta:tiny", "--recipe", str(recipe), *common]) == 0
    return results


def test_report_page_has_everything_and_renders_in_chromium(world, tmp_path, capsys):
    results = _results(world, tmp_path)
    capsys.readouterr()
    assert main(["report", "--results", str(results)]) == 0
    page = results / "report.html"
    assert capsys.readouterr().out.strip() == str(page)
    text = page.read_text()
    published = [n for n in table_numbers() if TABLES.get(str(n)).csv]  # Table 100 (DataComp's) has none
    assert text.count("<table") == len(published) + 2  # every published table, ours for Tables 1 and 4
    assert "Published (Table 1 of the UTA paper)" in text and "uta:tiny" in text
    images = re.findall(r'<img alt="plot" src="data:image/png;base64,', text)
    assert len(images) == 4  # zero-shot and fine-tuning bars, the fine-tuning curve, the masking map
    assert "<h3>fine-tuning</h3>" in text and "<h3>zeroshot-classification</h3>" in text
    assert text.count("<details>") == 3 and "checkpoint_sha256" in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing from the network

    chromium = shutil.which("chromium")
    assert chromium, "the report test needs Chromium: bash scripts/setup.sh --test installs it"
    profile = tmp_path / "profile"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table") == text.count("<table") and dom.stdout.count("<img") == 4
    shot = tmp_path / "shot.png"
    out = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,3000",
                          f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (3000, 1280) and pixels.std() > 10  # text, tables and plots, not an empty page


def test_report_of_a_missing_directory_is_one_line(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
