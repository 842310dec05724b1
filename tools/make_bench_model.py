#!/usr/bin/env python3
"""make_bench_model.py -- write a random-weight model folder in Hugging Face
layout for benchmarks: the published config.json and generation_config.json of
a named model (the Instruct releases), bf16 safetensors shards of about 5 GB
(model-0000k-of-0000N.safetensors + model.safetensors.index.json, tensor names
as transformers saves them), and tokenizer.json + tokenizer_config.json copied
from --tokenizer (e.g. ../shared/tokenizers/llama3.1 or qwen3).

Weights are normal with std 0.02 (norm weights 1.0, Qwen2's q/k/v biases std
0.01), drawn with torch on the GPU when there is one (a 70B model, ~141 GB,
is then bound by the disk), one seeded generator per tensor, so a tensor's
values depend only on --seed and its name. Shards are written one at a time
(the next one is drawn while the previous one is written), never the whole
model in memory. Idempotent: a folder already holding a complete model of the
same shape, config and seed is left as it is. At the end
transformers.AutoConfig must accept the config.

Shapes: llama-3.1-8b, llama-3.1-70b, qwen2.5-32b, qwen2.5-72b, and tiny (the
8B shape with 2 layers, for quick checks). --layers overrides
num_hidden_layers of any shape.

--config-only writes the configs and the tokenizer without weights: enough
for what shardlm decides from the config alone (`shardlm plan`, and the
pre-flight check that refuses a layout the model does not fit, before any
weight is read).

Usage: make_bench_model.py --shape NAME --out DIR --tokenizer DIR [--seed N] [--layers N] [--config-only]
"""

import argparse
import json
import os
import shutil
import sys
import threading
import time
import zlib

SHARD_BYTES = 5 * 10**9
STAMP = ".make_bench_model.json"  # written last: its presence means the folder is complete

_LLAMA31_ROPE = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192, "rope_type": "llama3"}
_LLAMA31_EOS = [128001, 128008, 128009]


def _llama31(hidden, inter, heads, layers):
    return {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": 128000, "eos_token_id": _LLAMA31_EOS, "hidden_act": "silu", "hidden_size": hidden,
            "initializer_range": 0.02, "intermediate_size": inter,
            "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
            "num_attention_heads": heads, "num_hidden_layers": layers, "num_key_value_heads": 8,
            "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": dict(_LLAMA31_ROPE),
            "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "dtype": "bfloat16", "use_cache": True, "vocab_size": 128256}


def _qwen25(hidden, inter, heads, layers, max_window_layers):
    return {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
            "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": hidden, "initializer_range": 0.02,
            "intermediate_size": inter, "max_position_embeddings": 32768, "max_window_layers": max_window_layers,
            "model_type": "qwen2", "num_attention_heads": heads, "num_hidden_layers": layers,
            "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "dtype": "bfloat16", "use_cache": True,
            "use_sliding_window": False, "vocab_size": 152064}


_LLAMA31_GEN = {"bos_token_id": 128000, "do_sample": True, "eos_token_id": _LLAMA31_EOS,
                "temperature": 0.6, "top_p": 0.9}
_QWEN25_GEN = {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
               "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20}

# name -> (config.json, generation_config.json), as published for the Instruct models
SHAPES = {
    "llama-3.1-8b": (_llama31(4096, 14336, 32, 32), _LLAMA31_GEN),
    "llama-3.1-70b": (_llama31(8192, 28672, 64, 80), _LLAMA31_GEN),
    "qwen2.5-32b": (_qwen25(5120, 27648, 40, 64, 70), _QWEN25_GEN),
    "qwen2.5-72b": (_qwen25(8192, 29568, 64, 80, 80), _QWEN25_GEN),
    "tiny": (_llama31(4096, 14336, 32, 2), _LLAMA31_GEN),
}


def tensor_plan(cfg):
    """[(name, shape, kind)] in the order transformers saves them; kind: weight, norm or bias."""
    h, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    qkv_bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)
    plan = [("model.embed_tokens.weight", (v, h), "weight")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for proj, rows in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
            plan.append((f"{p}self_attn.{proj}.weight", (rows, h), "weight"))
            if qkv_bias:
                plan.append((f"{p}self_attn.{proj}.bias", (rows,), "bias"))
        plan.append((f"{p}self_attn.o_proj.weight", (h, q), "weight"))
        plan += [(f"{p}mlp.gate_proj.weight", (inter, h), "weight"), (f"{p}mlp.up_proj.weight", (inter, h), "weight"),
                 (f"{p}mlp.down_proj.weight", (h, inter), "weight"),
                 (f"{p}input_layernorm.weight", (h,), "norm"), (f"{p}post_attention_layernorm.weight", (h,), "norm")]
    plan += [("model.norm.weight", (h,), "norm"), ("lm_head.weight", (v, h), "weight")]
    return plan


def nbytes(shape):
    n = 2  # bf16
    for d in shape:
        n *= d
    return n


def split_shards(plan):
    shards, cur, size = [], [], 0
    for t in plan:
        if cur and size + nbytes(t[1]) > SHARD_BYTES:
            shards.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += nbytes(t[1])
    return shards + [cur]


def make_tensor(name, shape, kind, seed, dev):
    import torch
    if kind == "norm":
        return torch.ones(shape, dtype=torch.bfloat16, device=dev)
    g = torch.Generator(device=dev)
    g.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    t = torch.randn(shape, generator=g, dtype=torch.bfloat16, device=dev)
    return t.mul_(0.02 if kind == "weight" else 0.01)


def tokenizer_max_id(path):
    with open(os.path.join(path, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]
    ids = list(vocab.values()) if isinstance(vocab, dict) else [len(vocab) - 1]
    return max(ids + [a["id"] for a in tok.get("added_tokens", [])])


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def is_complete(out, stamp, shard_names):
    try:
        with open(os.path.join(out, STAMP), encoding="utf-8") as f:
            if json.load(f) != stamp:
                return False
        with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
            if json.load(f) != stamp["config"]:
                return False
    except (OSError, ValueError):
        return False
    return all(os.path.isfile(os.path.join(out, n)) for n in
               shard_names + ["model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"])


def check_with_transformers(out, cfg):
    try:
        import transformers
    except ImportError:
        print("transformers is not installed: AutoConfig check skipped", flush=True)
        return
    ac = transformers.AutoConfig.from_pretrained(out)
    for key in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "tie_word_embeddings"):
        if getattr(ac, key) != cfg[key]:
            sys.exit(f"transformers reads {key} = {getattr(ac, key)!r}, the config says {cfg[key]!r}")
    print(f"transformers {transformers.__version__} AutoConfig accepts it: {type(ac).__name__}", flush=True)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", required=True, help="folder with tokenizer.json and tokenizer_config.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, help="override num_hidden_layers")
    ap.add_argument("--config-only", action="store_true", help="configs and tokenizer, no weights")
    args = ap.parse_args(argv)

    cfg, gen = (json.loads(json.dumps(x)) for x in SHAPES[args.shape])
    if args.layers is not None:
        if args.layers < 1:
            sys.exit("--layers must be at least 1")
        cfg["num_hidden_layers"] = args.layers
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not os.path.isfile(os.path.join(args.tokenizer, name)):
            sys.exit(f"{args.tokenizer} has no {name}")
    max_id = tokenizer_max_id(args.tokenizer)
    if max_id >= cfg["vocab_size"]:
        sys.exit(f"the tokenizer in {args.tokenizer} has ids up to {max_id}, beyond vocab_size {cfg['vocab_size']}")

    plan = tensor_plan(cfg)
    shards = split_shards(plan)
    names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    total = sum(nbytes(s) for _, s, _ in plan)
    stamp = {"shape": args.shape, "seed": args.seed, "config": cfg, "generation_config": gen}
    out = args.out
    os.makedirs(out, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # cheap: always (re)copied
        shutil.copyfile(os.path.join(args.tokenizer, name), os.path.join(out, name))
    if args.config_only:
        write_json(os.path.join(out, "config.json"), cfg)
        write_json(os.path.join(out, "generation_config.json"), gen)
        print(f"{out}: {args.shape} config and tokenizer, no weights ({total / 1e9:.2f} GB in bf16)")
        return 0
    if is_complete(out, stamp, names):
        print(f"{out}: already a complete {args.shape} model (seed {args.seed}), {total / 1e9:.2f} GB: nothing to do")
        check_with_transformers(out, cfg)
        return 0

    free = shutil.disk_usage(out).free
    old = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out) if n.endswith(".safetensors"))
    if free + old < total * 1.01:
        sys.exit(f"{out}: {total / 1e9:.1f} GB of weights do not fit in {(free + old) / 1e9:.1f} GB free")
    if os.path.exists(os.path.join(out, STAMP)):
        os.remove(os.path.join(out, STAMP))
    for n in os.listdir(out):  # shards of an earlier, different or unfinished model
        if n.endswith(".safetensors") or n.endswith(".safetensors.tmp"):
            os.remove(os.path.join(out, n))
    write_json(os.path.join(out, "config.json"), cfg)
    write_json(os.path.join(out, "generation_config.json"), gen)

    import torch
    from safetensors.torch import save_file

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{out}: {args.shape}, {cfg['num_hidden_layers']} layers, {len(plan)} tensors, {total / 1e9:.2f} GB "
          f"in {len(shards)} shards, drawn on {dev} (seed {args.seed})", flush=True)
    t0, written, weight_map = time.time(), 0, {}
    writer, error = None, []

    def write(tensors, path):
        try:
            save_file(tensors, path + ".tmp", metadata={"format": "pt"})
            os.chmod(path + ".tmp", 0o644)
            os.replace(path + ".tmp", path)
        except BaseException as e:  # reported by the main thread
            error.append(e)

    for k, (shard, name) in enumerate(zip(shards, names)):
        tensors = {n: make_tensor(n, s, kind, args.seed, dev).cpu() for n, s, kind in shard}
        if writer:  # one shard on its way to the disk while the next is drawn
            writer.join()
        if error:
            raise error[0]
        writer = threading.Thread(target=write, args=(tensors, os.path.join(out, name)))
        writer.start()
        weight_map.update({n: name for n, _, _ in shard})
        written += sum(nbytes(s) for _, s, _ in shard)
        el = time.time() - t0
        print(f"  [{k + 1}/{len(shards)}] {name}: {len(shard)} tensors, {written / 1e9:.1f} / {total / 1e9:.1f} GB "
              f"drawn, {el:.0f} s", flush=True)
    writer.join()
    if error:
        raise error[0]
    write_json(os.path.join(out, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": weight_map})
    write_json(os.path.join(out, STAMP), stamp)
    el = time.time() - t0
    on_disk = sum(os.path.getsize(os.path.join(out, n)) for n in names)
    print(f"wrote {on_disk} bytes ({on_disk / 1e9:.2f} GB) in {len(shards)} shards to {out} in {el:.1f} s "
          f"({on_disk / 1e9 / max(el, 1e-9):.2f} GB/s)", flush=True)
    check_with_transformers(out, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
