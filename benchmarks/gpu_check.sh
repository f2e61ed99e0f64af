#!/usr/bin/env bash
# One GPU session: install alexnetc without network access, then the kernel benchmark, the
# training-throughput benchmark and the GPU tests, each under its own time limit, writing
# every result under ${OUT:-gpu-results} as it goes.
#   bash benchmarks/gpu_check.sh          (wheels for packages the machine lacks in .whl/)
# Time limits per part (seconds): WARM_S (parallel compilation), FUSED_S, TRAIN_S, MEM_S,
# TESTS_S.
# The GPU machine has no network; fetch the pure-Python wheels it may lack beforehand, e.g.
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     lark==1.3.1 rich markdown-it-py mdurl pygments
set -uo pipefail
cd "$(dirname "$0")/.."
R=$PWD
OUT=${OUT:-$R/gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
SITE=/tmp/alexnetc-site
if compgen -G ".whl/*.whl" >/dev/null; then  # what the machine lacks (lark, rich, ...)
  python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl || exit 1
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" . \
  >"$OUT/install.txt" 2>&1 || { cat "$OUT/install.txt"; exit 1; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
cd /tmp  # import the installed package, not the checkout's folders
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} | tee "$OUT/card.txt"
echo "=== bench_fused"
# Compile first, in parallel, one process per block (Triton and Inductor keep what they compile
# in their disk caches): the timed run then spends its minutes timing, not compiling ~130
# kernel configurations one after another.
for block in ${FUSED_ONLY:-conv1:fp32 conv1:bf16 conv2:fp32 conv2:bf16}; do
  timeout "${WARM_S:-120}" python3 "$R/benchmarks/bench_fused.py" --warm --only "$block" \
    >"$OUT/warm-${block/:/-}.log" 2>&1 &
done
wait
TRITON_PRINT_AUTOTUNING=1 timeout "${FUSED_S:-220}" python3 "$R/benchmarks/bench_fused.py" --out "$OUT/bench_fused.md" \
  ${FUSED_ONLY:+--only $FUSED_ONLY} \
  2>&1 | tee "$OUT/bench_fused.log" | grep -v "^  File\|^    \|autotuning" | tail -40
echo "=== bench_train"
timeout "${TRAIN_S:-170}" python3 "$R/benchmarks/bench_train.py" --out "$OUT/bench_train.md" \
  ${TRAIN_QUICK:+--quick} --profile \
  2>&1 | tee "$OUT/bench_train.log" | tail -60
echo "=== bench_memory"
timeout "${MEM_S:-60}" python3 "$R/benchmarks/bench_memory.py" --out "$OUT/bench_memory.md" \
  2>&1 | tee "$OUT/bench_memory.log" | tail -12
[ "${TESTS_S:-120}" = 0 ] && exit 0
echo "=== gpu tests"
timeout "${TESTS_S:-120}" python3 -m pytest -q -m gpu -p no:cacheprovider -x \
  --rootdir "$R" -c "$R/pyproject.toml" "$R/tests/backends" "$R/tests/cli" 2>&1 | tail -15 \
  | tee "$OUT/gpu-tests.txt"
