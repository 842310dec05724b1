#!/bin/sh
# no_gpu.sh SHARDLM MODEL -- a CUDA build where no GPU is visible (CUDA_VISIBLE_DEVICES
# empty, as on CI): `--device cuda` is one sentence naming the problem and a non-zero
# exit, never a crash; with no --device the CPU computes, and says so.
exe=$1 model=$2
export CUDA_VISIBLE_DEVICES=
out=$("$exe" generate "$model" --device cuda --prompt-ids 1,2,3 --max-tokens 2 2>&1)
rc=$?
if [ $rc -ne 1 ]; then echo "--device cuda without a GPU: exit $rc, want 1: $out"; exit 1; fi
case "$out" in
  *"no GPU is visible"*) ;;
  *) echo "--device cuda without a GPU: unexpected message: $out"; exit 1 ;;
esac
out=$("$exe" generate "$model" --prompt-ids 1,2,3 --max-tokens 2 --temperature 0 2>&1) || { echo "default device failed: $out"; exit 1; }
case "$out" in
  *" on cpu ("*) echo "ok: $(echo "$out" | grep -m1 'no GPU\|on cpu')" ;;
  *) echo "without a GPU the default device is not the CPU: $out"; exit 1 ;;
esac
