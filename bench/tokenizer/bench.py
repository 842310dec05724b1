#!/usr/bin/env python3
"""Encode throughput, shardlm vs Hugging Face `tokenizers`, single thread.

Builds a deterministic ~4 MB mixed corpus (English prose, code, CJK, Korean,
the shared cases' texts) split into ~4 KB documents, then for each tokenizer
runs bench_tokenizer (shardlm) and `tokenizers` (Tokenizer.encode, one call
per document, TOKENIZERS_PARALLELISM=false, RAYON_NUM_THREADS=1) on the same
documents in the same run, RUNS times each, and prints median MB/s, the
ratio, and whether the token counts agree.

usage: bench.py --bench PATH/bench_tokenizer [--runs 5] [--mb 4] TOKENIZER_DIR...
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
from tokenizers import Tokenizer  # noqa: E402

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no will can more about said model "
         "inference server token latency throughput memory cache kernel tensor parallel pipeline request").split()
CODE = ["def {f}(x, y):\n    \"\"\"Return the {f} of x and y.\"\"\"\n    if x > y:\n        return x - y\n    return y * 2\n\n",
        "static int {f}(const char *s, size_t n) {{\n    for (size_t i = 0; i < n; i++)\n        if (s[i] == '\\n') return (int)i;\n    return -1;\n}}\n\n",
        "for (let i = 0; i < {n}; ++i) {{ total += values[i] ** 2; }} // {f}\n",
        "SELECT {f}, COUNT(*) FROM events WHERE ts > {n} GROUP BY {f};\n"]


def corpus(n_bytes, shared_texts):
    rng = random.Random(20240601)
    docs, size = [], 0
    while size < n_bytes:
        kind = rng.randrange(10)
        if kind < 5:
            doc = " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randrange(5, 20))).capitalize() + "."
                           for _ in range(rng.randrange(10, 40)))
        elif kind < 8:
            doc = "".join(rng.choice(CODE).format(f=rng.choice(WORDS) + "_" + rng.choice(WORDS), n=rng.randrange(1000))
                          for _ in range(rng.randrange(5, 30)))
        elif kind == 8:
            doc = "".join(chr(rng.randrange(0x4E00, 0x9FA6)) + ("，" if rng.random() < 0.1 else "")
                          for _ in range(rng.randrange(200, 1200)))
        else:
            doc = " ".join("".join(chr(rng.randrange(0xAC00, 0xD7A4)) for _ in range(rng.randrange(1, 5)))
                           for _ in range(rng.randrange(100, 500))) + " " + rng.choice(shared_texts)
        docs.append(doc)
        size += len(doc.encode())
    return docs


def bench_hf(path, docs, runs):
    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    n_bytes = sum(len(d.encode()) for d in docs)
    rates, tokens = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        tokens = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
        rates.append(n_bytes / (time.perf_counter() - t0) / 1e6)
    return statistics.median(rates), tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=float, default=4.0)
    ap.add_argument("tokenizers", nargs="+")
    args = ap.parse_args()
    shared = []
    for p in args.tokenizers:
        cases = os.path.join(p, "cases.json")
        if os.path.exists(cases):
            shared += [c["text"] for c in json.load(open(cases))["cases"] if c["text"]]
    docs = corpus(int(args.mb * 1e6), shared or ["hello world"])
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write("\0".join(docs).encode())
        text_path = f.name
    print(f"corpus: {len(docs)} documents, {os.path.getsize(text_path) / 1e6:.2f} MB; runs: {args.runs}")
    print(f"{'tokenizer':<28} {'shardlm MB/s':>12} {'HF MB/s':>10} {'ratio':>7}  tokens")
    try:
        for p in args.tokenizers:
            out = subprocess.run([args.bench, p, text_path, str(args.runs)], capture_output=True, text=True, check=True)
            ours = json.loads(out.stdout.strip().splitlines()[-1])
            hf_rate, hf_tokens = bench_hf(p, docs, args.runs)
            same = "same" if hf_tokens == ours["tokens"] else f"DIFFER ({ours['tokens']} vs {hf_tokens})"
            print(f"{os.path.basename(p.rstrip('/')):<28} {ours['mb_per_s']:>12.2f} {hf_rate:>10.2f} "
                  f"{ours['mb_per_s'] / hf_rate:>6.2f}x  {same}")
    finally:
        os.unlink(text_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
