#!/usr/bin/env bash
# gpu_check.sh -- on a machine with an NVIDIA GPU: compute-sanitizer over the
# GPU tests, then a per-kernel profile of batch-1 decode steps (Nsight Compute),
# so a slow step can be read kernel by kernel.
#
#   bench/gpu_check.sh [PARTS...]     PARTS: memcheck racecheck profile (default: all)
#
# Binaries and folders as bench/gpu.sh takes them ($SHARDLM_BIN, $MODELS,
# $TOKENIZERS, $RESULTS). The profile runs on the `tiny` shape (two layers of
# Llama-3.1-8B: the same matrices, so the same kernels and shapes per layer).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
parts=${*:-memcheck racecheck profile}
want() { [[ " $parts " == *" $1 "* ]]; }
bin=${SHARDLM_BIN:-$root/build/gpu}
# a test program: beside shardlm in a bundle, under tests/<area>/ in a build folder
testbin() { if [ -x "$bin/$1" ]; then echo "$bin/$1"; else find "$bin/tests" -name "$1" -type f -perm -u+x | head -1; fi; }
MODELS=${MODELS:-/tmp/shardlm-models}
TOKENIZERS=${TOKENIZERS:-$root/../shared/tokenizers}
RESULTS=${RESULTS:-$root/bench/gpu-results}
PY=${PYTHON:-python3}
mkdir -p "$RESULTS" "$MODELS"
fx=$root/tests/fixtures
tool() { command -v "$1" || ls /usr/local/cuda/bin/"$1" /opt/nvidia/nsight-compute/*/"$1" 2>/dev/null | head -1; }
sanitizer=$(tool compute-sanitizer)
status=0

check() { # TOOL NAME COMMAND...: the sanitizer's verdict, its report kept
  local t=$1 name=$2; shift 2
  if timeout 120 "$sanitizer" --tool "$t" --error-exitcode 99 "$@" >"$RESULTS/${t}_$name.log" 2>&1; then
    echo "$t clean: $name ($(grep -m1 -o 'ERROR SUMMARY: [0-9]* errors' "$RESULTS/${t}_$name.log" || echo ok))"
  else
    echo "$t FAILED (or timed out): $name"; grep -m20 -E "Invalid|Race|ERROR|Error" "$RESULTS/${t}_$name.log"; status=1
  fi
}
if want memcheck; then
  check memcheck golden_llama_gqa "$(testbin test_golden)" "$fx/llama_gqa" "$fx/llama_gqa/golden.json" 0.5 medium bfloat16 cuda
  check memcheck golden_llama_mha_bias "$(testbin test_golden)" "$fx/llama_mha_bias" "$fx/llama_mha_bias/golden.json" 0.5 medium float32 cuda
fi
if want racecheck; then
  check racecheck golden_mistral_5layer "$(testbin test_golden)" "$fx/mistral_5layer" "$fx/mistral_5layer/golden.json" 0.5 medium bfloat16 cuda
fi

if want profile; then
  ncu=$(tool ncu)
  model=$MODELS/tiny
  $PY tools/make_bench_model.py --shape tiny --out "$model" --tokenizer "$TOKENIZERS/llama3.1" >/dev/null || exit 1
  # a decode step of two layers is about 30 kernels, the prefill step about 45: skip the prefill and the
  # first decode steps, keep three decode steps' worth
  timeout 240 "$ncu" --csv --clock-control none --metrics gpu__time_duration.sum --launch-skip 100 \
      --launch-count 90 "$bin/shardlm" bench latency "$model" --batch-size 1 --input-len 128 \
      --output-len 10 --num-iters 1 --num-iters-warmup 0 >"$RESULTS/profile.csv" 2>"$RESULTS/profile.err" || status=1
  $PY - "$RESULTS/profile.csv" <<'EOF'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 14]
head, rows = rows[0], rows[1:]
k, unit, val, grid = head.index("Kernel Name"), head.index("Metric Unit"), head.index("Metric Value"), head.index("Grid Size")
scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}
total = collections.defaultdict(float); count = collections.Counter(); grids = {}
for r in rows:
    name = r[k].split("(")[0].split("<")[0][:60]
    total[name] += float(r[val].replace(",", "")) * scale.get(r[unit], 1.0); count[name] += 1; grids[name] = r[grid]
all_us = sum(total.values())
print(f"{len(rows)} kernels, {all_us:.1f} us of kernel time (about three decode steps of the tiny shape)")
for name, us in sorted(total.items(), key=lambda x: -x[1]):
    print(f"  {us:9.1f} us  {count[name]:4d} x  {us / count[name]:7.2f} us each  grid {grids[name]:>14}  {name}")
EOF
fi
# every op against the CPU under memcheck: the long cases make it the slowest check, so it comes last
if want memcheck; then
  check memcheck cuda_ops "$(testbin test_cuda_ops)"
fi
exit $status
