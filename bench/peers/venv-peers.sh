#!/usr/bin/env bash
# venv-peers.sh -- the Python environment of the peers bench/ measures against
# (build/venv-peers, from bench/requirements-peers.txt). llama-cpp-python
# compiles llama.cpp from source for this machine's CPU (GGML_NATIVE), which
# takes a while on 2 cores. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/build/venv-peers"
req="$root/bench/requirements-peers.txt"
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then exit 0; fi
python3 -m venv "$venv"
echo "venv-peers: installing $(grep -c '==' "$req") pinned packages; llama.cpp compiles from source"
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" \
  "$venv/bin/pip" install --disable-pip-version-check --no-input -r "$req"
cp "$req" "$stamp"
