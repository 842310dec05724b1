#!/usr/bin/env bash
# venv.sh -- a Python virtual environment holding pinned requirements:
# by default the test environment build/venv with tests/requirements.txt.
# Idempotent: nothing happens while the requirements are unchanged.
# usage: venv.sh [VENV_DIR REQUIREMENTS_FILE]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/build/venv}
req=${2:-$root/tests/requirements.txt}
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then exit 0; fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check --no-input -r "$req"
cp "$req" "$stamp"
