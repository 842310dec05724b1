#!/usr/bin/env python3
"""test_golden_diff.py TOOL -- tools/golden_diff.py on two goldens whose answer is known.

Two sequences. The first: positions differ by 0.25 at most while their context is the same (the
prompt's and the first greedy token's), greedy steps agree until step 1, where the tokens differ
(that step still counts: the same context, 0.5 apart); step 2 (3.0 apart) and the position after
the diverging token (8.0) must not count. The second: one shared token 0.125 apart, a
token only one side lists (not compared). Worst 0.5, 7 rows, 1 sequence diverged. Standard library only.
"""
import json
import os
import subprocess
import sys
import tempfile

TRUTH = {"sequences": [
    {"prompt": [5, 6], "greedy": [7, 8, 9],
     "positions": [[[1, -0.5], [2, -1.0]], [[1, -0.25], [3, -2.0]], [[4, -1.0]], [[4, -1.0]]],
     "steps": [[[7, -0.1], [2, -3.0]], [[8, -0.2], [9, -0.3]], [[9, -0.1]]]},
    {"prompt": [5], "greedy": [1],
     "positions": [[[1, -1.0], [2, -2.0]]],
     "steps": [[[1, -1.0], [2, -2.0]]]},
]}
OTHER = {"sequences": [
    {"prompt": [5, 6], "greedy": [7, 9, 9],
     "positions": [[[1, -0.25], [2, -1.0]], [[1, -0.25], [3, -2.0]], [[4, -1.125]], [[4, -9.0]]],
     "steps": [[[7, -0.1], [2, -3.0]], [[9, -0.1], [8, -0.7]], [[9, -3.1]]]},
    {"prompt": [5], "greedy": [1],
     "positions": [[[1, -1.125], [7, -2.0]]],
     "steps": [[[1, -1.0], [2, -2.0]]]},
]}


def run(tool, *args):
    return subprocess.run([sys.executable, tool, *args], capture_output=True, text=True)


def main():
    tool = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        a, b = os.path.join(d, "a.json"), os.path.join(d, "b.json")
        json.dump(TRUTH, open(a, "w"))
        json.dump(OTHER, open(b, "w"))
        worst = run(tool, a, b, "--worst").stdout.strip()
        line = run(tool, a, b).stdout.strip()
        json.dump({"sequences": [dict(TRUTH["sequences"][0], prompt=[1])]}, open(b, "w"))
        refused = run(tool, a, b)
    ok = True
    for got, want in ((worst, "0.5000"), (line, "worst |logprob difference| 0.5000 over 7 rows; greedy tokens "
                                                  "diverge in 1 sequences")):
        if got != want:
            print(f"FAIL: got {got!r}, want {want!r}")
            ok = False
    if refused.returncode == 0 or "different prompts" not in refused.stderr:
        print(f"FAIL: goldens of different prompts were compared: {refused.stdout!r} {refused.stderr!r}")
        ok = False
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
