#!/usr/bin/env bash
# run_cpu.sh -- the CPU figures of bench/RESULTS.md in one run, beside the
# llama.cpp peer on the same weights (BF16 GGUF written from the converted
# model), same thread count: batch-1 prefill/decode with the memory-bandwidth
# limit, then throughput at 1, 8 and 64 concurrent requests, each level
# shardlm in three settings, then llama.cpp's batched mode (n_seq_max = N)
# back to back. The settings: `highest` (float32 activations and KV cache, the
# default), `medium` (bf16 matmul inputs) and `medium-f16kv` (bf16 matmul
# inputs and a float16 KV cache: what llama.cpp computes by default).
# Usage: bench/run_cpu.sh [BUILD_DIR] [THREADS]   (one line per measurement)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/release}
threads=${2:-$(nproc)}
shardlm="$build/shardlm"
out="$root/build/bench"
mkdir -p "$out"
export OMP_NUM_THREADS=$threads  # llama.cpp's threads; shardlm takes --threads

echo "date: $(date -u +%Y-%m-%dT%H:%MZ); commit: $(git -C "$root" rev-parse --short HEAD); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads"
settings=(highest medium medium-f16kv)
flags() { # the engine flags of one setting
  case $1 in
    highest) echo --matmul-precision highest ;;
    medium) echo --matmul-precision medium ;;
    medium-f16kv) echo --matmul-precision medium --kv-cache-dtype float16 ;;
  esac
}
for p in "${settings[@]}"; do
  # shellcheck disable=SC2046
  "$shardlm" bench latency --threads "$threads" $(flags "$p") --input-len 128 --output-len 128 \
    --num-iters 5 --output-json "$out/latency_$p.json" 2>/dev/null | sed "s/^/[shardlm, $p] /"
done
"$root/bench/peers/run-llamacpp.sh" "$threads" > "$out/llamacpp.json" 2>/dev/null || echo "llama.cpp peer failed"
echo "[llama.cpp] $(cat "$out/llamacpp.json" 2>/dev/null)"
for c in 1 8 64; do
  for p in "${settings[@]}"; do
    # shellcheck disable=SC2046
    "$shardlm" bench throughput --threads "$threads" $(flags "$p") --input-len 128 --output-len 128 \
      --num-prompts "$c" --max-num-seqs "$c" --output-json "$out/throughput_${p}_$c.json" 2>/dev/null | head -1 |
      sed "s/^/[shardlm, $p, $c concurrent] /"
  done
  if "$root/bench/peers/run-llamacpp.sh" "$threads" throughput "$c" > "$out/llamacpp_throughput_$c.json" 2>/dev/null; then
    "$root/build/venv-peers/bin/python" -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("[llama.cpp, %s concurrent] Throughput: %.2f requests/s, %.2f total tokens/s, %.2f output tokens/s"
      % (sys.argv[2], r["requests_per_s"], r["total_tokens_per_s"], r["output_tokens_per_s"]))' \
      "$out/llamacpp_throughput_$c.json" "$c"
  else
    echo "[llama.cpp, $c concurrent] peer failed"
  fi
done
