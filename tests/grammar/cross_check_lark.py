"""cross_check_lark.py -- our Lark grammars against Lark itself.

For every grammar in --grammars (*.lark), lark_driver prints --count random
walks through our matcher that ended accepting (one JSON string per line);
Lark (Earley, lexer="dynamic_complete", the lexer that, like our grammars
over bytes, tries every way of cutting the text into terminals) must parse
each. Then three random edits of each output: our matcher (lark_driver
--check) must accept exactly those Lark parses with nothing ignored after
the last token (our grammars allow no trailing ignored text; see lark.c).
Exit 77 when the `lark` package is missing, 1 on a failure.
"""
import argparse
import json
import pathlib
import random
import subprocess
import sys

try:
    import lark
    lark.Lark  # not a folder named lark on the path
except (ImportError, AttributeError):
    print("SKIP: the Python package `lark` is not installed")
    sys.exit(77)


def lark_reads(parser, text):
    """Whether Lark parses text with no ignored text after the last token."""
    try:
        tree = parser.parse(text)
    except lark.exceptions.LarkError:
        return False
    end = tree.end_pos if isinstance(tree, lark.Token) else getattr(tree.meta, "end_pos", 0)
    return end == len(text)


def mutate(text, rng):
    """text with one random edit: a character dropped, doubled, or replaced."""
    if not text:
        return " "
    i = rng.randrange(len(text))
    kind = rng.randrange(3)
    if kind == 0:
        return text[:i] + text[i + 1:]
    if kind == 1:
        return text[:i] + text[i] + text[i:]
    return text[:i] + (rng.choice(text) if rng.randrange(4) else " ") + text[i + 1:]


def check_grammar(path, args, rng):
    """Failures found for one grammar file (printed), as a count."""
    # every token kept in the tree, so its end is the last token's (lark_reads)
    parser = lark.Lark(path.read_text(), start="start", parser="earley", lexer="dynamic_complete",
                       propagate_positions=True, keep_all_tokens=True)
    out = subprocess.run([args.driver, str(path), str(args.count), str(args.seed)],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        print(f"FAIL {path.name}: driver exit {out.returncode}: {out.stderr.strip()}")
        return 1
    samples = [json.loads(line) for line in out.stdout.split("\n") if line]  # not splitlines: U+2028 is in outputs
    bad = 0
    for text in samples:
        try:
            parser.parse(text)
        except lark.exceptions.LarkError as e:
            if bad < 3:
                print(f"FAIL {path.name}: Lark refuses our output {text!r}: {str(e).splitlines()[0]}")
            bad += 1
    edits = [mutate(t, rng) for t in samples for _ in range(3)]
    ours = subprocess.run([args.driver, str(path), "--check"], input="".join(json.dumps(t) + "\n" for t in edits),
                          capture_output=True, text=True, timeout=120)
    verdicts = ours.stdout.split()
    if ours.returncode != 0 or len(verdicts) != len(edits):
        print(f"FAIL {path.name}: driver --check exit {ours.returncode}: {ours.stderr.strip()}")
        return bad + 1
    differ = 0
    for text, verdict in zip(edits, verdicts):
        theirs = lark_reads(parser, text)
        if theirs != (verdict == "1"):
            if differ < 3:
                print(f"FAIL {path.name}: on {text!r} Lark says {theirs}, we say {verdict == '1'}")
            differ += 1
    longest = max((len(s) for s in samples), default=0)
    print(f"{'ok  ' if not bad and not differ and samples else 'FAIL'} {path.name}: {len(samples)} outputs "
          f"(longest {longest} characters), {bad} refused by Lark {lark.__version__}; "
          f"{len(edits)} edits, {sum(v == '1' for v in verdicts)} accepted, {differ} judged otherwise by Lark")
    return bad + differ + (not samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--grammars", required=True)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", default="1")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    failed = 0
    for path in sorted(pathlib.Path(args.grammars).glob("*.lark")):
        failed += check_grammar(path, args, rng)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
