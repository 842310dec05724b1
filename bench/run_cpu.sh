#!/usr/bin/env bash
# run_cpu.sh -- the CPU figures of bench/RESULTS.md in one run, beside the
# llama.cpp peer on the same weights (BF16 GGUF written from the converted
# model), same thread count: batch-1 prefill/decode with the memory-bandwidth
# limit, then throughput at 1, 8 and 64 concurrent requests.
# Usage: bench/run_cpu.sh [BUILD_DIR] [THREADS]   (prints a markdown table)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/release}
threads=${2:-$(nproc)}
shardlm="$build/shardlm"
out="$root/build/bench"
mkdir -p "$out"
export OMP_NUM_THREADS=$threads

echo "date: $(date -u +%Y-%m-%dT%H:%MZ); commit: $(git -C "$root" rev-parse --short HEAD); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads"
for policy in active passive; do
  OMP_WAIT_POLICY=$policy "$shardlm" bench latency --input-len 128 --output-len 128 --num-iters 5 \
    --output-json "$out/latency_$policy.json" 2>/dev/null | sed "s/^/[shardlm, OMP_WAIT_POLICY=$policy] /"
done
"$root/bench/peers/run-llamacpp.sh" "$threads" > "$out/llamacpp.json" 2>/dev/null || echo "llama.cpp peer failed"
echo "[llama.cpp] $(cat "$out/llamacpp.json" 2>/dev/null)"
for c in 1 8 64; do
  OMP_WAIT_POLICY=passive "$shardlm" bench throughput --input-len 128 --output-len 128 --num-prompts "$c" \
    --max-num-seqs "$c" --output-json "$out/throughput_$c.json" 2>/dev/null | head -1 | sed "s/^/[shardlm, $c concurrent] /"
done
