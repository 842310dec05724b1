"""Runs examples/simple_generate and checks what it prints against
transformers' greedy tokens (golden.json). ctest runs it in two ways:

    c_example_check.py fixture EXE FIXTURE_DIR   # --prompt-ids, a tiny fixture model
    c_example_check.py default EXE               # no arguments: the default model

and reads exit 77 as "skipped" (the default model is absent)."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SKIP = 77


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    print(proc.stdout)
    blocks = re.findall(r"^prompt \d+: .*?\ntext: (.*?)\ntoken_ids:(.*?)\nfinish_reason: (\w+)", proc.stdout, re.S | re.M)
    return [(text, [int(t) for t in ids.split()], finish) for text, ids, finish in blocks], proc.stdout


def expect(cond, what):
    if not cond:
        sys.exit(f"FAIL: {what}")


def check_fixture(exe, fixture):
    with open(os.path.join(fixture, "golden.json"), encoding="utf-8") as f:
        seqs = json.load(f)["sequences"]
    cmd = [exe, "--model", fixture, "--max-tokens", str(len(seqs[0]["greedy"]))]
    for s in seqs:
        cmd += ["--prompt-ids", ",".join(map(str, s["prompt"]))]
    results, out = run(cmd)
    expect(len(results) == len(seqs), f"{len(seqs)} results expected")
    for (_, ids, finish), s in zip(results, seqs):
        expect(ids == s["greedy"], f"tokens {ids} != transformers' {s['greedy']}")
        expect(finish == "length", f"finish_reason {finish}")
    n_prompt = sum(len(s["prompt"]) for s in seqs)
    expect(f"usage: {n_prompt} prompt tokens, {16 * len(seqs)} generated tokens" in out, "usage line")


def check_default(exe):
    model = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct")
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        print(f"SKIP: the default model is not at {model}: run tools/get-default-model.sh")
        sys.exit(SKIP)
    with open(os.path.join(ROOT, "tests", "fixtures", "smollm2", "golden.json"), encoding="utf-8") as f:
        cases = [c for c in json.load(f)["cases"] if "text" in c][:2]
    results, _ = run([exe])
    expect(len(results) == 2, "two results expected")
    for (text, ids, _), case in zip(results, cases):
        expect(ids == case["greedy_ids"], f"tokens {ids} != transformers' {case['greedy_ids']}")
        expect(text == case["greedy_text"], f"text {text!r} != {case['greedy_text']!r}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "fixture":
        check_fixture(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "default":
        check_default(sys.argv[2])
    else:
        sys.exit(__doc__)
    print("OK")
