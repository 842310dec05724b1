#!/usr/bin/env python3
"""test_layouts.py -- every parallel layout gives the answers of one process.

Runs `shardlm generate --prompts-file` (greedy, top-5 logprobs) on a model
with tensor/pipeline layouts started by shardlm itself over MPI, and checks
each against the single-process run: the same tokens, and logprobs within
1e-4. Where the model has transformers' own golden outputs, the
single-process run is checked against those first.

usage: test_layouts.py SHARDLM MODEL_DIR LAYOUT [LAYOUT ...]   (LAYOUT: TPxPP, e.g. 2x1)
exit 77 (skip) when MODEL_DIR does not exist.
"""
import json
import os
import subprocess
import sys
import tempfile

TOL = 1e-4


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


def run(shardlm, model_dir, prompts, tp, pp):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for p in prompts:
            f.write(json.dumps(p) + "\n")
        path = f.name
    env = dict(os.environ, SHARDLM_COMM_TIMEOUT="60")
    cmd = [shardlm, "generate", model_dir, "--prompts-file", path, "--temperature", "0", "--ignore-eos",
           "--max-num-batched-tokens", "32", "--kv-cache-memory", "256M",
           "--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    os.unlink(path)
    if out.returncode != 0:
        sys.exit(f"tp={tp} pp={pp}: shardlm generate failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return [json.loads(line)["outputs"][0] for line in out.stdout.splitlines() if line.strip()]


def compare(base, got, what):
    bad = 0
    for i, (a, b) in enumerate(zip(base, got)):
        if a["token_ids"] != b["token_ids"]:
            print(f"{what}: prompt {i}: tokens {b['token_ids']} != {a['token_ids']}")
            bad += 1
            continue
        for step, (ta, tb) in enumerate(zip(a["top_logprobs"], b["top_logprobs"])):
            want = {tok: lp for tok, lp in ta}
            for tok, lp in tb:
                if tok in want and abs(want[tok] - lp) > TOL:
                    print(f"{what}: prompt {i} step {step}: logprob of {tok} {lp:.7f} vs {want[tok]:.7f}")
                    bad += 1
    if len(base) != len(got):
        print(f"{what}: {len(got)} results, expected {len(base)}")
        bad += 1
    return bad


def main():
    shardlm, model_dir, layouts = sys.argv[1], sys.argv[2], sys.argv[3:]
    if not os.path.isdir(model_dir):
        print(f"SKIP: no model at {model_dir}")
        sys.exit(77)
    prompts, expected = prompts_for(model_dir)
    base = run(shardlm, model_dir, prompts, 1, 1)
    bad = 0
    if expected:
        for i, (out, want) in enumerate(zip(base, expected)):
            if out["token_ids"] != want:
                print(f"tp=1 pp=1: prompt {i}: {out['token_ids']} != transformers' {want}")
                bad += 1
    for layout in layouts:
        tp, pp = (int(x) for x in layout.split("x"))
        got = run(shardlm, model_dir, prompts, tp, pp)
        n = compare(base, got, f"tp={tp} pp={pp}")
        print(f"tp={tp} pp={pp}: {'ok' if n == 0 else f'{n} differences'} ({len(got)} prompts)")
        bad += n
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
