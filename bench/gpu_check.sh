#!/usr/bin/env bash
# Every CUDA-only check in one run (under 8 minutes on one H100/H200): the CUDA-marked tests, both throughput
# benchmarks (zero-shot at ViT-B/16 and ViT-L/14; UTA vs MIM pretraining steps with MFU). Prints everything; the
# figures go in the closing note. Usage, from the repository root, on a machine with torch built for CUDA:
#     bash bench/gpu_check.sh [PYTHON]        # PYTHON defaults to .venv/bin/python, else python3
set -uo pipefail
cd "$(dirname "$0")/.."
py="${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 2
status=0
step() { echo; echo "== $1"; shift; local t0=$SECONDS; "$@" || status=1; echo "($((SECONDS - t0)) s)"; }
step "CUDA-marked tests" "$py" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
step "zero-shot throughput, ViT-B/16" "$py" bench/zeroshot_throughput.py --backbone clip:ViT-B-16 --images 10000 \
    --batch-size 256 --workers "$(( $(nproc) > 16 ? 16 : $(nproc) ))"
step "zero-shot throughput, ViT-L/14" "$py" bench/zeroshot_throughput.py --backbone clip:ViT-L-14 --images 5000 \
    --batch-size 256 --workers "$(( $(nproc) > 16 ? 16 : $(nproc) ))"
step "pretraining step, UTA vs MIM (B/14 student, EVA01-g teacher)" "$py" bench/pretrain_throughput.py \
    --student B-14 --teacher clip:EVA01-g-14-plus --batch-size 128 --device cuda --precision amp_bf16 --peak-tflops 989
exit $status
