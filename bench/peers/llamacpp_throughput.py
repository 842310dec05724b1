#!/usr/bin/env python3
"""llamacpp_throughput.py -- the llama.cpp peer of `shardlm bench throughput`:
N requests of input-len random prompt tokens and output-len greedy tokens
each, all submitted at once, run the way llama.cpp's own batched tools
(llama-batched-bench, llama-parallel) run them: one context whose KV cache
holds all N sequences (n_seq_max = N), prompts prefilled in llama_batches of
up to n_batch tokens carrying many seq_ids, then one llama_decode per step
carrying the next token of every sequence. Greedy argmax in numpy; EOS is
ignored, so every request yields exactly output-len tokens.

Counted as shardlm counts (src/cli/cmd_bench.c): the prompts are the same
seeded ids (its generator, ids in [100, vocab - 100), so no special token),
elapsed runs from the first prefill to the last token, output tokens are
N * output-len (the first one comes out of the prefill), total tokens add
N * input-len. Before the timed run the first and last prompts are decoded
on their own with the high-level llama_cpp.Llama (which also pages the
weights in, as shardlm's engine does when it opens); for N = 1 its first 16
greedy tokens must equal the batched run's, else the script fails (for N > 1
a difference is reported: batched kernels may round differently). Prints one
JSON object.

Usage: llamacpp_throughput.py MODEL.gguf --threads T --concurrency N
         [--input-len 128] [--output-len 128] [--seed 0]
         [--n-batch 2048] [--n-ubatch 512] [--kv-unified]
"""

import argparse
import json
import sys
import time

import numpy as np

import llama_cpp
import llama_cpp._logger

from llamacpp_peer import greedy_next, open_model

CHECK_TOKENS = 16
MASK64 = (1 << 64) - 1
NOT_TEXT = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED


def shardlm_prompts(n, input_len, vocab, seed):
    """The prompt ids `shardlm bench throughput --seed SEED` submits (its LCG)."""
    state, prompts = seed & MASK64, []
    for _ in range(n):
        ids = []
        for _ in range(input_len):
            state = (state * 6364136223846793005 + 1442695040888963407) & MASK64
            ids.append(100 + (state >> 33) % (vocab - 200))
        prompts.append(ids)
    return prompts


def reference_tokens(model_path, threads, prompt, n):
    """n greedy tokens after `prompt`, one sequence, through llama_cpp.Llama."""
    llm = open_model(model_path, threads, n_ctx=len(prompt) + n + 8)
    llm.eval(prompt)
    out = [greedy_next(llm)]
    while len(out) < n:
        llm.eval([out[-1]])
        out.append(greedy_next(llm))
    llm.close()
    return out


def agreeing_prefix(a, b):
    """How many leading tokens two token lists share."""
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


class BatchedContext:
    """A llama.cpp model and context sized for n_seq sequences of n_pos tokens."""

    def __init__(self, model_path, threads, n_seq, n_pos, n_batch, n_ubatch, kv_unified):
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(model_path.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model_path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = n_seq * n_pos
        cp.n_batch = n_batch
        cp.n_ubatch = min(n_ubatch, n_batch)
        cp.n_seq_max = n_seq
        cp.n_threads = cp.n_threads_batch = threads
        cp.kv_unified = kv_unified
        self.params = cp
        self.ctx = llama_cpp.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create the context (n_ctx %d, n_seq_max %d)" % (cp.n_ctx, n_seq))
        self.n_batch = n_batch
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def close(self):
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)

    def decode(self, entries):
        """One llama_decode of (token, pos, seq, wants_logits) entries; returns
        {seq: greedy next token} for the entries that asked for logits."""
        b = self.batch
        for i, (tok, pos, seq, out) in enumerate(entries):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = out
        b.n_tokens = len(entries)
        rc = llama_cpp.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} on a batch of {len(entries)} tokens")
        nxt = {}
        for i, (_, _, seq, out) in enumerate(entries):
            if out:
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
                nxt[seq] = int(np.argmax(row))
        return nxt

    def generate(self, prompts, output_len):
        """Greedy output_len tokens for every prompt: prefill in chunks of
        n_batch tokens, then one decode step per token for all sequences."""
        flat = [(tok, pos, seq, pos == len(p) - 1) for seq, p in enumerate(prompts) for pos, tok in enumerate(p)]
        out = [[] for _ in prompts]
        for start in range(0, len(flat), self.n_batch):
            for seq, tok in self.decode(flat[start:start + self.n_batch]).items():
                out[seq].append(tok)
        for step in range(1, output_len):
            entries = [(out[s][-1], len(prompts[s]) + step - 1, s, True) for s in range(len(prompts))]
            for seq, tok in self.decode(entries).items():
                out[seq].append(tok)
        return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--concurrency", type=int, required=True, help="requests submitted at once (n_seq_max)")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-batch", type=int, default=2048, help="tokens per llama_decode call (shardlm: 2048 per step)")
    ap.add_argument("--n-ubatch", type=int, default=512, help="tokens per compute pass (llama.cpp's default 512)")
    ap.add_argument("--kv-unified", action="store_true",
                    help="one KV buffer across sequences (default: a stream per sequence, as llama.cpp defaults)")
    args = ap.parse_args(argv)
    n = args.concurrency
    if n < 1 or args.input_len < 1 or args.output_len < 1 or args.n_batch < n:
        ap.error("--concurrency, --input-len, --output-len must be >= 1 and --n-batch >= --concurrency")

    llama_cpp.llama_backend_init()
    llama_cpp._logger.set_verbose(False)
    bc = BatchedContext(args.model, args.threads, n, args.input_len + args.output_len,
                        max(n, min(args.n_batch, n * args.input_len)), args.n_ubatch, args.kv_unified)
    prompts = shardlm_prompts(n, args.input_len, bc.n_vocab, args.seed)
    special = {t for p in prompts for t in p
               if llama_cpp.llama_vocab_get_attr(bc.vocab, t) & NOT_TEXT}
    if special:
        print(f"llamacpp_throughput: prompt ids {sorted(special)[:8]} are control, unknown or unused tokens",
              file=sys.stderr)
        return 1
    check_len = min(CHECK_TOKENS, args.output_len)
    checked = sorted({0, n - 1})
    refs = {s: reference_tokens(args.model, args.threads, prompts[s], check_len) for s in checked}

    t0 = time.perf_counter()
    out = bc.generate(prompts, args.output_len)
    elapsed = time.perf_counter() - t0
    bc_params = bc.params
    bc.close()

    agree = {s: agreeing_prefix(out[s], refs[s]) for s in checked}
    for s in checked:
        if agree[s] == check_len:
            continue
        print(f"llamacpp_throughput: batched greedy tokens of prompt {s} {out[s][:check_len]} differ from the "
              f"single-sequence decode {refs[s]} at token {agree[s]}", file=sys.stderr)
        if n == 1:
            return 1
        print("llamacpp_throughput: (batched kernels may round differently; only N = 1 must agree)", file=sys.stderr)
    out_tokens = sum(len(o) for o in out)
    assert out_tokens == n * args.output_len
    total = out_tokens + n * args.input_len
    print(json.dumps({
        "peer": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "model": args.model,
        "threads": args.threads,
        "concurrency": n,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "requests_per_s": round(n / elapsed, 3),
        "output_tokens_per_s": round(out_tokens / elapsed, 2),
        "total_tokens_per_s": round(total / elapsed, 2),
        "elapsed_s": round(elapsed, 3),
        "n_ctx": bc_params.n_ctx,
        "n_batch": bc_params.n_batch,
        "n_ubatch": bc_params.n_ubatch,
        "kv_unified": bool(bc_params.kv_unified),
        "greedy_tokens_agree": {f"prompt {s}": f"{agree[s]}/{check_len}" for s in checked},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
