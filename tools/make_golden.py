#!/usr/bin/env python3
"""make_golden.py -- what transformers computes for a model folder, on a chosen
device and dtype, in make_fixtures.py's golden.json format (prompts, greedy
tokens, per-step and per-position top-5 logprobs).

The GPU's outside truth made in the same run (bench/gpu.sh goldens):
transformers in bfloat16 on the GPU over the fixtures and over the 8B shape,
then test_golden holds shardlm's CUDA backend to those files. Prompts are
random ids (fixed seed) of 1, 7 and 40 tokens drawn from [3, vocab), or from
[100, vocab - 200) where the vocabulary is large (no special tokens).

Usage: make_golden.py MODEL_DIR OUT_JSON [--device cuda] [--dtype bfloat16] [--seed 7]
"""
import argparse
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import golden  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=getattr(torch, args.dtype),
                                                 attn_implementation="eager").to(args.device).eval()
    vocab = model.config.vocab_size
    lo, hi = (100, vocab - 200) if vocab > 1000 else (3, vocab)
    gen = torch.Generator().manual_seed(args.seed)
    prompts = [torch.randint(lo, hi, (n,), generator=gen).tolist() for n in (1, 7, 40)]
    record = {"model": os.path.basename(os.path.normpath(args.model_dir)), "device": args.device,
              "dtype": args.dtype, "transformers": transformers.__version__, "torch": torch.__version__,
              "sequences": golden(model, prompts)}
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"{record['model']}: golden of transformers in {args.dtype} on {args.device} -> {args.out}")


if __name__ == "__main__":
    main()
