"""Generation from several Python threads at once, and an interrupted
generate(): its requests are aborted and drained, and the engine goes on
giving transformers' tokens."""

import threading

import pytest

from shardlm import SamplingParams


def greedy():
    return SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)


def test_threads_share_one_engine(fixture_model):
    _, llm, seqs = fixture_model
    results = {}

    def work(k):
        s = seqs[k % len(seqs)]
        results[k] = llm.generate([{"prompt_token_ids": s["prompt"]}] * 2, greedy(), use_tqdm=False)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, outs in results.items():
        assert [o.outputs[0].token_ids for o in outs] == [seqs[k % len(seqs)]["greedy"]] * 2
    assert len(results) == 6


class Interrupting:
    """A progress bar that raises KeyboardInterrupt at the first finished prompt, as Ctrl-C would."""

    def __init__(self, total, desc):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        raise KeyboardInterrupt


def test_interrupted_generate_aborts_and_engine_goes_on(fixture_model):
    _, llm, seqs = fixture_model
    long_run = SamplingParams(temperature=0, max_tokens=100, ignore_eos=True)
    prompts = [{"prompt_token_ids": s["prompt"][:8]} for s in seqs] * 3
    with pytest.raises(KeyboardInterrupt):
        llm.generate(prompts, long_run, use_tqdm=Interrupting)
    out = llm.generate({"prompt_token_ids": seqs[2]["prompt"]}, greedy(), use_tqdm=False)[0]
    assert out.outputs[0].token_ids == seqs[2]["greedy"]
