"""Sampling through the binding: seeded runs reproduce (alone or batched
with others), n > 1, stop strings and stop tokens, min/max tokens, and the
RequestOutput shape. Expected stops come from transformers' greedy text."""

import pytest

from shardlm import CompletionOutput, RequestOutput, SamplingParams


def seeded(seed, **kw):
    return SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=seed, max_tokens=12, ignore_eos=True, **kw)


def ids(out, i=0):
    return out.outputs[i].token_ids


def test_seeded_sampling_reproducible_and_batch_independent(fixture_model):
    _, llm, seqs = fixture_model
    prompts = [{"prompt_token_ids": s["prompt"]} for s in seqs]
    params = [seeded(100 + i) for i in range(len(prompts))]
    first = llm.generate(prompts, params, use_tqdm=False)
    again = llm.generate(prompts, params, use_tqdm=False)
    alone = [llm.generate(p, sp, use_tqdm=False)[0] for p, sp in zip(prompts, params)]
    for a, b, c in zip(first, again, alone):
        assert ids(a) == ids(b) == ids(c)
    other_seed = llm.generate(prompts[2], seeded(999), use_tqdm=False)[0]
    assert ids(other_seed) != ids(first[2])


def test_n_choices(fixture_model):
    _, llm, seqs = fixture_model
    out = llm.generate({"prompt_token_ids": seqs[2]["prompt"]}, seeded(7, n=3), use_tqdm=False)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert all(len(c.token_ids) == 12 and c.finish_reason == "length" for c in out.outputs)
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    greedy = llm.generate({"prompt_token_ids": seqs[2]["prompt"]},
                          SamplingParams(n=2, temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False)[0]
    assert ids(greedy, 0) == ids(greedy, 1) == seqs[2]["greedy"]


def test_logprobs_shape(fixture_model):
    _, llm, seqs = fixture_model
    out = llm.generate({"prompt_token_ids": seqs[0]["prompt"]}, seeded(3, logprobs=2), use_tqdm=False)[0].outputs[0]
    assert len(out.logprobs) == len(out.token_ids) == 12
    total = 0.0
    for tok, entry in zip(out.token_ids, out.logprobs):
        assert tok in entry and 2 <= len(entry) <= 3
        assert list(entry)[0] == tok  # the sampled token first, as vLLM orders it
        ranks = sorted(lp.rank for t, lp in entry.items() if t != tok or lp.rank is not None)
        assert ranks[:2] == [1, 2]
        total += entry[tok].logprob
    assert out.cumulative_logprob == pytest.approx(total)
    plain = llm.generate({"prompt_token_ids": seqs[0]["prompt"]}, seeded(3), use_tqdm=False)[0].outputs[0]
    assert plain.logprobs is None and plain.cumulative_logprob is None
    assert plain.token_ids == out.token_ids  # asking for logprobs changes no sample


def test_stop_string_and_stop_token(smol, smol_golden):
    case = smol_golden["cases"][0]  # " Paris.\n\nThe answer is: 2018-01-22 12:1"
    out = smol.generate(case["text"], SamplingParams(temperature=0, max_tokens=24, stop=["answer", "."]),
                        use_tqdm=False)[0].outputs[0]
    assert (out.text, out.finish_reason, out.stop_reason) == (" Paris", "stop", ".")
    across = smol.generate(case["text"], SamplingParams(temperature=0, max_tokens=24, stop="s.\n\nThe"),
                           use_tqdm=False)[0].outputs[0]
    assert (across.text, across.stop_reason) == (" Pari", "s.\n\nThe")
    # vLLM's include_stop_str_in_output: the text ends with the stop string (what follows it in its token goes)
    kept = smol.generate(case["text"], SamplingParams(temperature=0, max_tokens=24, stop=["answer", "."],
                                                      include_stop_str_in_output=True), use_tqdm=False)[0].outputs[0]
    assert (kept.text, kept.finish_reason, kept.stop_reason) == (" Paris.", "stop", ".")
    kept = smol.generate(case["text"], SamplingParams(temperature=0, max_tokens=24, stop="s.\n\nThe",
                                                      include_stop_str_in_output=True), use_tqdm=False)[0].outputs[0]
    assert (kept.text, kept.stop_reason) == (" Paris.\n\nThe", "s.\n\nThe")
    newline = case["greedy_ids"][2]
    tok = smol.generate(case["text"], SamplingParams(temperature=0, max_tokens=24, stop_token_ids=[newline]),
                        use_tqdm=False)[0].outputs[0]
    assert tok.token_ids == case["greedy_ids"][:3]
    assert (tok.text, tok.finish_reason, tok.stop_reason) == (" Paris.", "stop", newline)


def test_min_and_max_tokens(fixture_model):
    _, llm, seqs = fixture_model
    prompt = {"prompt_token_ids": seqs[1]["prompt"]}
    stop_at = seqs[1]["greedy"][0]
    out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=5, min_tokens=3, stop_token_ids=[stop_at]),
                       use_tqdm=False)[0].outputs[0]
    assert len(out.token_ids) >= 3 and stop_at not in out.token_ids[:3]
    default = llm.generate(prompt, SamplingParams(temperature=0, ignore_eos=True), use_tqdm=False)[0].outputs[0]
    assert default.token_ids == seqs[1]["greedy"]  # max_tokens defaults to 16, as in vLLM


def test_output_shape(smol):
    outs = smol.generate([{"prompt": "Hello, world!"}, "Hello, world!"], SamplingParams(max_tokens=4, seed=1),
                         use_tqdm=False)
    assert len(outs) == 2 and all(isinstance(o, RequestOutput) for o in outs)
    assert outs[0].request_id != outs[1].request_id and outs[0].finished
    assert outs[0].prompt_token_ids == [19556, 28, 905, 17]  # tokenizer_cases.json (llama.cpp)
    assert outs[0].outputs[0].token_ids == outs[1].outputs[0].token_ids
    assert outs[1].num_cached_tokens == 0  # a 4-token prompt fills no KV block
    assert isinstance(outs[0].outputs[0], CompletionOutput)


def test_prefix_cache_hit_reported(smol):
    prompt = "Once upon a time " * 12
    params = SamplingParams(temperature=0, max_tokens=4)
    first, second = (smol.generate(prompt, params, use_tqdm=False)[0] for _ in range(2))
    assert second.num_cached_tokens >= 16
    assert first.outputs[0].token_ids == second.outputs[0].token_ids
