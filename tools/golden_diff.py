#!/usr/bin/env python3
"""golden_diff.py TRUTH_JSON OTHER_JSON -- how far one golden (make_golden.py's
or make_fixtures.py's format) is from another made over the same prompts: the
worst |logprob difference| over the top-5 tokens both list, at every prompt
position and greedy step whose context is the same in both (a sequence's
steps up to and including the first where the two greedy tokens differ).

bench/gpu.sh measures transformers' own bfloat16 error this way (its bf16
golden against its float32 one on the same GPU) and sizes shardlm's bf16
tolerance from it: fixtures with tied embeddings have logits about five times
larger than the others, and bf16's relative error grows with them.

Prints the worst difference alone (--worst) or a line of text."""
import argparse
import json


def row_diffs(a, b):
    """|logprob differences| of the tokens two top-5 rows ([[token, logprob], ...]) share."""
    other = {t: lp for t, lp in b}
    return [abs(lp - other[t]) for t, lp in a if t in other]


def compare(truth, other):
    """(worst difference, rows compared, sequences whose greedy tokens diverge)"""
    worst, rows, diverged = 0.0, 0, 0
    for s, o in zip(truth["sequences"], other["sequences"]):
        if s["prompt"] != o["prompt"]:
            raise SystemExit("golden_diff: the two goldens were made over different prompts")
        n = min(len(s["greedy"]), len(o["greedy"]))
        first = next((k for k in range(n) if s["greedy"][k] != o["greedy"][k]), n)
        diverged += first < n
        same_context = len(s["prompt"]) + first  # positions whose context is the same in both
        pairs = list(zip(s["steps"][:first + 1], o["steps"][:first + 1]))
        pairs += list(zip(s["positions"][:same_context], o["positions"][:same_context]))
        for a, b in pairs:
            d = row_diffs(a, b)
            rows += 1
            worst = max([worst] + d)
    return worst, rows, diverged


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("truth")
    ap.add_argument("other")
    ap.add_argument("--worst", action="store_true", help="print the worst difference only")
    args = ap.parse_args()
    worst, rows, diverged = compare(json.load(open(args.truth)), json.load(open(args.other)))
    if args.worst:
        print(f"{worst:.4f}")
    else:
        print(f"worst |logprob difference| {worst:.4f} over {rows} rows; greedy tokens diverge in {diverged} sequences")


if __name__ == "__main__":
    main()
