#!/usr/bin/env python3
"""llamacpp_tokenizer_cases.py -- record how llama.cpp (llama-cpp-python, from
bench/requirements-peers.txt) tokenizes a set of texts with the ORIGINAL
SmolLM2 GGUF, as outside truth for the tokenizer.json that
tools/convert_gguf.py writes (tests/convert/test_converted.py compares them).

Usage: llamacpp_tokenizer_cases.py ORIGINAL.gguf OUT.json
"""

import json
import sys

import llama_cpp

TEXTS = [
    "Hello, world!",
    "The year 2024 had 366 days; 12345 is not 1,000,000.",
    "  leading spaces, trailing spaces   \n\n\nand newlines\r\n\ttabs",
    "I'm sure they'll say it's fine, don't you think? We've seen it.",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Café naïve résumé façade Ångström",
    "你好，世界！日本語のテキスト 한국어",
    "Emoji: 😀👍🏽 and ❤️",
    "ABC123def456 3.14159 x^2+y^2=z^2",
    "<|im_start|>user\nWhat is 7*6?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><jupyter_code>print(1)<empty_output>",
    "multiple   internal    spaces and punctuation!!! ??? ... --- (parens)",
]


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    llm = llama_cpp.Llama(model_path=argv[0], vocab_only=True, verbose=False)
    cases = [{"text": t, "ids": llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)} for t in TEXTS]
    out = {"reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, "
                        "tokenize(add_bos=False, special=True) on SmolLM2-135M-Instruct.Q4_1.gguf",
           "cases": cases}
    with open(argv[1], "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
