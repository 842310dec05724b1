#!/usr/bin/env python3
"""make_fixtures.py -- tiny random-weight models and their golden outputs, from transformers.

Writes tests/fixtures/<name>/ for each model below: config.json and a bf16
model.safetensors saved by transformers itself, and golden.json with what
transformers computes in float32 from those bf16 weights:
  - prompts: token ids (fixed seed)
  - greedy: the greedy continuation of each prompt
  - steps: per generated step, the top-5 (id, logprob) of the next-token distribution
  - positions: top-5 (id, logprob) at every position of prompt + continuation
    (what a prefill of the whole sequence must give)

Needs torch and transformers (tools/requirements-fixtures.txt); CI uses the
committed files. Run: python tools/make_fixtures.py [--out tests/fixtures]
"""
import argparse
import json
import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

VOCAB = 512
N_GREEDY = 16


def models():
    """name -> (model class, config). Shapes cover GQA, MHA, llama3 rope scaling,
    Qwen2 biases, tied and untied embeddings, odd layer counts, explicit head_dim,
    head counts dividing by 2 and 4, and 2 KV heads (replicated at tp=4)."""
    common = dict(vocab_size=VOCAB, max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    return {
        "llama_gqa": (LlamaForCausalLM, LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                                    num_attention_heads=4, num_key_value_heads=2,
                                                    tie_word_embeddings=False, rope_theta=10000.0, **common)),
        "llama3_tied": (LlamaForCausalLM, LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                                      num_attention_heads=8, num_key_value_heads=4,
                                                      tie_word_embeddings=True, rope_theta=10000.0,
                                                      rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                                    "original_max_position_embeddings": 64},
                                                      **common)),
        "qwen2_bias": (Qwen2ForCausalLM, Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                     num_attention_heads=4, num_key_value_heads=2,
                                                     tie_word_embeddings=True, rope_theta=1000000.0, **common)),
        "mistral_5layer": (MistralForCausalLM, MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=5,
                                                             num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                                                             sliding_window=None, tie_word_embeddings=False,
                                                             rope_theta=10000.0, **common)),
        "llama_mha_bias": (LlamaForCausalLM, LlamaConfig(hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                                                         num_attention_heads=6, num_key_value_heads=3,
                                                         attention_bias=True, mlp_bias=True,
                                                         tie_word_embeddings=False, rope_theta=10000.0, **common)),
    }


def randomize(model, gen):
    """Weights large enough that logits are far from uniform."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / (p.shape[1] ** 0.5) * 1.5)


def top5(logits):
    lp = torch.log_softmax(logits.float(), dim=-1)
    v, i = torch.topk(lp, 5)
    return [[int(a), float(b)] for a, b in zip(i.tolist(), v.tolist())]


def golden(model, prompts):
    out = []
    for prompt in prompts:
        ids = list(prompt)
        steps = []
        for _ in range(N_GREEDY):
            with torch.no_grad():
                logits = model(torch.tensor([ids], device=model.device)).logits[0, -1]
            steps.append(top5(logits))
            ids.append(int(torch.argmax(logits)))
        with torch.no_grad():
            all_logits = model(torch.tensor([ids], device=model.device)).logits[0]
        out.append({"prompt": list(prompt), "greedy": ids[len(prompt):], "steps": steps,
                    "positions": [top5(row) for row in all_logits]})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    args = ap.parse_args()
    for idx, (name, (cls, config)) in enumerate(models().items()):
        gen = torch.Generator().manual_seed(1000 + idx)
        torch.manual_seed(1000 + idx)
        config._attn_implementation = "eager"
        model = cls(config).eval()
        randomize(model, gen)
        model = model.to(torch.bfloat16)
        folder = os.path.join(args.out, name)
        model.save_pretrained(folder, safe_serialization=True)
        # The golden run: float32 math over the bf16 weights just saved.
        model = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
        prompts = [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in (1, 7, 40)]
        record = {"model": name, "transformers": __import__("transformers").__version__,
                  "torch": torch.__version__, "sequences": golden(model, prompts)}
        with open(os.path.join(folder, "golden.json"), "w") as f:
            json.dump(record, f, indent=1)
        print(f"{name}: {sum(p.numel() for p in model.parameters())} params -> {folder}")


if __name__ == "__main__":
    main()
