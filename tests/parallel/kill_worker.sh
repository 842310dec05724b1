#!/usr/bin/env bash
# kill_worker.sh -- a worker rank killed mid-run: the job reports it and
# exits non-zero within a bounded time (the communication deadline), never
# hangs. usage: kill_worker.sh SHARDLM FIXTURE_DIR [TPxPP]   (default 2x1;
# with pipeline stages the workers die while several micro-batches are in flight)
set -uo pipefail
shardlm=$1 model=$2 layout=${3:-2x1}
tp=${layout%x*} pp=${layout#*x}
export SHARDLM_COMM_TIMEOUT=10
log=$(mktemp) prompts=$(mktemp)
for i in $(seq 400); do echo '{"prompt_token_ids": [5, 6, 7], "max_tokens": 250}'; done > "$prompts"
start=$(date +%s)
"$shardlm" generate "$model" --prompts-file "$prompts" --max-model-len 256 --ignore-eos \
  --tensor-parallel-size "$tp" --pipeline-parallel-size "$pp" --temperature 0 > "$log" 2>&1 &
job=$!
for _ in $(seq 100); do pgrep -f "shardlm worker" > /dev/null && break; sleep 0.1; done
sleep 1
pkill -9 -f "shardlm worker" || { echo "no worker to kill"; kill $job; exit 1; }
status=0
wait $job || status=$?
elapsed=$(( $(date +%s) - start ))
grep -E "timed out|aborting" "$log" | head -3
rm -f "$log" "$prompts"
echo "exit status $status after ${elapsed}s"
[ "$status" -ne 0 ] && [ "$elapsed" -lt 60 ]
