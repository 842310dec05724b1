#!/usr/bin/env python3
"""test_layouts.py -- every parallel layout gives the answers of one process.

Runs `shardlm generate --prompts-file` (greedy, top-5 logprobs) on a model
with tensor/pipeline layouts started by shardlm itself over MPI, and checks
each against the single-process run: the same tokens, and logprobs within
1e-4. Where the model has transformers' own golden outputs, the
single-process run is checked against those first.

usage: test_layouts.py SHARDLM MODEL_DIR LAYOUT [LAYOUT ...]   (LAYOUT: TPxPP, e.g. 2x1)
exit 77 (skip) when MODEL_DIR does not exist.

On a GPU (bench/gpu.sh layouts): SHARDLM_LAYOUT_ARGS adds arguments to every
run (e.g. "--dtype float32": the fixtures' weights are bf16, and so are a GPU's
activations and all-reduces unless converted), SHARDLM_LAYOUT_TOL replaces the logprob tolerance
(sums grouped differently across ranks round differently there). There the
single-process run is not held to transformers' tokens (test_golden holds the
GPU to them within a tolerance, near-ties allowed).
"""
import json
import os
import sys

from layout_check import arguments, check_layouts, run

EXTRA = ("--temperature", "0", "--max-num-batched-tokens", "32", *os.environ.get("SHARDLM_LAYOUT_ARGS", "").split())


def prompts_for(model_dir):
    """Batched prompts of several lengths (one long enough to prefill in chunks), as token ids."""
    golden = os.path.join(model_dir, "golden.json")
    if os.path.exists(golden):
        seqs = json.load(open(golden))["sequences"]
        prompts = [{"prompt_token_ids": s["prompt"], "max_tokens": len(s["greedy"])} for s in seqs]
        expected = [s["greedy"] for s in seqs]
    else:
        prompts = [{"prompt": "The capital of France is", "max_tokens": 12},
                   {"prompt": "def fibonacci(n):", "max_tokens": 12},
                   {"prompt": "Once upon a time " * 12, "max_tokens": 8}]
        expected = None
    for p in prompts:
        p["logprobs"] = 5
    return prompts, expected


def main():
    shardlm, model_dir, layouts = arguments()
    prompts, expected = prompts_for(model_dir)
    base = run(shardlm, model_dir, prompts, 1, 1, EXTRA)
    bad = 0
    if expected and not os.environ.get("SHARDLM_LAYOUT_ARGS"):
        for i, (out, want) in enumerate(zip(base, expected)):
            if out["token_ids"] != want:
                print(f"tp=1 pp=1: prompt {i}: {out['token_ids']} != transformers' {want}")
                bad += 1
    bad += check_layouts(shardlm, model_dir, prompts, base, layouts, EXTRA)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
