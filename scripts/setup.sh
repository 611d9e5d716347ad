#!/usr/bin/env bash
# Sets up utabench in a virtual environment (.venv, or $UTABENCH_VENV) on a fresh machine.
# Idempotent: when constraints.txt and pyproject.toml are unchanged since the last successful run it returns at once.
# `--test` also makes sure of what the tests need beyond Python: headless Chromium, which renders `utabench report`'s
# page (Debian's chromium package, installed with apt-get when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
    else
        echo "setup: the tests need Chromium on PATH (Debian: apt-get install chromium; run this as root to do it)" >&2
        exit 2
    fi
fi
venv="${UTABENCH_VENV:-.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.utabench-setup"
want="$(cat constraints.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/utabench" ]; then
    exit 0
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and alone, pinned, so that no later resolution can choose another build
"${pip[@]}" -c constraints.txt "torch==2.13.0"
# mmcv (for mmdet / mmseg) is published as source only; build it with its C++ ops against the torch just installed.
# pip caches the built wheel, so a second set-up does not compile again. MMCV_WITH_OPS / FORCE_CUDA / MAX_JOBS: mmcv's
# build-from-source docs (docs/en/get_started/build.md); setuptools < 81 because its setup.py imports pkg_resources;
# CFLAGS replaces Python's default flags (measured on 2 cores: ~4.4 min and a 1.4 MB wheel; without CFLAGS 15 min
# and 32 MB; -g0 alone compiles at -O0 and runs ~1.8x slower).
if ! "$venv/bin/python" -c "import mmcv.ops" 2>/dev/null; then
    "${pip[@]}" -c constraints.txt "setuptools>=77.0.3,<81" wheel ninja
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" CFLAGS="-DNDEBUG -O3 -g0 -fwrapv" \
        "${pip[@]}" -c constraints.txt --no-build-isolation --no-deps mmcv==2.1.0
fi
"${pip[@]}" -c constraints.txt -e ".[test]"
# LLaVA's own scoring script (llava/eval/summarize_gpt_review.py), which a test runs on our review files. The wheel is
# downloaded, never installed: its pinned requirements would replace torch.
ls "$venv"/upstream/llava_torch-*.whl >/dev/null 2>&1 || "$venv/bin/python" -m pip download --quiet \
    --disable-pip-version-check --no-deps --only-binary=:all: -c constraints.txt -d "$venv/upstream" llava-torch
"$venv/bin/python" -c "import utabench, torch; print('utabench set up with torch', torch.__version__)"
echo "$want" > "$stamp"
