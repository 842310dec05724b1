#!/usr/bin/env python3
"""test_converted.py -- the converted default model (models/SmolLM2-135M-Instruct,
written by tools/get-default-model.sh) against outside truth: its tensors
against `gguf.quants.dequantize` of the original GGUF, its config against the
GGUF metadata, its tokenizer.json in Hugging Face `tokenizers` against the GGUF
vocabulary and llama.cpp's tokenization (recorded), and its chat template in
jinja2 against transformers' rendering (recorded in golden.json), and the
BF16 GGUF of tools/hf_to_gguf.py against the original GGUF's metadata and by
converting it back (byte-identical files). Skips (77) when the converted model is absent."""

import json
import os

import harness
from harness import convert_gguf as cv

if not os.path.isfile(os.path.join(harness.MODEL, cv.MARKER)):
    harness.skip(f"{harness.MODEL} is absent; run tools/get-default-model.sh")
if not os.path.isfile(harness.GGUF):
    harness.skip(f"{harness.GGUF} is absent; run tools/get-default-model.sh")

import gguf  # noqa: E402
import jinja2.sandbox  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from safetensors import safe_open  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

MODEL = harness.MODEL
FIX = os.path.join(harness.FIXTURES, "smollm2")


def load_json(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def reader():
    return gguf.GGUFReader(harness.GGUF)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))


@pytest.fixture(scope="module")
def weights():
    return harness.read_bf16_safetensors(os.path.join(MODEL, "model.safetensors"))


def field(reader, key):
    return reader.fields[key].contents()


# --------------------------------------------------------------- tensors ---

def test_every_gguf_tensor_dequantizes_like_gguf(reader):
    seen = set()
    for t in reader.tensors:
        ours = cv.tensor_to_f32(int(t.tensor_type), t.data, t.name)
        ref = gguf.quants.dequantize(t.data, t.tensor_type)
        np.testing.assert_array_equal(ours, ref, err_msg=t.name)
        seen.add(t.tensor_type.name)
    assert seen == {"Q4_1", "Q8_0", "F32"}


def test_safetensors_names_dtypes_shapes():
    names = {"model.embed_tokens.weight": (49152, 576), "model.norm.weight": (576,)}
    for i in range(30):
        p = f"model.layers.{i}."
        names.update({p + "input_layernorm.weight": (576,), p + "post_attention_layernorm.weight": (576,),
                      p + "self_attn.q_proj.weight": (576, 576), p + "self_attn.k_proj.weight": (192, 576),
                      p + "self_attn.v_proj.weight": (192, 576), p + "self_attn.o_proj.weight": (576, 576),
                      p + "mlp.gate_proj.weight": (1536, 576), p + "mlp.up_proj.weight": (1536, 576),
                      p + "mlp.down_proj.weight": (576, 1536)})
    with safe_open(os.path.join(MODEL, "model.safetensors"), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(names)
        assert f.metadata() == {"format": "pt"}
        for name in f.keys():
            s = f.get_slice(name)
            assert (s.get_dtype(), tuple(s.get_shape())) == ("BF16", names[name]), name


@pytest.mark.parametrize("layer", [0, 17, 29])
def test_tensor_values_are_bf16_of_the_dequantized_gguf(reader, weights, layer):
    header, w = weights
    by_name = {t.name: t for t in reader.tensors}
    pairs = {"attn_q": ("self_attn.q_proj", 9), "attn_k": ("self_attn.k_proj", 3),
             "attn_v": ("self_attn.v_proj", None), "attn_output": ("self_attn.o_proj", None),
             "ffn_gate": ("mlp.gate_proj", None), "ffn_down": ("mlp.down_proj", None),
             "attn_norm": ("input_layernorm", None), "ffn_norm": ("post_attention_layernorm", None)}
    checks = [(f"blk.{layer}.{g}.weight", f"model.layers.{layer}.{h}.weight", n) for g, (h, n) in pairs.items()]
    if layer == 0:
        checks += [("token_embd.weight", "model.embed_tokens.weight", None),
                   ("output_norm.weight", "model.norm.weight", None)]
    for src, dst, n_head in checks:
        t = by_name[src]
        x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(w[dst].shape)
        if n_head:
            x = cv.unpermute_rotary(x, n_head)
        np.testing.assert_array_equal(w[dst], cv.bf16_bits_to_f32(cv.f32_to_bf16_bits(x)), err_msg=dst)


# ---------------------------------------------------------------- config ---

def test_config_from_metadata(reader):
    c = load_json(MODEL, "config.json")
    assert c["architectures"] == ["LlamaForCausalLM"] and c["model_type"] == "llama"
    expect = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
              "head_dim": 64, "intermediate_size": 1536, "vocab_size": 49152, "max_position_embeddings": 8192,
              "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": True, "hidden_act": "silu",
              "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "torch_dtype": "bfloat16"}
    assert {k: c[k] for k in expect} == expect
    assert c["hidden_size"] == field(reader, "llama.embedding_length")
    assert c["num_hidden_layers"] == field(reader, "llama.block_count")
    assert c["rope_theta"] == pytest.approx(field(reader, "llama.rope.freq_base"), rel=1e-7)
    assert load_json(MODEL, "generation_config.json") == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


# ------------------------------------------------------------- tokenizer ---

def test_tokenizer_pipeline():
    t = load_json(MODEL, "tokenizer.json")
    assert t["normalizer"] is None
    assert t["pre_tokenizer"] == {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    m = t["model"]
    assert (m["type"], m["unk_token"], m["byte_fallback"], m["dropout"], m["ignore_merges"]) == \
        ("BPE", None, False, None, False)
    assert t["decoder"]["type"] == "ByteLevel"
    assert [a["id"] for a in t["added_tokens"]] == list(range(17))
    assert all(a["special"] for a in t["added_tokens"])


def test_tokenizer_vocab_matches_gguf(reader, tok):
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert tok.get_vocab_size() == len(tokens) == 49152
    assert all(tok.token_to_id(s) == i for i, s in enumerate(tokens))
    assert len(load_json(MODEL, "tokenizer.json")["model"]["merges"]) == len(field(reader, "tokenizer.ggml.merges"))


def test_digits_are_split_one_by_one(tok):
    ids = tok.encode("12345", add_special_tokens=False).ids
    assert [tok.id_to_token(i) for i in ids] == list("12345")
    assert [tok.id_to_token(i) for i in tok.encode(" 2024!", add_special_tokens=False).ids] == \
        ["Ġ", "2", "0", "2", "4", "!"]


def test_chatml_special_tokens(tok):
    ids = tok.encode("<|im_start|>user\nHi<|im_end|>\n", add_special_tokens=False).ids
    assert ids[0] == 1 and ids[-2] == 2 and ids.count(1) == 1 and ids.count(2) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "user\nHi\n"


def test_bytes_missing_from_the_vocabulary_are_dropped(tok):
    ab = tok.encode("a b", add_special_tokens=False).ids
    assert tok.encode("a\x04 b", add_special_tokens=False).ids == ab  # 0x04 has no token
    assert tok.decode(tok.encode("café", add_special_tokens=False).ids) == "café"


def test_tokenization_matches_llamacpp(tok):
    cases = load_json(FIX, "tokenizer_cases.json")
    assert len(cases["cases"]) >= 8
    for case in cases["cases"]:
        assert tok.encode(case["text"], add_special_tokens=False).ids == case["ids"], case["text"]


# --------------------------------------------------------- chat template ---

def render(messages, add_generation_prompt=True):
    """The chat template rendered the way transformers does (sandboxed jinja2,
    trim_blocks and lstrip_blocks)."""
    template = load_json(MODEL, "tokenizer_config.json")["chat_template"]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


def test_chat_template_default_system_turn(reader):
    assert load_json(MODEL, "tokenizer_config.json")["chat_template"] == field(reader, "tokenizer.chat_template")
    assert render([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                  add_generation_prompt=False) == \
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def test_tokenizer_config():
    c = load_json(MODEL, "tokenizer_config.json")
    assert (c["bos_token"], c["eos_token"], c["pad_token"]) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert c["model_max_length"] == 8192 and c.get("add_bos_token", False) is False
    assert load_json(MODEL, "special_tokens_map.json")["eos_token"] == "<|im_end|>"


def test_golden_prompts_match_transformers(tok):
    golden = load_json(FIX, "golden.json")
    for case in golden["cases"]:
        if "text" in case:
            text = case["text"]
        else:
            text = render(case["messages"])
            assert text == case["rendered"], case["name"]
        assert tok.encode(text, add_special_tokens=False).ids == case["prompt_ids"], case["name"]
        assert tok.decode(case["greedy_ids"], skip_special_tokens=False) == case["greedy_text"], case["name"]


# ------------------------------------------------ the GGUF for llama.cpp ---

def test_hf_to_gguf_round_trip(reader, tmp_path):
    import hf_to_gguf
    out = str(tmp_path / "smollm2-bf16.gguf")
    hf_to_gguf.convert(MODEL, out, "bf16", log=lambda s: None)
    written = gguf.GGUFReader(out)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.chat_template", "llama.block_count", "llama.attention.head_count_kv",
                "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.context_length"):
        assert field(written, key) == field(reader, key), key
    assert sorted(t.name for t in written.tensors) == sorted(t.name for t in reader.tensors)
    assert {t.tensor_type.name for t in written.tensors if len(t.shape) == 2} == {"BF16"}
    back = str(tmp_path / "back")
    cv.convert(out, back, log=lambda s: None)
    for name in sorted(os.listdir(MODEL)):
        if name != cv.MARKER:
            with open(os.path.join(MODEL, name), "rb") as a, open(os.path.join(back, name), "rb") as b:
                assert a.read() == b.read(), name


if __name__ == "__main__":
    harness.run(__file__)
