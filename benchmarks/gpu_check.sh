#!/usr/bin/env bash
# One GPU session in one call: the CUDA tests, the GPU benchmark (issue 13) and, with the time
# left, the paper protocol (issues 11-12). Everything lands in $OUT as it is produced.
#
#   OUT=/tmp/out WHEELS=.gpu/whl TS_DEFENSE_DATA=.gpu/data bash benchmarks/gpu_check.sh
#
# PRESET=gpu-frontier skips the GPU benchmark and spends the time on the frontier's recipes at
# the paper's scale (issue 24: Gaussian and the best recipes, the worst case on BSD68 and Set12);
# RECIPES="gaussian free-hat trades" overrides the preset's variants.
#
# WHEELS: a folder of wheels the GPU machine lacks and cannot download (it has no network), e.g.
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       --platform any --no-deps -d .gpu/whl torchattacks==3.5.1 spandrel safetensors
# TS_DEFENSE_DATA: a copy of ../shared/data inside the checkout (only the checkout travels);
# keep the folder out of git (.git/info/exclude) and name it in the device call's `carry`.
# Dry run on the CPU: DEVICE=cpu PRESET=smoke TOTAL=200 PY=.venv/bin/python OUT=/tmp/o bash ...
set -u
T0=$(date +%s)
TOTAL=${TOTAL:-540}  # seconds for the whole script: leave the device call a margin
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-gpu}
PY=${PY:-python3}
OUT=${OUT:?set OUT to the folder that comes back}
export PYTHONUNBUFFERED=1
left() { echo $((TOTAL - ($(date +%s) - T0))); }
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site:$PWD:$PWD/tests
else
  export PYTHONPATH=$PWD:$PWD/tests
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/machine.txt"

timeout 180 $PY -m pytest -q -rs --noconftest -p no:cacheprovider tests/test_cuda.py \
  >"$OUT/cuda_tests.log" 2>&1
echo "cuda tests rc=$? ($(left) s left)"; tail -5 "$OUT/cuda_tests.log"

SMOKE=""; [ "$DEVICE" = cuda ] || SMOKE="--smoke"
if [ "$PRESET" != gpu-frontier ]; then
  # issue 13 (open) first: two thirds of what is left; compiling takes part of it
  timeout $(($(left) * 2 / 3)) $PY benchmarks/bench_gpu.py --device "$DEVICE" $SMOKE \
    --max-seconds $(($(left) / 2 - 20)) --out "$OUT/bench_gpu.jsonl" >"$OUT/bench_gpu.md" 2>&1
  echo "bench_gpu rc=$? ($(left) s left)"; tail -30 "$OUT/bench_gpu.md"
fi

if [ "$(left)" -lt 120 ]; then  # (timeout 0 would mean no limit at all)
  echo "paper protocol skipped: $(left) s left"; exit 0
fi
MIN=$($PY -c "print(max(1.0, ($(left) - 60) / 60))")
# shellcheck disable=SC2086  # RECIPES is a list of words
timeout $(($(left) - 10)) $PY -m benchmarks.paper --preset "$PRESET" --device "$DEVICE" \
  --minutes "$MIN" --out "$OUT/paper" ${RECIPES:+--recipes $RECIPES} >"$OUT/paper.log" 2>&1
echo "paper rc=$? ($(left) s left)"; head -40 "$OUT/paper/report.md" 2>/dev/null
