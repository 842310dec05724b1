"""Greedy tokens and logprobs equal transformers' (golden.json), batched
and one request at a time, on SmolLM2 (text prompts) and on every fixture
model (prompt token ids); SmolLM2's greedy tokens also with a float16 KV cache."""

import pytest

from conftest import DEFAULT_MODEL, need_default_model

from shardlm import LLM, SamplingParams

LOGPROB_TOL = 2e-3


def greedy(max_tokens, **kw):
    return SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, **kw)


def check_top5(entry_list, golden_steps):
    assert len(entry_list) == len(golden_steps)
    for entry, step in zip(entry_list, golden_steps):
        for rank, (tok, lp) in enumerate(step, start=1):
            assert tok in entry, f"golden top token {tok} missing from {entry}"
            assert entry[tok].logprob == pytest.approx(lp, abs=LOGPROB_TOL)
            assert entry[tok].rank == rank


def text_cases(golden):
    return [c for c in golden["cases"] if "text" in c]


def test_smollm2_text_prompts_batched(smol, smol_golden):
    cases = text_cases(smol_golden)
    outs = smol.generate([c["text"] for c in cases], greedy(smol_golden["max_new_tokens"]), use_tqdm=False)
    for case, out in zip(cases, outs):
        assert out.prompt == case["text"]
        assert out.prompt_token_ids == case["prompt_ids"]
        assert out.outputs[0].token_ids == case["greedy_ids"]
        assert out.outputs[0].text == case["greedy_text"]
        assert out.outputs[0].finish_reason == "length"


def test_smollm2_logprobs_match_transformers(smol, smol_golden):
    case = text_cases(smol_golden)[0]
    out = smol.generate({"prompt_token_ids": case["prompt_ids"]}, greedy(len(case["top5"]), logprobs=5),
                        use_tqdm=False)[0].outputs[0]
    check_top5(out.logprobs, case["top5"])
    assert out.cumulative_logprob == pytest.approx(sum(step[0][1] for step in case["top5"]), abs=LOGPROB_TOL * 24)
    assert out.logprobs[0][out.token_ids[0]].decoded_token == " Paris"


def test_fixture_greedy_batched_and_alone(fixture_model):
    name, llm, seqs = fixture_model
    prompts = [{"prompt_token_ids": s["prompt"]} for s in seqs]
    params = greedy(len(seqs[0]["greedy"]))
    batched = llm.generate(prompts, params, use_tqdm=False)
    alone = [llm.generate(p, params, use_tqdm=False)[0] for p in prompts]
    for s, b, a in zip(seqs, batched, alone):
        assert b.prompt is None and b.prompt_token_ids == s["prompt"]
        assert b.outputs[0].token_ids == s["greedy"], name
        assert a.outputs[0].token_ids == s["greedy"], name
        assert b.outputs[0].text == ""  # no tokenizer: ids only


def test_fixture_logprobs(fixture_model):
    name, llm, seqs = fixture_model
    s = seqs[1]
    out = llm.generate({"prompt_token_ids": s["prompt"]}, greedy(len(s["greedy"]), logprobs=5),
                       use_tqdm=False)[0].outputs[0]
    check_top5(out.logprobs, s["steps"])
    assert all(lp.decoded_token is None for entry in out.logprobs for lp in entry.values())


def test_smollm2_float16_kv_cache_keeps_greedy_tokens(smol_golden):
    need_default_model()
    cases = text_cases(smol_golden)
    with LLM(model=DEFAULT_MODEL, quiet=True, max_model_len=1024, kv_cache_dtype="float16", kv_cache_memory="512M") as llm:
        outs = llm.generate([c["text"] for c in cases], greedy(smol_golden["max_new_tokens"]), use_tqdm=False)
    for case, out in zip(cases, outs):
        assert out.outputs[0].token_ids == case["greedy_ids"]
