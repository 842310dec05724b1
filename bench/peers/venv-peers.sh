#!/usr/bin/env bash
# venv-peers.sh -- the Python environment of the peers bench/ measures against
# (build/venv-peers, from bench/requirements-peers.txt). llama-cpp-python
# compiles llama.cpp from source for this machine's CPU (GGML_NATIVE), which
# takes a while on 2 cores. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
echo "venv-peers: installing the pinned peers (llama.cpp compiles from source the first time)"
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" \
  "$root/tools/venv.sh" "$root/build/venv-peers" "$root/bench/requirements-peers.txt"
