#!/usr/bin/env python3
"""bench_structured.py -- what a JSON schema costs while decoding: output
tokens/s of chat requests constrained by a schema against the same requests
unconstrained for as many tokens, with shardlm's Python binding, median of
several runs after a warm-up. With --llamacpp GGUF the same requests run one
at a time through llama.cpp (llama-cpp-python, its grammar from the same
schema), the peer of the batch-1 figures. Prints one JSON object per line.

Usage: bench_structured.py MODEL SCHEMA.json --threads N [--concurrency 1 16] [--runs 3] [--llamacpp GGUF]
"""

import argparse
import json
import statistics
import time

QUESTIONS = ["Describe a customer of a bookshop", "Describe a pilot", "Describe a gardener", "Describe a chess player",
             "Describe a nurse", "Describe a baker", "Describe a student of physics", "Describe a sailor",
             "Describe a painter", "Describe a teacher", "Describe a climber", "Describe a chef",
             "Describe a musician", "Describe a farmer", "Describe a librarian", "Describe a runner"]


def conversations(n):
    return [[{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} as JSON."}] for i in range(n)]


def shardlm_runs(args, schema, n_requests, concurrency):
    """n_requests conversations, at most concurrency of them in one step."""
    from shardlm import LLM, SamplingParams, StructuredOutputsParams
    convs = conversations(n_requests)
    guided = SamplingParams(temperature=0, max_tokens=args.max_tokens,
                            structured_outputs=StructuredOutputsParams(json=schema))
    with LLM(model=args.model, quiet=True, n_threads=args.threads, max_model_len=1024, max_num_seqs=concurrency,
             enable_prefix_caching=False) as llm:
        def timed(params):
            t0 = time.perf_counter()
            outs = llm.chat(convs, params, use_tqdm=False)
            dt = time.perf_counter() - t0
            return sum(len(o.outputs[0].token_ids) for o in outs) / dt, outs

        timed(guided)  # warm-up: pages in the weights, compiles the grammar, builds the token trie
        guided_runs = [timed(guided) for _ in range(args.runs)]
        outs = guided_runs[0][1]
        lengths = [len(o.outputs[0].token_ids) for o in outs]
        valid = sum(o.outputs[0].finish_reason == "stop" and _parses(o.outputs[0].text) for o in outs)
        # unconstrained, each request for as many tokens as its constrained output took
        free = [SamplingParams(temperature=0, max_tokens=n, min_tokens=n, ignore_eos=True) for n in lengths]
        free_runs = [timed(free)[0] for _ in range(args.runs)]
    g, f = statistics.median(r[0] for r in guided_runs), statistics.median(free_runs)
    return {"engine": "shardlm", "concurrency": concurrency, "output_tokens": sum(lengths), "valid_json": valid,
            "requests": n_requests, "guided_tok_s": round(g, 1), "unconstrained_tok_s": round(f, 1),
            "ratio": round(g / f, 3)}


def _parses(text):
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def llamacpp_runs(args, schema):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=args.llamacpp, n_threads=args.threads, n_ctx=1024, verbose=False)
    grammar = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    convs = conversations(args.llamacpp_requests)

    def timed(use_grammar, lengths=None):
        tokens, t0, out_lengths, valid = 0, time.perf_counter(), [], 0
        for i, conv in enumerate(convs):
            kw = {"grammar": grammar} if use_grammar else {"max_tokens": lengths[i], "logit_bias": {llm.token_eos(): -1e9}}
            r = llm.create_chat_completion(conv, temperature=0, **({"max_tokens": args.max_tokens} | kw))
            n = r["usage"]["completion_tokens"]
            tokens += n
            out_lengths.append(n)
            valid += r["choices"][0]["finish_reason"] == "stop" and _parses(r["choices"][0]["message"]["content"])
        return tokens / (time.perf_counter() - t0), out_lengths, valid

    timed(True)
    guided_runs = [timed(True) for _ in range(args.runs)]
    lengths, valid = guided_runs[0][1], guided_runs[0][2]
    free_runs = [timed(False, lengths)[0] for _ in range(args.runs)]
    g, f = statistics.median(r[0] for r in guided_runs), statistics.median(free_runs)
    return {"engine": "llama.cpp", "concurrency": 1, "output_tokens": sum(lengths), "valid_json": valid,
            "requests": len(convs), "guided_tok_s": round(g, 1), "unconstrained_tok_s": round(f, 1),
            "ratio": round(g / f, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("schema")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--llamacpp", help="the GGUF of the same model: llama.cpp's figures at batch 1")
    ap.add_argument("--llamacpp-requests", type=int, default=4)
    args = ap.parse_args()
    with open(args.schema, encoding="utf-8") as f:
        schema = json.load(f)
    for c in args.concurrency:  # batch 1 runs the peer's requests, one at a time
        print(json.dumps(shardlm_runs(args, schema, args.llamacpp_requests if c == 1 else c, c)), flush=True)
    if args.llamacpp:
        print(json.dumps(llamacpp_runs(args, schema)), flush=True)


if __name__ == "__main__":
    main()
