#!/usr/bin/env python3
"""serve_layouts.py -- the HTTP server gives the answers of one process in every layout.

Starts `shardlm serve MODEL` once per layout (ranks started by shardlm itself),
sends the same greedy /v1/completions requests with top-5 logprobs, and checks
that every layout returns the single-process tokens and logprobs within 1e-4.

usage: serve_layouts.py SHARDLM MODEL_DIR LAYOUT...   (LAYOUT: TPxPP)
"""
import json
import sys
import urllib.request

from layout_check import arguments, serving

TOL = 1e-4
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time " * 10]


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def answers(shardlm, model, tp, pp):
    with serving(shardlm, model, tp, pp, ("--kv-cache-memory", "256M")) as port:
        out = []
        for p in PROMPTS:
            r = post(port, {"prompt": p, "max_tokens": 12, "temperature": 0, "logprobs": 5})
            lp = r["choices"][0]["logprobs"]
            out.append((lp["tokens"], lp["top_logprobs"]))
        return out


def main():
    shardlm, model, layouts = arguments()
    base = answers(shardlm, model, 1, 1)
    bad = 0
    for layout in layouts:
        tp, pp = (int(x) for x in layout.split("x"))
        got = answers(shardlm, model, tp, pp)
        n = 0
        for i, ((tokens_a, top_a), (tokens_b, top_b)) in enumerate(zip(base, got)):
            if tokens_a != tokens_b:
                print(f"tp={tp} pp={pp} prompt {i}: {tokens_b} != {tokens_a}")
                n += 1
                continue
            for step, (ta, tb) in enumerate(zip(top_a, top_b)):
                for tok, lp in tb.items():
                    if tok in ta and abs(ta[tok] - lp) > TOL:
                        print(f"tp={tp} pp={pp} prompt {i} step {step}: {tok!r} {lp:.7f} vs {ta[tok]:.7f}")
                        n += 1
        print(f"tp={tp} pp={pp}: {'ok' if n == 0 else f'{n} differences'} over HTTP")
        bad += n
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
