"""vLLM's own offline example, with shardlm in place of vllm, run exactly
as docs/python.md shows it (the first python block, from the repository
root), then the same program shape on each fixture model (token ids)."""

import os
import re
import subprocess
import sys

from conftest import DEFAULT_MODEL, FIXTURES, ROOT, need_default_model

from shardlm import LLM, SamplingParams


def readme_example():
    with open(os.path.join(ROOT, "docs", "python.md"), encoding="utf-8") as f:
        return re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)


def test_readme_example_on_default_model():
    need_default_model()
    code = readme_example()
    assert "from shardlm import LLM, SamplingParams" in code and "models/SmolLM2-135M-Instruct" in code
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    prompts = ["Hello, my name is", "The president of the United States is", "The capital of France is",
               "The future of AI is"]
    assert len(lines) == 4
    texts = []
    for line, prompt in zip(lines, prompts):
        m = re.fullmatch(r"Prompt: (.*), Generated text: (.*)", line)
        assert m and m.group(1) == repr(prompt)
        texts.append(eval(m.group(2)))
    # up to max_tokens=16 tokens each, sampled without a seed: one may end early at EOS, not all four
    assert sum(len(t) for t in texts) > 40, texts


def test_example_shape_on_fixtures(fixture_model):
    name, _, seqs = fixture_model
    prompts = [{"prompt_token_ids": s["prompt"]} for s in seqs]
    sampling_params = SamplingParams(temperature=0.8, top_p=0.95)
    llm = LLM(model=os.path.join(FIXTURES, name), quiet=True)
    outputs = llm.generate(prompts, sampling_params)
    llm.close()
    assert len(outputs) == len(prompts)
    for output, s in zip(outputs, seqs):
        assert output.prompt_token_ids == s["prompt"]
        done = output.outputs[0]
        assert (len(done.token_ids), done.finish_reason) == (16, "length") or done.finish_reason == "stop"
        assert len(done.token_ids) <= 16  # vLLM's default max_tokens
