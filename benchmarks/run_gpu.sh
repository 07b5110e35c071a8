#!/usr/bin/env bash
# Every GPU check and benchmark of the fused PAT kernel (issue 6), in one command:
#
#   bash benchmarks/run_gpu.sh [OUTPUT.md]        # default: benchmarks/results/gpu-<card>.md
#
# 1. the compiled Triton kernel against the eager PATLoss on CUDA (pytest -m gpu), values and gradients;
# 2. loss forward+backward, fused PAT vs F.cross_entropy (and eager PAT, fused CE), median time and peak
#    extra memory, at 8x20x512x1024 and 8x150x512x512, float32 and bfloat16 (and channels-last logits);
# 3. a whole training step on the GPU: Lightning fit vs a plain PyTorch loop, PAT vs CE.
# The markdown written to OUTPUT.md is ready to paste into docs/benchmarks.md. PYTHON picks the
# interpreter (default: python); the repository root goes first on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'" || {
    echo "run_gpu.sh needs a CUDA device and triton" >&2
    exit 1
}
CARD=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
OUT=${1:-benchmarks/results/gpu-$CARD.md}
mkdir -p "$(dirname "$OUT")"
{
    echo "## GPU results: $("$PYTHON" -c "import torch; print(torch.cuda.get_device_name())")"
    echo
    echo "$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $("$PYTHON" -c \
        "import torch, triton; print(f'torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}')")"
    echo
} > "$OUT"

echo "[1/3] compiled kernel vs eager PATLoss on CUDA"
if "$PYTHON" -m pytest tests/test_pat_triton.py -m gpu -q -p no:cacheprovider > "$OUT.pytest.log" 2>&1; then
    echo "Correctness on CUDA (\`pytest tests/test_pat_triton.py -m gpu\`): $(tail -n 1 "$OUT.pytest.log")" >> "$OUT"
else
    echo "Correctness on CUDA FAILED: $(tail -n 1 "$OUT.pytest.log") (see $OUT.pytest.log)" >> "$OUT"
fi
echo >> "$OUT"

echo "[2/3] loss forward+backward"
"$PYTHON" benchmarks/train_step.py --device cuda --markdown "$OUT" loss \
    --shape 8 20 512 1024 --shape 8 150 512 512 --dtype float32 --dtype bfloat16 --repeats 20
"$PYTHON" benchmarks/train_step.py --device cuda --markdown "$OUT" loss --channels-last \
    --shape 8 20 512 1024 --dtype float32 --dtype bfloat16 --repeats 20

echo "[3/3] training step"
"$PYTHON" benchmarks/train_step.py --device cuda --markdown "$OUT" step \
    --batch-size 8 --image-size 256 --base-channels 32 --depth 4 --steps 30 --warmup 10 --repeats 3

echo "wrote $OUT"
cat "$OUT"
