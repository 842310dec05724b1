#!/usr/bin/env python3
"""llamacpp_golden.py -- run llama.cpp greedily on the prompts of
tests/fixtures/smollm2/golden.json (recorded with transformers on the
converted model) and say how many leading tokens agree. With the BF16 GGUF
that tools/hf_to_gguf.py writes, this checks the GGUF writer and the
conversion together; bf16 rounding inside llama.cpp may make long runs
diverge where the top-2 logprobs are close. Prints JSON; exit 1 when a case
agrees on fewer than --min-agree tokens.

Usage: llamacpp_golden.py MODEL.gguf GOLDEN.json [--threads N] [--min-agree K]
"""

import argparse
import json
import sys

from llamacpp_peer import greedy_next, open_model


def run_case(llm, case, eos):
    llm.reset()
    llm.eval(case["prompt_ids"])
    out = []
    for _ in range(len(case["greedy_ids"])):
        tok = greedy_next(llm)
        out.append(tok)
        if tok == eos:
            break
        llm.eval([tok])
    pairs = list(zip(out, case["greedy_ids"]))
    agree = next((i for i, (a, b) in enumerate(pairs) if a != b), len(pairs))
    return {"name": case["name"], "agree": agree, "of": len(case["greedy_ids"]), "llamacpp_ids": out,
            "golden_ids": case["greedy_ids"]}


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("golden")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-agree", type=int, default=8)
    args = ap.parse_args(argv)
    with open(args.golden, encoding="utf-8") as f:
        golden = json.load(f)
    llm = open_model(args.model, args.threads, n_ctx=512)
    results = [run_case(llm, c, golden["eos_token_id"]) for c in golden["cases"]]
    ok = all(r["agree"] >= min(args.min_agree, r["of"]) for r in results)
    print(json.dumps({"model": args.model, "ok": ok, "cases": results}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
