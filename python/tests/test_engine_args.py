"""vLLM's engine arguments `seed` and `dtype`, from LLM() and the CLI.

seed: requests without a seed of their own draw one from the engine's
generator in submission order, so two engines with the same seed sample the
same tokens at temperature 1 and different seeds differ; a request's own
seed still wins. `shardlm serve --seed` and `shardlm generate --seed` set it.
dtype: weights converted at load to the dtype asked for still give
transformers' greedy tokens and top-5 logprobs (golden.json: bf16 fixtures
through float32 exactly, through float16 within its rounding), and the
engine holds the converted size."""

import ctypes
import json
import os
import re
import subprocess
import threading
import urllib.request

import pytest

from conftest import DEFAULT_MODEL, EXACT, FIXTURES, load_json, need_default_model

from shardlm import LLM, SamplingParams, _lib

GQA = os.path.join(FIXTURES, "llama_gqa")
LOGPROB_TOL = 2e-3


def small_llm(model=GQA, **kw):
    return LLM(model=model, quiet=True, max_model_len=128, kv_cache_memory="64M", **EXACT, **kw)


def sampled(llm, prompts, **kw):
    params = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True, **kw)
    return [c.token_ids for o in llm.generate(prompts, params, use_tqdm=False) for c in o.outputs]


# ---------------- seed ----------------

def test_engine_seed_reproduces_unseeded_sampling():
    seqs = load_json(FIXTURES, "llama_gqa", "golden.json")["sequences"]
    prompts = [{"prompt_token_ids": s["prompt"]} for s in seqs]
    runs = []
    for seed in (1234, 1234, 1235):
        with small_llm(seed=seed) as llm:  # a batch, then one more request and an n=2 request
            runs.append(sampled(llm, prompts) + sampled(llm, prompts[0]) + sampled(llm, prompts[1], n=2))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert len(set(map(tuple, runs[0]))) > 1  # the requests drew different seeds


def test_request_seed_wins_over_the_engine_seed():
    prompt = {"prompt_token_ids": load_json(FIXTURES, "llama_gqa", "golden.json")["sequences"][0]["prompt"]}
    outs = []
    for seed in (1, 2, None):
        with small_llm(seed=seed) as llm:
            outs.append(sampled(llm, prompt, seed=77))
    assert outs[0] == outs[1] == outs[2]


def test_seed_must_be_an_int():
    with pytest.raises(TypeError, match="seed is an int"):
        small_llm(seed="7")


def cli():
    exe = os.environ.get("SHARDLM_WORKER_EXE")
    if not exe or not os.path.exists(exe):
        pytest.skip("SHARDLM_WORKER_EXE (the shardlm executable) is not set")
    return exe


def generate_cli(*args):
    run = subprocess.run([cli(), "generate", GQA, "--prompt-ids", "192,5,6", "--temperature", "1", "--max-tokens",
                          "12", "--ignore-eos", "--threads", "1", *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_generate_seed_is_the_engine_seed():
    assert generate_cli("--seed", "5") == generate_cli("--seed", "5")
    assert generate_cli("--seed", "5") != generate_cli("--seed", "6")


def serve_once(seed):
    """Starts `shardlm serve --seed`, samples one completion of token ids, stops it; its tokens."""
    proc = subprocess.Popen([cli(), "serve", GQA, "--host", "127.0.0.1", "--port", "0", "--threads", "1",
                             "--seed", str(seed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port, log = None, []
        for line in proc.stderr:
            log.append(line)
            m = re.search(r"serving .* on http://[^:]+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "server did not start:\n" + "".join(log)
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        body = {"prompt": [192, 5, 6], "max_tokens": 12, "temperature": 1.0, "ignore_eos": True, "logprobs": 0}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["choices"][0]["logprobs"]["tokens"]  # "token_id:N": no tokenizer
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_seed():
    assert serve_once(11) == serve_once(11)
    assert serve_once(11) != serve_once(12)


# ---------------- dtype ----------------

def weight_bytes(llm):
    info = _lib.EngineInfo()
    _lib.lib().sl_engine_get_info(llm._engine, ctypes.byref(info))
    return info.weight_bytes


def greedy_and_top5(llm, seq):
    params = SamplingParams(temperature=0, max_tokens=len(seq["greedy"]), ignore_eos=True, logprobs=5)
    return llm.generate({"prompt_token_ids": seq["prompt"]}, params, use_tqdm=False)[0].outputs[0]


@pytest.mark.parametrize("name", ["llama_gqa", "qwen2_bias", "llama3_tied"])
@pytest.mark.parametrize("dtype, tol", [("float32", LOGPROB_TOL), ("float", LOGPROB_TOL), ("float16", 2e-2),
                                        ("half", 2e-2), ("bfloat16", LOGPROB_TOL)])
def test_dtype_keeps_transformers_tokens(name, dtype, tol):
    seqs = load_json(FIXTURES, name, "golden.json")["sequences"]
    with small_llm(os.path.join(FIXTURES, name)) as base:
        base_bytes = weight_bytes(base)
    with small_llm(os.path.join(FIXTURES, name), dtype=dtype) as llm:
        for seq in seqs:
            out = greedy_and_top5(llm, seq)
            assert out.token_ids == seq["greedy"], (name, dtype)
            for entry, step in zip(out.logprobs, seq["steps"]):
                for tok, lp in step:
                    assert entry[tok].logprob == pytest.approx(lp, abs=tol), (name, dtype)
        converted = weight_bytes(llm)
    if dtype in ("float32", "float"):  # bf16 matrices held as float32: about twice the bytes (norms stay float32)
        assert 1.7 * base_bytes < converted < 2 * base_bytes
    else:
        assert converted == base_bytes


def test_dtype_float32_on_smollm2_keeps_its_greedy_text():
    need_default_model()
    golden = load_json(FIXTURES, "smollm2", "golden.json")
    cases = [c for c in golden["cases"] if "text" in c]
    with LLM(model=DEFAULT_MODEL, quiet=True, max_model_len=256, kv_cache_memory="128M", dtype="float32",
             **EXACT) as llm:
        outs = llm.generate([c["text"] for c in cases], SamplingParams(temperature=0, ignore_eos=True,
                            max_tokens=golden["max_new_tokens"]), use_tqdm=False)
    for case, out in zip(cases, outs):
        assert out.outputs[0].token_ids == case["greedy_ids"]


def test_dtype_names():
    with pytest.raises(ValueError, match="dtype must be auto, bfloat16"):
        small_llm(dtype="float8")
    with pytest.raises(TypeError, match="dtype is a name"):
        small_llm(dtype=16)


def test_dtype_as_a_torch_dtype():
    torch = pytest.importorskip("torch")
    with small_llm(dtype=torch.float32) as llm, small_llm(dtype="auto") as auto:
        assert weight_bytes(llm) > weight_bytes(auto)


def test_trust_remote_code_accepted():
    """vLLM scripts pass trust_remote_code=True; shardlm runs no repository code, so it is accepted and the
    engine is the one without it (the same greedy tokens)."""
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    prompt = [{"prompt_token_ids": [1, 5, 9]}]
    with small_llm(trust_remote_code=True) as a, small_llm() as b:
        tokens = [[o.outputs[0].token_ids for o in llm.generate(prompt, params, use_tqdm=False)] for llm in (a, b)]
    assert tokens[0] == tokens[1] and len(tokens[0][0]) == 6
