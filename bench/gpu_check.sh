#!/usr/bin/env bash
# gpu_check.sh -- on a machine with an NVIDIA GPU: compute-sanitizer over the
# GPU tests, then a per-kernel profile of batch-1 decode steps (Nsight Compute),
# so a slow step can be read kernel by kernel (synccheck and memcheck also over
# the tensor-core prefill of a 1024-token prompt of the tiny shape, which
# racecheck cannot run); profile_batch does the same for
# 256 prompts of 512 tokens (the prefill chunks, which decode the finished
# prompts alongside, then the steps after the last chunk). profile_prefill reads
# the prefill's own kernels (the tensor-core attention, rope_kv_store) through
# Nsight Compute's sections (speed of light, occupancy, warp stalls, memory and
# compute workloads) on a 2048-token prompt of the whole 8B shape.
#
#   bench/gpu_check.sh [PARTS...]     PARTS: memcheck racecheck profile profile_batch profile_prefill
#                                     (default: memcheck racecheck profile)
#
# Binaries and folders as bench/gpu.sh takes them ($SHARDLM_BIN, $MODELS,
# $TOKENIZERS, $RESULTS). The profile runs on the `tiny` shape (two layers of
# Llama-3.1-8B: the same matrices, so the same kernels and shapes per layer).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
parts=${*:-memcheck racecheck profile}
# ncu's CSV -> time per kernel name, largest first: kernel_table CSV WHICH TITLE, WHICH one of all, prefill (the
# kernels up to the last prefill attention) and decode (those after it)
kernel_table() {
  $PY - "$@" <<'EOF'
import csv, sys, collections
path, which, title = sys.argv[1:4]
rows = [r for r in csv.reader(open(path)) if len(r) > 14]
head, rows = rows[0], rows[1:]
k, unit, val, grid = head.index("Kernel Name"), head.index("Metric Unit"), head.index("Metric Value"), head.index("Grid Size")
split = max([i + 1 for i, r in enumerate(rows) if "attention_prefill" in r[k]] or [0])
rows = {"prefill": rows[:split], "decode": rows[split:]}.get(which, rows)
scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
def short(name):  # "void <unnamed>::attention_decode<__nv_bfloat16, 128>(...)" -> "attention_decode<__nv_bfloat16, 128>"
    name = name.replace("<unnamed>::", "").replace("(anonymous namespace)::", "")
    name = name[5:] if name.startswith("void ") else name
    return name.split("(")[0][:60]
total = collections.defaultdict(float); count = collections.Counter(); grids = {}
for r in rows:
    name = short(r[k])
    total[name] += float(r[val].replace(",", "")) * scale.get(r[unit], 1.0); count[name] += 1; grids[name] = r[grid]
all_us = sum(total.values())
print(f"{title}: {len(rows)} kernels, {all_us:.1f} us of kernel time")
for name, us in sorted(total.items(), key=lambda x: -x[1]):
    print(f"  {us:9.1f} us {100 * us / max(all_us, 1e-9):5.1f}%  {count[name]:5d} x  {us / count[name]:8.2f} us each"
          f"  grid {grids[name]:>14}  {name}")
EOF
}
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
  # The tensor-core prefill (its shared-memory stages, one barrier a chunk) on the 8B shape's heads: a 1024-token
  # prompt through two layers, that kernel only instrumented (cuBLASLt's GEMMs run as they are). racecheck cannot
  # run it: on an H100 (driver 580, 2026-12-07) it stops at the kernel's first launch with "Internal Sanitizer
  # Error: The Sanitizer failed to handle a hardware exception", with 2 stages and with 3, with
  # --racecheck-memcpy-async no too; so its barriers are checked by synccheck and its accesses by memcheck.
  $PY tools/make_bench_model.py --shape tiny --out "$MODELS/tiny" --tokenizer "$TOKENIZERS/llama3.1" >/dev/null &&
    for t in synccheck memcheck; do
      check $t prefill_mma --kernel-name kns=attention_prefill_mma "$bin/shardlm" bench latency "$MODELS/tiny" \
        --batch-size 1 --input-len 1024 --output-len 1 --num-iters 1 --num-iters-warmup 0 --enforce-eager
    done
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
  kernel_table "$RESULTS/profile.csv" all "three decode steps of the tiny shape, batch 1"
fi
if want profile_batch; then
  ncu=$(tool ncu)
  model=$MODELS/tiny
  $PY tools/make_bench_model.py --shape tiny --out "$model" --tokenizer "$TOKENIZERS/llama3.1" >/dev/null || exit 1
  timeout 300 "$ncu" --csv --clock-control none --metrics gpu__time_duration.sum \
      "$bin/shardlm" bench latency "$model" --batch-size 256 --input-len 512 --output-len 4 --num-iters 1 \
      --num-iters-warmup 0 --enforce-eager >"$RESULTS/profile_batch.csv" 2>"$RESULTS/profile_batch.err" || status=1
  kernel_table "$RESULTS/profile_batch.csv" prefill "tiny shape: the prefill of 256 prompts of 512 tokens"
  kernel_table "$RESULTS/profile_batch.csv" decode "tiny shape: the steps after the last prefill chunk (the sequences still decoding)"
fi
if want profile_prefill; then
  ncu=$(tool ncu)
  model=$MODELS/llama-3.1-8b
  $PY tools/make_bench_model.py --shape llama-3.1-8b --out "$model" --tokenizer "$TOKENIZERS/llama3.1" >/dev/null || exit 1
  # the first layer's instance of each (the warm-up iteration's: the same shapes as every later one)
  timeout 240 "$ncu" --kernel-name regex:"attention_prefill_mma|rope_kv_store" --launch-count 2 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
      --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
      "$bin/shardlm" bench latency "$model" --batch-size 1 --input-len 2048 --output-len 1 --num-iters 1 \
      --num-iters-warmup 0 >"$RESULTS/profile_prefill.txt" 2>"$RESULTS/profile_prefill.err" || status=1
  grep -vE "^==PROF==|^shardlm" "$RESULTS/profile_prefill.txt" | grep -E "^  [a-z_]|^    [A-Z]|^ +-+|^    (OPT|INF)" | cut -c1-160
fi
# every op against the CPU under memcheck: the long cases make it the slowest check, so it comes last
if want memcheck; then
  check memcheck cuda_ops "$(testbin test_cuda_ops)"
fi
exit $status
