#!/usr/bin/env bash
# run-llamacpp.sh -- the llama.cpp peer on the default model, in one go:
# writes the BF16 GGUF of the converted model (tools/hf_to_gguf.py) once,
# checks that llama.cpp's greedy tokens on it agree with transformers'
# (tests/fixtures/smollm2/golden.json), then prints the prefill / decode
# benchmark as JSON. Usage: run-llamacpp.sh [THREADS] (default: all cores).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
threads=${1:-$(nproc)}
model="$root/models/SmolLM2-135M-Instruct"
gguf="$root/build/peers/SmolLM2-135M-Instruct.bf16.gguf"
peers_python="$root/build/venv-peers/bin/python"

"$root/tools/get-default-model.sh"
"$root/bench/peers/venv-peers.sh"
if [ ! -s "$gguf" ] || [ "$model/model.safetensors" -nt "$gguf" ]; then
  mkdir -p "$(dirname "$gguf")"
  "$root/build/venv/bin/python" "$root/tools/hf_to_gguf.py" "$model" "$gguf.tmp" --outtype bf16
  mv "$gguf.tmp" "$gguf"
fi
"$peers_python" "$root/bench/peers/llamacpp_golden.py" "$gguf" "$root/tests/fixtures/smollm2/golden.json" \
  --threads "$threads" > "$root/build/peers/llamacpp_golden.json" ||
  { echo "run-llamacpp: llama.cpp disagrees with golden.json; see build/peers/llamacpp_golden.json" >&2; exit 1; }
echo "run-llamacpp: greedy tokens agree with golden.json" >&2
"$peers_python" "$root/bench/peers/llamacpp_bench.py" "$gguf" --threads "$threads"
