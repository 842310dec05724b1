#!/usr/bin/env bash
# run.sh -- `shardlm bench serve` at two request rates against `shardlm serve`
# (the default model, on the CPU) and, when given, against a peer
# OpenAI-compatible server on the same weights (e.g. llama.cpp's, started by
# llama-cpp-python: `python -m llama_cpp.server --model SmolLM2-135M-Instruct.Q4_1.gguf --port 8001`).
#
#   bench/serve/run.sh [BUILD_DIR] [PEER_BASE_URL]
#
# Prints vLLM-style result blocks; bench/RESULTS.md records them.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build/release}
peer=${2:-}
bin=$build/shardlm
port=${PORT:-18123}
rates=${RATES:-"1 4"}
prompts=${NUM_PROMPTS:-40}
args=(--num-prompts "$prompts" --input-len "${INPUT_LEN:-128}" --output-len "${OUTPUT_LEN:-64}" --seed 1)

"$bin" serve --host 127.0.0.1 --port "$port" --log-level warning &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.2
done
for rate in $rates; do
  echo "### shardlm, request rate $rate/s"
  "$bin" bench serve --base-url "http://127.0.0.1:$port" --request-rate "$rate" "${args[@]}"
  if [ -n "$peer" ]; then
    echo "### peer $peer, request rate $rate/s"
    "$bin" bench serve --base-url "$peer" --request-rate "$rate" "${args[@]}"
  fi
done
