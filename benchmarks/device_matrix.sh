#!/usr/bin/env bash
# The GPU benchmark matrix in one call, for a lent single-GPU machine that has no network: installs the
# carried wheels (.whl/: torchtitan, torchao, lpips, tyro and its needs, fetched beforehand with
# `pip download`, see benchmarks/README.md), then runs train_throughput.py for each configuration below,
# each under its own time limit, and leaves everything under $OUT (default ./bench-out):
#   results.jsonl   one JSON line per run (the records benchmarks/results-<gpu>.jsonl collects)
#   log.txt         every run's full output
#   NAME.trace.json.gz  the first run's torch.profiler trace (chrome://tracing, perfetto.dev)
# Usage: bash benchmarks/device_matrix.sh [NAME ...]   (default: every configuration)
set -u -o pipefail
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "device_matrix: installing .whl failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader | tee -a "$OUT/log.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.backends.cudnn.version())" | tee -a "$OUT/log.txt"

# name | time limit (s) | arguments
MATRIX=(
  "bl|270|gigatok-b-l --bf16 --compile --channels-last --micro-batch 32 --ablate --profile /tmp/prof-bl"
  "xlxxl|225|gigatok-xl-xxl --bf16 --compile --channels-last --ac full --micro-batch 64"
  "bl-nchw|200|gigatok-b-l --bf16 --compile --micro-batch 32"
)

want=" ${*:-} "
for entry in "${MATRIX[@]}"; do
    IFS='|' read -r name limit argv <<<"$entry"
    [[ "$want" == "  " || "$want" == *" $name "* ]] || continue
    echo "=== $name: $argv (limit ${limit}s)" | tee -a "$OUT/log.txt"
    # shellcheck disable=SC2086
    timeout "$limit" python3 benchmarks/train_throughput.py $argv --steps 10 --warmup 3 --loader-batches 0 \
        --results "$OUT/results.jsonl" >>"$OUT/log.txt" 2>&1
    echo "=== $name: exit $?" | tee -a "$OUT/log.txt"
    grep -E "^(benchmark|step|FLOPs|achieved|memory|without|profile) " "$OUT/log.txt" | tail -n 12 | sed "s/^/$name  /"
    trace=/tmp/prof-$name/trace.json
    [[ -f $trace ]] && gzip -c "$trace" >"$OUT/$name.trace.json.gz" && rm -f "$trace"
done
