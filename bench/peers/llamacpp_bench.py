#!/usr/bin/env python3
"""llamacpp_bench.py -- the llama.cpp peer of `shardlm bench latency`: prefill
tokens/s of a 128-token prompt and batch-1 greedy decode tokens/s of 128
tokens after it, with llama-cpp-python on the CPU, median of several runs
after one warm-up. Give it the BF16 GGUF that tools/hf_to_gguf.py writes from
the converted model, so both engines read the same weights at the same
precision. Prints one JSON object on stdout.

Usage: llamacpp_bench.py MODEL.gguf --threads N [--runs 5] [--prompt-tokens 128] [--decode-tokens 128]
"""

import argparse
import json
import statistics
import sys
import time

import llama_cpp

from llamacpp_peer import greedy_next, open_model

PROMPT_TEXT = ("The history of computing is a story of machines that count, sort and remember. "
               "From the abacus to mechanical calculators, from punched cards to transistors, "
               "every step made arithmetic cheaper and memory larger. ")


def prompt_ids(llm, n):
    ids = llm.tokenize(PROMPT_TEXT.encode(), add_bos=False, special=False)
    return (ids * (n // len(ids) + 1))[:n]


def one_run(llm, prompt, n_decode):
    """(prefill seconds, decode seconds) of one prompt and n_decode greedy tokens."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    tok = greedy_next(llm)
    t1 = time.perf_counter()
    for _ in range(n_decode):
        llm.eval([tok])
        tok = greedy_next(llm)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=128)
    args = ap.parse_args(argv)

    llm = open_model(args.model, args.threads, n_ctx=args.prompt_tokens + args.decode_tokens + 8)
    prompt = prompt_ids(llm, args.prompt_tokens)
    one_run(llm, prompt, 8)  # warm-up: page in the weights, size the buffers
    runs = [one_run(llm, prompt, args.decode_tokens) for _ in range(args.runs)]
    prefill = [args.prompt_tokens / p for p, _ in runs]
    decode = [args.decode_tokens / d for _, d in runs]
    print(json.dumps({
        "peer": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "model": args.model,
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "decode_tokens": args.decode_tokens,
        "runs": args.runs,
        "prefill_tok_s": round(statistics.median(prefill), 2),
        "decode_tok_s": round(statistics.median(decode), 2),
        "prefill_tok_s_runs": [round(x, 2) for x in prefill],
        "decode_tok_s_runs": [round(x, 2) for x in decode],
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
