#!/usr/bin/env python3
"""test_quant_rotary.py -- the parts of tools/convert_gguf.py that need no
downloaded model: block dequantization against the `gguf` package's own
dequantize, bf16 rounding, the rotary un-permutation against llama.cpp's
permutation, and a whole conversion of a tiny GGUF written with GGUFWriter."""

import json
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

import harness
from harness import convert_gguf as cv

RNG = np.random.default_rng(20240611)


# ---------------------------------------------------------------- blocks ---

def random_scales(n):
    """fp16 scales: ordinary values plus zero, negatives, subnormals and the max."""
    d = (RNG.standard_normal(n) * 0.05).astype(np.float16)
    specials = np.array([0.0, -0.0, 6e-8, -3e-6, 65504.0, -1.0], dtype=np.float16)
    d[: len(specials)] = specials[: n]
    return d


def random_blocks(qtype, n):
    """n random blocks of `qtype` as raw bytes, shape (n, block bytes)."""
    qs_bytes = {QT.Q4_0: 16, QT.Q4_1: 16, QT.Q8_0: 32}[qtype]
    fields = [random_scales(n).view(np.uint8).reshape(n, 2)]
    if qtype == QT.Q4_1:
        fields.append(random_scales(n)[::-1].copy().view(np.uint8).reshape(n, 2))
    fields.append(RNG.integers(0, 256, size=(n, qs_bytes), dtype=np.uint8))
    return np.concatenate(fields, axis=1)


@pytest.mark.parametrize("qtype", [QT.Q4_0, QT.Q4_1, QT.Q8_0])
def test_random_blocks_match_gguf(qtype):
    raw = random_blocks(qtype, 4096).reshape(64, -1)  # 64 rows of 64 blocks
    ours = cv.tensor_to_f32(int(qtype), raw, "random")
    ref = gguf.quants.dequantize(raw, qtype)
    assert ours.shape == ref.shape == (64, 64 * 32)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref.astype(np.float32))


@pytest.mark.parametrize("qtype", [QT.Q4_0, QT.Q4_1, QT.Q8_0])
def test_quantized_then_dequantized_matches_gguf(qtype):
    x = RNG.standard_normal((8, 256)).astype(np.float32)
    raw = gguf.quants.quantize(x, qtype)
    np.testing.assert_array_equal(cv.tensor_to_f32(int(qtype), raw, "x"), gguf.quants.dequantize(raw, qtype))


def test_q4_1_block_by_hand():
    # d = 0.5, m = -1: low nibbles are values 0..15, high nibbles 16..31.
    qs = np.arange(16, dtype=np.uint8) | (np.uint8(15) << 4)
    raw = np.concatenate([np.array([0.5, -1.0], dtype=np.float16).view(np.uint8), qs])
    y = cv.dequantize_q4_1(raw[None, :])[0]
    np.testing.assert_array_equal(y[:16], np.arange(16) * 0.5 - 1)
    np.testing.assert_array_equal(y[16:], np.full(16, 15 * 0.5 - 1))


def test_partial_block_is_an_error():
    with pytest.raises(cv.ConvertError, match="not whole blocks"):
        cv.dequantize_q8_0(np.zeros((2, 33), dtype=np.uint8))


def test_unsupported_type_is_an_error():
    with pytest.raises(cv.ConvertError, match="ggml type 12 is not supported"):
        cv.tensor_to_f32(int(QT.Q4_K), np.zeros((1, 144), dtype=np.uint8), "blk.0.attn_q.weight")


# ------------------------------------------------------------------ bf16 ---

def test_bf16_round_to_nearest_even():
    cases = {  # f32 bits -> bf16 bits
        0x3F800000: 0x3F80,  # 1.0
        0x3F808000: 0x3F80,  # tie, even below: stays
        0x3F818000: 0x3F82,  # tie, odd below: rounds up to even
        0x3F808001: 0x3F81,  # above the tie
        0x3F807FFF: 0x3F80,  # below the tie
        0x80000000: 0x8000,  # -0.0
        0x7F800000: 0x7F80,  # inf
        0x7F7FFFFF: 0x7F80,  # largest float rounds to inf
        0x00000001: 0x0000,  # smallest subnormal rounds to zero
        0xC0490FDB: 0xC049,  # -pi
    }
    bits = np.array(list(cases), dtype=np.uint32)
    got = cv.f32_to_bf16_bits(bits.view(np.float32))
    assert [hex(int(v)) for v in got] == [hex(v) for v in cases.values()]


def test_bf16_nan_stays_nan():
    x = np.array([np.nan, -np.nan], dtype=np.float32)
    assert np.isnan(cv.bf16_bits_to_f32(cv.f32_to_bf16_bits(x))).all()


def test_bf16_is_the_nearest_value():
    x = (RNG.standard_normal(100000) * 10).astype(np.float32)
    r = cv.bf16_bits_to_f32(cv.f32_to_bf16_bits(x))
    bits = r.view(np.uint32)
    up = ((bits + (1 << 16)).view(np.float32))  # neighbours in bf16 (same sign)
    down = ((bits - (1 << 16)).view(np.float32))
    err = np.abs(x - r)
    assert (err <= np.abs(x - up)).all() and (err <= np.abs(x - down)).all()


# ---------------------------------------------------------------- rotary ---

def llamacpp_permute(w, n_head):
    """llama.cpp's q/k row order, spelled out: per head of dimension hd, row 2i
    is Hugging Face row i and row 2i+1 is row hd/2 + i."""
    hd = w.shape[0] // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for i in range(hd // 2):
            out[h * hd + 2 * i] = w[h * hd + i]
            out[h * hd + 2 * i + 1] = w[h * hd + hd // 2 + i]
    return out


@pytest.mark.parametrize("n_head,head_dim,cols", [(9, 64, 5), (3, 64, 7), (1, 8, 3), (4, 16, 1), (32, 128, 2)])
def test_unpermute_inverts_llamacpp(n_head, head_dim, cols):
    w = RNG.standard_normal((n_head * head_dim, cols)).astype(np.float32)
    permuted = llamacpp_permute(w, n_head)
    np.testing.assert_array_equal(cv.permute_rotary(w, n_head), permuted)
    np.testing.assert_array_equal(cv.unpermute_rotary(permuted, n_head), w)
    np.testing.assert_array_equal(llamacpp_permute(cv.unpermute_rotary(w, n_head), n_head), w)


def test_k_needs_the_kv_head_count():
    # The known bug: un-permuting k (4 KV heads) with the 8 query heads.
    w = RNG.standard_normal((4 * 16, 4)).astype(np.float32)
    permuted = llamacpp_permute(w, 4)
    assert not np.array_equal(cv.unpermute_rotary(permuted, 8), w)
    with pytest.raises(cv.ConvertError, match="192 rows do not split into 9 heads"):
        cv.unpermute_rotary(np.zeros((3 * 64, 4), dtype=np.float32), 9)


# ------------------------------------------------- a whole tiny conversion ---

TINY = {"layers": 2, "hidden": 64, "heads": 4, "kv": 2, "ffn": 96}
TINY_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "c", "Ġ", "1", "2", "ab", "Ġa"]
TINY_MERGES = ["a b", "Ġ a"]


def write_tiny_gguf(path, arch="llama", extra_tensor=None):
    """A 2-layer Llama GGUF: projections Q4_1 / Q8_0 / F16, norms F32, q/k in
    llama.cpp's order. Returns the Hugging Face fp32 weights it encodes."""
    t = TINY
    head_dim = t["hidden"] // t["heads"]
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(t["layers"])
    w.add_context_length(256)
    w.add_embedding_length(t["hidden"])
    w.add_feed_forward_length(t["ffn"])
    w.add_head_count(t["heads"])
    w.add_head_count_kv(t["kv"])
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(head_dim)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(TINY_TOKENS)
    w.add_token_types([3, 3, 3] + [1] * (len(TINY_TOKENS) - 3))
    w.add_token_merges(TINY_MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    hf = {}

    def add(gguf_name, hf_name, shape, qtype, n_head=None):
        x = RNG.standard_normal(shape).astype(np.float32)
        stored = llamacpp_permute(x, n_head) if n_head else x
        if qtype == QT.F32:
            w.add_tensor(gguf_name, stored)
            hf[hf_name] = x
            return
        raw = gguf.quants.quantize(stored, qtype)
        w.add_tensor(gguf_name, raw, raw_dtype=qtype)
        deq = gguf.quants.dequantize(raw, qtype).astype(np.float32).reshape(shape)
        hf[hf_name] = cv.unpermute_rotary(deq, n_head) if n_head else deq

    add("token_embd.weight", "model.embed_tokens.weight", (len(TINY_TOKENS), t["hidden"]), QT.Q8_0)
    add("output_norm.weight", "model.norm.weight", (t["hidden"],), QT.F32)
    for i in range(t["layers"]):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        add(p + "attn_norm.weight", q + "input_layernorm.weight", (t["hidden"],), QT.F32)
        add(p + "ffn_norm.weight", q + "post_attention_layernorm.weight", (t["hidden"],), QT.F32)
        add(p + "attn_q.weight", q + "self_attn.q_proj.weight", (t["hidden"], t["hidden"]), QT.Q4_1, t["heads"])
        add(p + "attn_k.weight", q + "self_attn.k_proj.weight", (t["kv"] * head_dim, t["hidden"]), QT.Q4_0, t["kv"])
        add(p + "attn_v.weight", q + "self_attn.v_proj.weight", (t["kv"] * head_dim, t["hidden"]), QT.F16)
        add(p + "attn_output.weight", q + "self_attn.o_proj.weight", (t["hidden"], t["hidden"]), QT.BF16)
        add(p + "ffn_gate.weight", q + "mlp.gate_proj.weight", (t["ffn"], t["hidden"]), QT.Q4_1)
        add(p + "ffn_up.weight", q + "mlp.up_proj.weight", (t["ffn"], t["hidden"]), QT.Q8_0)
        add(p + "ffn_down.weight", q + "mlp.down_proj.weight", (t["hidden"], t["ffn"]), QT.Q4_1)
    if extra_tensor:
        w.add_tensor(extra_tensor, np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf


def test_tiny_conversion(tmp_path):
    src = str(tmp_path / "tiny.gguf")
    hf = write_tiny_gguf(src)
    out = str(tmp_path / "tiny")
    cv.convert(src, out, log=lambda s: None)

    assert sorted(os.listdir(out)) == sorted([cv.MARKER, "config.json", "generation_config.json",
                                              "model.safetensors", "special_tokens_map.json",
                                              "tokenizer.json", "tokenizer_config.json"])
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["num_hidden_layers"] == 2 and config["num_key_value_heads"] == 2
    assert config["head_dim"] == 16 and config["rms_norm_eps"] == 1e-6
    assert config["tie_word_embeddings"] is True and config["vocab_size"] == len(TINY_TOKENS)

    from safetensors import safe_open
    with safe_open(os.path.join(out, "model.safetensors"), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(hf)
        for name in f.keys():
            assert f.get_slice(name).get_dtype() == "BF16"
            assert tuple(f.get_slice(name).get_shape()) == hf[name].shape

    _, weights = harness.read_bf16_safetensors(os.path.join(out, "model.safetensors"))
    for name, x in hf.items():
        expect = cv.bf16_bits_to_f32(cv.f32_to_bf16_bits(x))
        np.testing.assert_array_equal(weights[name], expect, err_msg=name)

    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    assert tok.encode("ab a12<|im_end|>", add_special_tokens=False).ids == [9, 10, 7, 8, 2]


def test_unknown_tensor_is_an_error(tmp_path):
    src = str(tmp_path / "extra.gguf")
    write_tiny_gguf(src, extra_tensor="rope_freqs.weight")
    with pytest.raises(cv.ConvertError, match="unexpected tensor rope_freqs.weight"):
        cv.convert(src, str(tmp_path / "out"), log=lambda s: None)
    assert not os.path.exists(tmp_path / "out")


def test_other_architecture_is_an_error(tmp_path):
    src = str(tmp_path / "gpt2.gguf")
    write_tiny_gguf(src, arch="gpt2")
    with pytest.raises(cv.ConvertError, match="architecture 'gpt2' is not supported"):
        cv.convert(src, str(tmp_path / "out"), log=lambda s: None)


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(harness.ROOT, "tools", "convert_gguf.py"), *args],
                          capture_output=True, text=True)


def test_cli_missing_file(tmp_path):
    r = run_cli(str(tmp_path / "absent.gguf"), str(tmp_path / "out"))
    assert r.returncode == 1
    assert r.stderr.startswith("convert_gguf: error: ") and "absent.gguf: no such file" in r.stderr
    assert r.stderr.count("\n") == 1


def test_cli_not_a_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    r = run_cli(str(bad), str(tmp_path / "out"))
    assert r.returncode == 1 and "not a readable GGUF file" in r.stderr
    assert r.stderr.count("\n") == 1


if __name__ == "__main__":
    harness.run(__file__)
