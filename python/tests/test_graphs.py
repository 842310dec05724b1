"""Decode steps replayed as CUDA graphs give what kernels launched one by one give.

By default a GPU engine records the ops of each decode step shape (the
number of sequences, logits rows and block-table width) once as a CUDA graph
and replays it for later steps of that shape; enforce_eager=True (vLLM's
--enforce-eager) launches every kernel as issued. Both run the same kernels
with the same arguments, so the tokens and logprobs must be equal bit for
bit: batches of 1 to 6 sequences of different prompt lengths, 40 new tokens
each (shapes repeat, contexts cross block and width boundaries, sequences
finish at different steps), greedy with logprobs and seeded sampling (the
GPU sampler runs inside the graph). On the CPU there are no graphs and both
engines take the same path."""

import os

import pytest

from conftest import DEFAULT_MODEL, FIXTURES, need_default_model

from shardlm import LLM, SamplingParams

GQA = os.path.join(FIXTURES, "llama_gqa")


def prompts(n, vocab):
    return [{"prompt_token_ids": [(7 * i + 3 * j + 1) % vocab for j in range(5 + 9 * i)]} for i in range(n)]


def run(model, enforce_eager, batches, vocab, **kw):
    out = []
    with LLM(model=model, quiet=True, max_model_len=256, kv_cache_memory="256M", enforce_eager=enforce_eager,
             **kw) as llm:
        for n in batches:
            for params in (SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, logprobs=3),
                           SamplingParams(temperature=0.8, top_p=0.9, seed=11, max_tokens=25 + 3 * n, ignore_eos=True)):
                for o in llm.generate(prompts(n, vocab), params, use_tqdm=False):
                    for c in o.outputs:
                        lp = [sorted((t, l.logprob) for t, l in step.items()) for step in c.logprobs or []]
                        out.append((tuple(c.token_ids), lp))
    return out


@pytest.mark.parametrize("model,vocab", [(GQA, 512), (DEFAULT_MODEL, 49152)], ids=["llama_gqa", "smollm2"])
def test_graph_replay_equals_eager(model, vocab):
    if model == DEFAULT_MODEL:
        need_default_model()
    batches = [1, 3, 6, 1, 2]
    graphs = run(model, False, batches, vocab)
    eager = run(model, True, batches, vocab)
    assert len(graphs) == len(eager) == 2 * sum(batches)
    for i, (g, e) in enumerate(zip(graphs, eager)):
        assert g[0] == e[0], f"sequence {i}: tokens differ between graph replay and eager launches"
        assert g[1] == e[1], f"sequence {i}: logprobs differ between graph replay and eager launches"
