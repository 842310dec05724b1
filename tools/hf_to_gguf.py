#!/usr/bin/env python3
"""hf_to_gguf.py -- write a converted Hugging Face folder (the default model
from tools/convert_gguf.py) back out as a BF16 (or F32) GGUF for llama.cpp,
so that the llama.cpp peer in bench/ runs the very same weights at the same
precision as shardlm.

It is the mirror of convert_gguf.py: Hugging Face names become llama.cpp's,
the rows of q_proj / k_proj get llama.cpp's rotary order again (query heads
for q, KV heads for k), 1-D norms stay F32 as llama.cpp expects, and the
byte-level BPE tokenizer, its special tokens and the chat template go into the
tokenizer.ggml.* metadata. BF16 weights are copied bit for bit (no rounding).

Only Llama folders whose tokenizer is SmolLM2's (Digits then ByteLevel) are
accepted; anything else is a clear error rather than a silently wrong GGUF.

Usage: hf_to_gguf.py HF_DIR OUT.gguf [--outtype bf16|f32]
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

import convert_gguf as cv

SMOLLM_PRE = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
ST_DTYPES = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}


def gguf_name(hf):
    """Hugging Face tensor name -> llama.cpp's; ConvertError when unknown."""
    for g, h in cv.GLOBAL_TENSORS.items():
        if hf == h + ".weight":
            return g + ".weight"
    parts = hf.split(".")
    if len(parts) >= 5 and parts[:2] == ["model", "layers"] and parts[2].isdigit():
        inner = ".".join(parts[3:-1])
        for g, h in cv.LAYER_TENSORS.items():
            if inner == h:
                return f"blk.{parts[2]}.{g}.weight"
    raise cv.ConvertError(f"tensor {hf} has no llama.cpp name")


def read_safetensors(path):
    """{name: (dtype, shape, array view)} of one safetensors file, memory-mapped."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in ST_DTYPES:
            raise cv.ConvertError(f"{path}: tensor {name} has dtype {info['dtype']} (BF16, F16 or F32 expected)")
        a, b = info["data_offsets"]
        arr = data[a:b].view(ST_DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = (info["dtype"], tuple(info["shape"]), arr)
    return out


def to_f32(dtype, arr):
    return cv.bf16_bits_to_f32(arr) if dtype == "BF16" else np.asarray(arr, dtype=np.float32)


def load_json(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise cv.ConvertError(f"{path}: missing; is {folder} a folder written by tools/convert_gguf.py?")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def add_tokenizer(w, folder, config):
    import gguf
    tj = load_json(folder, "tokenizer.json")
    tc = load_json(folder, "tokenizer_config.json")
    if tj["model"]["type"] != "BPE" or tj.get("pre_tokenizer") != SMOLLM_PRE:
        raise cv.ConvertError(f"{folder}/tokenizer.json: only SmolLM2's byte-level BPE "
                              "(Digits then ByteLevel) is supported")
    vocab = tj["model"]["vocab"]
    tokens = [None] * len(vocab)
    for s, i in vocab.items():
        tokens[i] = s
    if None in tokens:
        raise cv.ConvertError(f"{folder}/tokenizer.json: vocabulary ids are not 0..{len(vocab) - 1}")
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for a in tj["added_tokens"]:
        types[a["id"]] = gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(config["bos_token_id"])
    w.add_eos_token_id(config["eos_token_id"])
    w.add_pad_token_id(config.get("pad_token_id", config["eos_token_id"]))
    w.add_unk_token_id(vocab.get(tc.get("unk_token"), 0))
    w.add_add_bos_token(bool(tc.get("add_bos_token", False)))
    w.add_add_space_prefix(False)
    if tc.get("chat_template"):
        w.add_chat_template(tc["chat_template"])


def convert(folder, out_path, outtype="bf16", log=print):
    import gguf
    config = load_json(folder, "config.json")
    if config.get("architectures") != ["LlamaForCausalLM"] or config.get("rope_scaling"):
        raise cv.ConvertError(f"{folder}/config.json: only LlamaForCausalLM without rope scaling is supported")
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    st_path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(st_path):
        raise cv.ConvertError(f"{st_path}: missing (only single-file safetensors is supported)")
    tensors = read_safetensors(st_path)

    w = gguf.GGUFWriter(out_path, "llama")
    w.add_name(os.path.basename(os.path.normpath(folder)))
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(config.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_dimension_count(head_dim)
    if head_dim * n_head != config["hidden_size"]:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_vocab_size(config["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if outtype == "bf16" else gguf.LlamaFileType.ALL_F32)
    add_tokenizer(w, folder, config)

    for i, (name, (dtype, shape, arr)) in enumerate(tensors.items()):
        target = gguf_name(name)
        n_rot = n_head if target.endswith("attn_q.weight") else n_kv if target.endswith("attn_k.weight") else 0
        if len(shape) == 1 or outtype == "f32":
            w.add_tensor(target, to_f32(dtype, arr) if not n_rot else cv.permute_rotary(to_f32(dtype, arr), n_rot))
        else:
            bits = np.asarray(arr) if dtype == "BF16" else cv.f32_to_bf16_bits(to_f32(dtype, arr))
            if n_rot:
                bits = cv.permute_rotary(bits, n_rot)
            w.add_tensor(target, np.ascontiguousarray(bits), raw_dtype=gguf.GGMLQuantizationType.BF16)
        if i % 30 == 29 or i + 1 == len(tensors):
            log(f"hf_to_gguf: [{i + 1:3d}/{len(tensors)}] {target}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    log(f"hf_to_gguf: wrote {out_path} ({os.path.getsize(out_path) / 1e6:.0f} MB, {outtype})")


def main(argv):
    ap = argparse.ArgumentParser(description="Write a converted Hugging Face Llama folder as a GGUF.")
    ap.add_argument("folder", help="Hugging Face folder (from tools/convert_gguf.py)")
    ap.add_argument("out", help="output .gguf file")
    ap.add_argument("--outtype", choices=("bf16", "f32"), default="bf16")
    args = ap.parse_args(argv)
    try:
        convert(args.folder, args.out, args.outtype, log=lambda s: print(s, flush=True))
    except (cv.ConvertError, OSError, KeyError) as e:
        print(f"hf_to_gguf: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
