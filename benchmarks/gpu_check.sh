#!/usr/bin/env bash
# One GPU session: install alexnetc without network access, run the GPU tests, then the
# benchmarks, writing every result under ${OUT:-gpu-results}. Takes ~5 minutes on an H100.
#   bash benchmarks/gpu_check.sh            (wheels for missing packages may sit in .whl/)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
SITE=/tmp/alexnetc-site
if ! python3 -c "import lark" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl || exit 1
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" . \
  >/dev/null 2>&1 || { echo "install failed"; exit 1; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
cd /tmp  # import the installed package, not the checkout
R=$OLDPWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee -a "$OUT/card.txt"
section() { echo; echo "=== $1"; }
section "gpu tests"
timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -q -m gpu -p no:cacheprovider \
  --rootdir "$R" -c "$R/pyproject.toml" "$R/tests" 2>&1 | tail -25 | tee "$OUT/gpu-tests.txt"
for bench in ${BENCHES:-bench_fused bench_train}; do
  section "$bench"
  timeout "${BENCH_TIMEOUT:-200}" python3 "$R/benchmarks/$bench.py" --out "$OUT/$bench.md" 2>&1 \
    | tail -40
done
