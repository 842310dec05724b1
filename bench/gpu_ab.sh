#!/usr/bin/env bash
# gpu_ab.sh BASELINE_SHARDLM -- on a GPU machine: bench/gpu.sh (the GPU
# tests, decode, prefill, throughput of the 8B shape), then the same
# latency benchmarks and throughput with an earlier build's shardlm on the
# same GPU in the same call, so the two can be compared side by side.
# Environment as bench/gpu.sh (SHARDLM_BIN, TOKENIZERS, RESULTS...);
# PARTS (default "tests bench throughput") goes to bench/gpu.sh.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
base=${1:?usage: bench/gpu_ab.sh BASELINE_SHARDLM}
RESULTS=${RESULTS:-$root/bench/gpu-results}
MODELS=${MODELS:-/tmp/shardlm-models}
"$root/bench/gpu.sh" ${PARTS:-tests bench throughput}
status=$?
model=$MODELS/llama-3.1-8b
echo "---- baseline: $base"
timeout 120 "$base" bench latency "$model" --batch-size 1 --input-len 128 --output-len 256 --num-iters 5 \
    --output-json "$RESULTS/base_decode_b1.json" 2>&1 | grep -v "^iteration"
timeout 90 "$base" bench latency "$model" --batch-size 1 --input-len 2048 --output-len 1 --num-iters 5 \
    --output-json "$RESULTS/base_prefill_2048.json" 2>&1 | grep -v "^iteration"
timeout "${BASE_THROUGHPUT_TIMEOUT:-150}" "$base" bench throughput "$model" --num-prompts "${NUM_PROMPTS:-1000}" \
    --input-len 512 --output-len 256 --output-json "$RESULTS/base_throughput.json"
exit $status
