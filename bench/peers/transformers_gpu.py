#!/usr/bin/env python3
"""transformers_gpu.py -- the transformers peer on the GPU of `shardlm bench
latency` and `shardlm bench throughput`: the model folder loaded as it is
published (bf16, attn_implementation="sdpa", eager PyTorch, generate() with
its default dynamic KV cache) on cuda, measuring

  decode      batch 1: a 128-token random prompt, then 256 greedy tokens
              (min_new_tokens = max_new_tokens, no EOS, so always 256). Per
              run, generate(max_new_tokens=1) times the prefill and first
              token, generate(256) the whole; decode tok/s = 255 / (difference),
              as shardlm counts it ((output - 1) tokens after the first).
  prefill     one forward of a 2048-token random prompt (logits of its last
              position only, as an engine computes them), between
              torch.cuda.synchronize() calls: 2048 / seconds.
  throughput  (--throughput [B], B = 64 by default) B random prompts of 512
              tokens in one batched generate() of 128 greedy tokens each:
              B * 128 output tokens / seconds.

Prompt ids are drawn from [100, vocab - 100) (no special tokens), seeded.
Greedy decoding keeps the repetition_penalty of the folder's
generation_config.json, as shardlm does for parameters a request leaves
unset; the other sampling defaults there do not apply to greedy decoding.
Every figure is the median of --iters runs after one warm-up (throughput:
at most 3 runs). Prints progress on stderr, then one JSON object as the last
line of stdout. No flags: decode and prefill.

Usage: transformers_gpu.py --model DIR [--decode] [--prefill] [--throughput [B]] [--iters N]
         [--device-map cuda|auto]   (auto spreads the layers over all GPUs, with accelerate;
                                     without accelerate the model goes to cuda through host memory)
"""

import argparse
import importlib.util
import json
import statistics
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, GenerationConfig

DECODE_IN, DECODE_OUT = 128, 256
PREFILL_LEN = 2048
TP_IN, TP_OUT = 512, 128


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def prompts(batch, length, vocab, seed, device):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab - 100, (batch, length), generator=g).to(device)


def load(path, device_map):
    kw = dict(dtype=torch.bfloat16, attn_implementation="sdpa")
    if importlib.util.find_spec("accelerate"):  # transformers takes a device_map only with accelerate
        return AutoModelForCausalLM.from_pretrained(path, device_map=device_map, **kw).eval()
    if device_map == "auto":
        sys.exit("--device-map auto needs the accelerate package")
    return AutoModelForCausalLM.from_pretrained(path, **kw).to(device_map).eval()  # through host memory


def generate(model, ids, n):
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n)
    assert out.shape[1] == ids.shape[1] + n, f"generate returned {out.shape[1] - ids.shape[1]} tokens, not {n}"
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--decode", action="store_true")
    ap.add_argument("--prefill", action="store_true")
    ap.add_argument("--throughput", type=int, nargs="?", const=64, metavar="B")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device-map", default="cuda")
    args = ap.parse_args(argv)
    if not (args.decode or args.prefill or args.throughput):
        args.decode = args.prefill = True

    t_load, model = timed(lambda: load(args.model, args.device_map))
    vocab = model.config.vocab_size
    rep = getattr(model.generation_config, "repetition_penalty", None) or 1.0
    # greedy, no EOS (so every run yields all its tokens), the folder's repetition penalty
    model.generation_config = GenerationConfig(do_sample=False, repetition_penalty=rep, pad_token_id=0,
                                               bos_token_id=model.config.bos_token_id)
    res = {"engine": "transformers", "model": args.model, "gpu": torch.cuda.get_device_name(0),
           "gpus": torch.cuda.device_count() if args.device_map == "auto" else 1,
           "torch": torch.__version__, "transformers": transformers.__version__, "dtype": "bfloat16",
           "attn_implementation": "sdpa", "repetition_penalty": rep, "iters": args.iters,
           "load_s": round(t_load, 1)}
    log(f"loaded {args.model} in {t_load:.1f} s on {res['gpu']}")

    with torch.inference_mode():
        if args.decode:
            ids = prompts(1, DECODE_IN, vocab, 1, model.device)
            generate(model, ids, 8)  # warm-up
            rates = []
            for i in range(args.iters):
                t1, _ = timed(lambda: generate(model, ids, 1))
                tn, _ = timed(lambda: generate(model, ids, DECODE_OUT))
                rates.append((DECODE_OUT - 1) / (tn - t1))
                log(f"decode run {i + 1}: first token {t1 * 1e3:.1f} ms, {DECODE_OUT} tokens {tn:.2f} s, "
                    f"{rates[-1]:.1f} tok/s")
            res.update(decode_input_len=DECODE_IN, decode_output_len=DECODE_OUT,
                       decode_tok_s=round(statistics.median(rates), 2), decode_runs=[round(r, 2) for r in rates])

        if args.prefill:
            ids = prompts(1, PREFILL_LEN, vocab, 2, model.device)
            fwd = lambda: model(input_ids=ids, logits_to_keep=1)  # noqa: E731
            fwd()  # warm-up
            rates = [PREFILL_LEN / timed(fwd)[0] for _ in range(args.iters)]
            log("prefill: " + ", ".join(f"{r:.0f}" for r in rates) + " tok/s")
            res.update(prefill_len=PREFILL_LEN, prefill_tok_s=round(statistics.median(rates), 1),
                       prefill_runs=[round(r, 1) for r in rates])

        if args.throughput:
            b = args.throughput
            ids = prompts(b, TP_IN, vocab, 3, model.device)
            generate(model, ids, 2)  # warm-up
            rates = []
            for i in range(min(args.iters, 3)):
                t, _ = timed(lambda: generate(model, ids, TP_OUT))
                rates.append(b * TP_OUT / t)
                log(f"throughput run {i + 1}: {b} x ({TP_IN} in, {TP_OUT} out) in {t:.2f} s, "
                    f"{rates[-1]:.0f} output tok/s")
            res.update(throughput_batch=b, throughput_input_len=TP_IN, throughput_output_len=TP_OUT,
                       throughput_out_tok_s=round(statistics.median(rates), 1),
                       throughput_runs=[round(r, 1) for r in rates])

    res["max_memory_gb"] = round(sum(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count()))
                                 / 1e9, 1)
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
