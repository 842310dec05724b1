#!/usr/bin/env python3
"""test_pipeline.py -- pipelined layouts with many concurrent prompts give the answers of one process.

With pipeline stages several micro-batches are in flight at once, so the
sequences of one run are split between steps differently from a single
process. Runs `shardlm generate --prompts-file` with 12 prompts of different
lengths at once (greedy with top-5 logprobs, and seeded sampling), one of
them longer than the step budget (chunked prefill inside the pipelined run),
and checks every layout against the single-process run: the same tokens,
logprobs within 1e-4.

usage: test_pipeline.py SHARDLM MODEL_DIR LAYOUT [LAYOUT ...]   (LAYOUT: TPxPP, e.g. 2x2)
exit 77 (skip) when MODEL_DIR does not exist.
"""
import json
import os
import random
import sys

from layout_check import arguments, check_layouts, run

# a 32-token step budget: the 90-token prompt is prefilled in chunks; all 12 sequences in one batch
EXTRA = ("--max-num-batched-tokens", "32", "--max-num-seqs", "12")


def prompts_for(model_dir):
    vocab = json.load(open(os.path.join(model_dir, "config.json")))["vocab_size"]
    rng = random.Random(1234)
    prompts = []
    for i, length in enumerate([3, 90, 7, 12, 5, 33, 17, 2, 26, 9, 41, 14]):
        p = {"prompt_token_ids": [rng.randrange(3, vocab) for _ in range(length)], "max_tokens": 6 + i % 5}
        if i % 2:  # seeded sampling: the same random stream whatever the batching
            p.update(temperature=0.9, top_p=0.95, seed=100 + i)
        else:
            p.update(temperature=0.0, logprobs=5)
        prompts.append(p)
    return prompts


def main():
    shardlm, model_dir, layouts = arguments()
    prompts = prompts_for(model_dir)
    base = run(shardlm, model_dir, prompts, 1, 1, EXTRA)
    if any(len(o["token_ids"]) != p["max_tokens"] for o, p in zip(base, prompts)):
        sys.exit("tp=1 pp=1: a prompt did not get its max_tokens")
    sys.exit(1 if check_layouts(shardlm, model_dir, prompts, base, layouts, EXTRA) else 0)


if __name__ == "__main__":
    main()
