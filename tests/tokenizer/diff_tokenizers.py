#!/usr/bin/env python3
"""Differential test: shardlm's tokenizer against Hugging Face `tokenizers`.

Generates strings from a seeded RNG (random Unicode from every plane, long
whitespace runs, CJK and Korean, emoji with ZWJ and skin tones, combining
marks, text that looks like special tokens, digits, code, one ~100 KB input),
encodes them with `tokenizers` and with shardlm (through tok_driver, one JSON
request per line), and compares ids with and without special tokens, decodes
with skip_special_tokens both ways, and the streaming detokenizer's
concatenated pieces. Every mismatch is printed as a JSON line that can be
added to the fixtures. Exit 0 = all equal, 1 = mismatches, 77 = skipped.

usage: diff_tokenizers.py --driver PATH [--seed N|random] [--count N] TOKENIZER...
where TOKENIZER is a directory with tokenizer.json or a tokenizer.json file;
missing ones are skipped with a message.
"""
import argparse
import json
import os
import random
import subprocess
import sys

try:
    from tokenizers import Tokenizer
except ImportError:
    print("SKIP: the `tokenizers` package is not installed (run tools/venv.sh)")
    sys.exit(77)

WHITESPACE = [" ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000", "\u0085", "\u2028", "\x0b", "\x0c", "\u2009"]
WORDS = ("the quick brown fox jumps over lazy dog I'm you'll they've we'd it's DON'T WON'T "
         "Hello World tokenizer inference server GPU CUDA naïve café résumé straße ſtop "
         "Ω ΣΊΣΥΦΟΣ İstanbul").split()
CODE = ["def f(x):\n    return x**2  # square\n", "for (int i = 0; i < n; ++i) { a[i] += b[i]; }\n",
        "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }\n",
        "SELECT * FROM t WHERE id = 3;", "    if x != None:\n\t\tpass\r\n", "x = [1, 2, 3]\ny = {'a': 1}\n",
        "fn main() { let v: Vec<u8> = vec![]; }", "<div class=\"a\">&nbsp;</div>", "$ ls -la | grep '^d'\n"]
EMOJI = ["\U0001F600", "\U0001F916", "\U0001F680", "\U0001F44D\U0001F3FD", "\U0001F468\u200D\U0001F469\u200D\U0001F467",
         "\U0001F3F3\uFE0F\u200D\U0001F308", "\u2764\uFE0F", "\U0001F1FA\U0001F1F8", "\U0001F9D1\U0001F3FF\u200D\U0001F4BB"]
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
            "<s>", "</s>", "<unk>", "<|", "|>", "<|im_", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
            "<|start_header_id|>", "<think>", "</think>", "<0x0A>", "▁", "<|reserved_special_token_5|>"]


def rand_cp(rng):
    plane = rng.choice([0] * 8 + [1, 1, 2, 3, 14, 15, 16])
    while True:
        cp = rng.randrange(plane * 0x10000, plane * 0x10000 + 0x10000)
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def gen_piece(rng, specials):
    kind = rng.randrange(12)
    if kind == 0:
        return "".join(rand_cp(rng) for _ in range(rng.randrange(1, 12)))
    if kind == 1:
        return "".join(rng.choice(WHITESPACE) for _ in range(rng.randrange(1, 40)))
    if kind == 2:
        return "".join(chr(rng.randrange(0x4E00, 0x9FA6)) for _ in range(rng.randrange(1, 10)))
    if kind == 3:
        return "".join(chr(rng.randrange(0xAC00, 0xD7A4)) for _ in range(rng.randrange(1, 10)))
    if kind == 4:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randrange(1, 5)))
    if kind == 5:
        base = rng.choice("aeiouAEIOUnc ")
        return base + "".join(chr(rng.randrange(0x300, 0x370)) for _ in range(rng.randrange(1, 4)))
    if kind == 6:
        s = rng.choice(specials)
        return s[: rng.randrange(1, len(s) + 1)] if rng.random() < 0.3 else s
    if kind == 7:
        return "".join(rng.choice("0123456789٣७๓") for _ in range(rng.randrange(1, 15)))
    if kind == 8:
        return rng.choice(CODE)
    if kind == 9:
        return "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randrange(1, 20)))
    if kind == 10:
        return "".join(chr(rng.randrange(0x3040, 0x3100)) for _ in range(rng.randrange(1, 8)))
    return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 8)))


def gen_text(rng, specials):
    return "".join(gen_piece(rng, specials) + (rng.choice(WHITESPACE) if rng.random() < 0.4 else "")
                   for _ in range(rng.randrange(1, 8)))


def long_text(rng, specials, n_bytes=100_000):
    parts, size = [], 0
    while size < n_bytes:
        p = gen_text(rng, specials)
        parts.append(p)
        size += len(p.encode())
    return "".join(parts)


def run_driver(driver, path, requests):
    payload = "".join(json.dumps(r) + "\n" for r in requests)
    out = subprocess.run([driver, path], input=payload.encode(), capture_output=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"tok_driver failed on {path}: {out.stderr.decode(errors='replace')}")
    return [json.loads(line) for line in out.stdout.decode().split("\n") if line]


def check_tokenizer(driver, path, seed, count, max_report):
    json_path = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    hf = Tokenizer.from_file(json_path)
    rng = random.Random(seed)
    specials = SPECIALS + [t.content for t in hf.get_added_tokens_decoder().values()][:50]
    texts = [gen_text(rng, specials) for _ in range(count)] + [long_text(rng, specials)]
    requests, expected = [], []
    for text in texts:
        for special in (False, True):
            ids = hf.encode(text, add_special_tokens=special).ids
            requests.append({"op": "encode", "text": text, "special": special})
            expected.append(("ids", ids, text, special))
        ids = hf.encode(text, add_special_tokens=True).ids
        for skip in (False, True):
            want = hf.decode(ids, skip_special_tokens=skip)
            for op in ("decode", "stream"):
                requests.append({"op": op, "ids": ids, "skip": skip})
                expected.append(("text", want, text, (op, skip)))
    got = run_driver(driver, path, requests)
    bad = 0
    for req, (key, want, text, how), res in zip(requests, expected, got):
        if res.get(key) != want:
            bad += 1
            if bad <= max_report:
                print(json.dumps({"tokenizer": path, "seed": seed, "op": req["op"], "how": how, "text": text,
                                  "want": want, "got": res}, ensure_ascii=True)[:2000])
    print(f"{path}: {len(texts)} texts, {len(requests)} requests, {bad} mismatches (seed {seed})")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--seed", default="1234")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--max-report", type=int, default=20)
    ap.add_argument("tokenizers", nargs="+")
    args = ap.parse_args()
    seed = random.SystemRandom().randrange(1 << 30) if args.seed == "random" else int(args.seed)
    present = [p for p in args.tokenizers if os.path.exists(p)]
    for p in args.tokenizers:
        if p not in present:
            print(f"skipping {p}: not present")
    if not present:
        print("SKIP: none of the tokenizers is present")
        return 77
    bad = sum(check_tokenizer(args.driver, p, seed, args.count, args.max_report) for p in present)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
