"""Errors reach Python as exceptions carrying the engine's own message:
ValueError for what the caller can fix, RuntimeError otherwise, TypeError
for an unknown engine argument (naming the closest valid one)."""

import os
import subprocess
import sys

import pytest

from conftest import FIXTURES, ROOT

from shardlm import LLM, SamplingParams
from shardlm.llm import parse_bytes

GQA = os.path.join(FIXTURES, "llama_gqa")


def test_unknown_engine_argument_names_the_closest():
    with pytest.raises(TypeError, match="'max_num_seq'.*did you mean 'max_num_seqs'"):
        LLM(model=GQA, max_num_seq=4)
    with pytest.raises(TypeError, match="valid engine arguments"):
        LLM(model=GQA, zzzz=1)


def test_bad_model_and_device():
    with pytest.raises(RuntimeError, match="neither a folder nor a hub id"):
        LLM(model="no-such-model-folder")
    with pytest.raises(ValueError, match="device must be"):
        LLM(model=GQA, device="tpu")


@pytest.mark.parametrize("name", ["max_model_len", "max_num_seqs", "max_num_batched_tokens", "block_size",
                                  "n_threads"])
@pytest.mark.parametrize("value", [0, -5, 2.5, "64"])
def test_engine_counts_are_positive_integers(name, value):
    # the engine reads 0 as "the default": a 0 or a negative count given here must not quietly become it
    with pytest.raises(ValueError, match=f"{name} must be an integer of at least 1, got {value!r}"):
        LLM(model=GQA, **{name: value})


def test_bad_parameters_raise_value_error_with_the_c_message(fixture_model):
    _, llm, seqs = fixture_model
    prompt = {"prompt_token_ids": seqs[0]["prompt"]}
    with pytest.raises(ValueError, match="temperature"):
        llm.generate(prompt, SamplingParams(temperature=-1), use_tqdm=False)
    with pytest.raises(ValueError, match="maximum context length is 128 tokens"):
        llm.generate(prompt, SamplingParams(max_tokens=500), use_tqdm=False)
    with pytest.raises(ValueError, match="n must be between 1"):
        llm.generate(prompt, SamplingParams(n=0), use_tqdm=False)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate({"prompt_token_ids": [10**6]}, use_tqdm=False)
    with pytest.raises(ValueError, match="no tokenizer.json"):
        llm.generate("text needs a tokenizer", use_tqdm=False)
    with pytest.raises(ValueError, match="2 sampling_params for 1 prompts"):
        llm.generate(prompt, [SamplingParams(), SamplingParams()], use_tqdm=False)
    with pytest.raises(TypeError):
        llm.generate(42, use_tqdm=False)


def test_failed_batch_leaves_the_engine_usable(fixture_model):
    _, llm, seqs = fixture_model
    prompts = [{"prompt_token_ids": seqs[0]["prompt"]}, {"prompt_token_ids": seqs[1]["prompt"]}]
    with pytest.raises(ValueError):
        llm.generate(prompts, [SamplingParams(max_tokens=50), SamplingParams(temperature=-1)], use_tqdm=False)
    out = llm.generate(prompts[1], SamplingParams(temperature=0, ignore_eos=True), use_tqdm=False)[0]
    assert out.outputs[0].token_ids == seqs[1]["greedy"]


def test_closed_engine():
    llm = LLM(model=GQA, quiet=True, max_model_len=64)
    llm.close()
    llm.close()
    with pytest.raises(RuntimeError, match="closed"):
        llm.generate({"prompt_token_ids": [1, 2]}, use_tqdm=False)


def test_chat_without_template(fixture_model):
    _, llm, _ = fixture_model
    with pytest.raises(ValueError, match="no chat template"):
        llm.chat([{"role": "user", "content": "hi"}], use_tqdm=False)


def test_kv_cache_memory_sizes():
    assert parse_bytes("2G") == 2_000_000_000 and parse_bytes("2GiB") == 2 << 30
    assert parse_bytes(4096) == 4096 and parse_bytes("512 MiB") == 512 << 20 and parse_bytes("1.5k") == 1500
    with pytest.raises(ValueError, match="cannot read"):
        parse_bytes("lots")
    with pytest.raises(RuntimeError, match="too small"):
        LLM(model=GQA, kv_cache_memory="1K", quiet=True)


def test_missing_library_is_an_import_error():
    env = dict(os.environ, SHARDLM_LIBRARY=os.path.join(ROOT, "no-such-libshardlm.so"))
    run = subprocess.run([sys.executable, "-c", "import shardlm; shardlm.lib_version()"], env=env,
                         capture_output=True, text=True)
    assert run.returncode != 0 and "ImportError: cannot load libshardlm" in run.stderr
    assert "SHARDLM_LIBRARY" in run.stderr


def test_parallel_needs_the_worker_executable(monkeypatch):
    monkeypatch.setenv("SHARDLM_WORKER_EXE", "/nonexistent/shardlm")
    with pytest.raises(RuntimeError, match="SHARDLM_WORKER_EXE"):
        LLM(model=GQA, tensor_parallel_size=2)
