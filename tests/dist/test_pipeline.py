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
import subprocess
import sys
import tempfile

TOL = 1e-4
BUDGET = 32  # --max-num-batched-tokens: the 90-token prompt is prefilled in chunks


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


def run(shardlm, model_dir, prompts, tp, pp):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for p in prompts:
            f.write(json.dumps(p) + "\n")
        path = f.name
    env = dict(os.environ, SHARDLM_COMM_TIMEOUT="60")
    cmd = [shardlm, "generate", model_dir, "--prompts-file", path, "--ignore-eos",
           "--max-num-batched-tokens", str(BUDGET), "--max-num-seqs", "12", "--kv-cache-memory", "256M",
           "--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    os.unlink(path)
    if out.returncode != 0:
        sys.exit(f"tp={tp} pp={pp}: shardlm generate failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return [json.loads(line)["outputs"][0] for line in out.stdout.splitlines() if line.strip()]


def compare(base, got, what):
    bad = 0
    if len(base) != len(got):
        print(f"{what}: {len(got)} results, expected {len(base)}")
        return 1
    for i, (a, b) in enumerate(zip(base, got)):
        if a["token_ids"] != b["token_ids"]:
            print(f"{what}: prompt {i}: tokens {b['token_ids']} != {a['token_ids']}")
            bad += 1
            continue
        for step, (ta, tb) in enumerate(zip(a.get("top_logprobs") or [], b.get("top_logprobs") or [])):
            want = {tok: lp for tok, lp in ta}
            for tok, lp in tb:
                if tok in want and abs(want[tok] - lp) > TOL:
                    print(f"{what}: prompt {i} step {step}: logprob of {tok} {lp:.7f} vs {want[tok]:.7f}")
                    bad += 1
    return bad


def main():
    shardlm, model_dir, layouts = sys.argv[1], sys.argv[2], sys.argv[3:]
    if not os.path.isdir(model_dir):
        print(f"SKIP: no model at {model_dir}")
        sys.exit(77)
    prompts = prompts_for(model_dir)
    base = run(shardlm, model_dir, prompts, 1, 1)
    if any(len(o["token_ids"]) != p["max_tokens"] for o, p in zip(base, prompts)):
        sys.exit("tp=1 pp=1: a prompt did not get its max_tokens")
    bad = 0
    for layout in layouts:
        tp, pp = (int(x) for x in layout.split("x"))
        got = run(shardlm, model_dir, prompts, tp, pp)
        n = compare(base, got, f"tp={tp} pp={pp}")
        print(f"tp={tp} pp={pp}: {'ok' if n == 0 else f'{n} differences'} ({len(got)} concurrent prompts)")
        bad += n
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
