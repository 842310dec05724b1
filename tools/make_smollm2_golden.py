#!/usr/bin/env python3
"""make_smollm2_golden.py -- record what Hugging Face transformers computes on
the converted default model, as the outside truth for shardlm's engine.

For a few prompts (raw texts, and chats through the model's own chat template
with add_generation_prompt=True) it writes the prompt ids from the Hugging
Face tokenizer, up to 24 greedy tokens (fewer when <|im_end|> ends the
answer; it is then the last id), the fp32 top-5 (id, logprob) of every
generated step and the decoded text, into tests/fixtures/smollm2/golden.json.

Needs torch and transformers (tools/requirements-fixtures.txt), which CI does
not have: run it by hand after tools/get-default-model.sh and commit the json.

Usage: make_smollm2_golden.py [--model DIR] [--out FILE]
"""

import argparse
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_NEW_TOKENS = 24
TOP_K = 5

CASES = [
    {"name": "text_france", "text": "The capital of France is"},
    {"name": "text_digits", "text": "Counting in steps of 7: 7, 14, 21, 28,"},
    {"name": "chat_default_system",
     "messages": [{"role": "user", "content": "Explain in two sentences why the sky is blue."}]},
    {"name": "chat_own_system",
     "messages": [{"role": "system", "content": "You are a pirate. Answer in pirate speak."},
                  {"role": "user", "content": "Describe your ship."}]},
]


def prompt_ids(tok, case):
    if "text" in case:
        return tok(case["text"], add_special_tokens=False)["input_ids"]
    rendered = tok.apply_chat_template(case["messages"], add_generation_prompt=True, tokenize=False)
    ids = tok.apply_chat_template(case["messages"], add_generation_prompt=True, tokenize=True)
    if not isinstance(ids, list):  # a BatchEncoding in transformers 5
        ids = ids["input_ids"]
    case["rendered"] = rendered
    return list(ids)


def greedy(model, ids, eos_id):
    """Greedy decoding, one full forward per step; returns ids and top-5 per step."""
    seq, out_ids, top = list(ids), [], []
    with torch.no_grad():
        for _ in range(MAX_NEW_TOKENS):
            logits = model(torch.tensor([seq])).logits[0, -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            values, indices = torch.topk(logprobs, TOP_K)
            top.append([[int(i), float(v)] for i, v in zip(indices, values)])
            nxt = int(indices[0])
            out_ids.append(nxt)
            seq.append(nxt)
            if nxt == eos_id:
                break
    return out_ids, top


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "smollm2", "golden.json"))
    args = ap.parse_args(argv)
    if not os.path.isfile(os.path.join(args.model, "CONVERTED")):
        print(f"{args.model} is missing: run tools/get-default-model.sh first", file=sys.stderr)
        return 1

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    eos_id = model.config.eos_token_id
    cases = []
    for spec in CASES:
        case = dict(spec)
        case["prompt_ids"] = prompt_ids(tok, case)
        case["greedy_ids"], case["top5"] = greedy(model, case["prompt_ids"], eos_id)
        case["greedy_text"] = tok.decode(case["greedy_ids"], skip_special_tokens=False)
        print(f"{case['name']}: {len(case['prompt_ids'])} prompt ids -> {case['greedy_text']!r}")
        cases.append(case)

    golden = {
        "model": "models/SmolLM2-135M-Instruct as written by tools/convert_gguf.py",
        "reference": f"transformers {transformers.__version__}, torch {torch.__version__}, "
                     "float32 weights (bf16 on disk), greedy, full forward per step",
        "max_new_tokens": MAX_NEW_TOKENS,
        "eos_token_id": eos_id,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
