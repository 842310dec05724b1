#!/usr/bin/env bash
# run-llamacpp.sh -- the llama.cpp peer on the default model, in one go:
# writes the BF16 GGUF of the converted model (tools/hf_to_gguf.py) once,
# checks that llama.cpp's greedy tokens on it agree with transformers'
# (tests/fixtures/smollm2/golden.json; once per GGUF), then prints one
# benchmark as JSON:
#   run-llamacpp.sh [THREADS]                 batch-1 prefill / decode (llamacpp_bench.py)
#   run-llamacpp.sh THREADS throughput N      N requests of 128 + 128 tokens at once in
#                                             llama.cpp's batched mode (llamacpp_throughput.py),
#                                             the peer of `shardlm bench throughput --num-prompts N`
# THREADS defaults to all cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
threads=${1:-$(nproc)}
mode=${2:-latency}
model="$root/models/SmolLM2-135M-Instruct"
gguf="$root/build/peers/SmolLM2-135M-Instruct.bf16.gguf"
golden="$root/tests/fixtures/smollm2/golden.json"
golden_ok="$root/build/peers/llamacpp_golden.ok"
peers_python="$root/build/venv-peers/bin/python"

case "$mode" in
  latency) ;;
  throughput) [[ "${3:-}" =~ ^[1-9][0-9]*$ ]] || { echo "usage: run-llamacpp.sh THREADS throughput N" >&2; exit 2; } ;;
  *) echo "usage: run-llamacpp.sh [THREADS] | run-llamacpp.sh THREADS throughput N" >&2; exit 2 ;;
esac

"$root/tools/get-default-model.sh" >&2
"$root/bench/peers/venv-peers.sh" >&2
if [ ! -s "$gguf" ] || [ "$model/model.safetensors" -nt "$gguf" ]; then
  mkdir -p "$(dirname "$gguf")"
  "$root/build/venv/bin/python" "$root/tools/hf_to_gguf.py" "$model" "$gguf.tmp" --outtype bf16 >&2 # stdout is the JSON
  mv "$gguf.tmp" "$gguf"
fi
if [ ! -f "$golden_ok" ] || [ "$gguf" -nt "$golden_ok" ] || [ "$golden" -nt "$golden_ok" ]; then
  rm -f "$golden_ok"
  "$peers_python" "$root/bench/peers/llamacpp_golden.py" "$gguf" "$golden" \
    --threads "$threads" > "$root/build/peers/llamacpp_golden.json" ||
    { echo "run-llamacpp: llama.cpp disagrees with golden.json; see build/peers/llamacpp_golden.json" >&2; exit 1; }
  touch "$golden_ok"
fi
echo "run-llamacpp: greedy tokens agree with golden.json" >&2
if [ "$mode" = throughput ]; then
  "$peers_python" "$root/bench/peers/llamacpp_throughput.py" "$gguf" --threads "$threads" --concurrency "$3" \
    --input-len 128 --output-len 128
else
  "$peers_python" "$root/bench/peers/llamacpp_bench.py" "$gguf" --threads "$threads"
fi
