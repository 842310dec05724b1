"""LLM.chat on the default model: the prompt is the chat template as jinja2
renders it from tokenizer_config.json, and the greedy reply is
transformers' (golden.json chat cases)."""

import os

import jinja2

from conftest import DEFAULT_MODEL, load_json

from shardlm import SamplingParams


def chat_cases(golden):
    return [c for c in golden["cases"] if "messages" in c]


def jinja_render(messages, add_generation_prompt):
    source = load_json(DEFAULT_MODEL, "tokenizer_config.json")["chat_template"]
    return jinja2.Environment().from_string(source).render(messages=messages,
                                                           add_generation_prompt=add_generation_prompt)


def test_chat_matches_transformers(smol, smol_golden):
    cases = chat_cases(smol_golden)
    params = SamplingParams(temperature=0, max_tokens=smol_golden["max_new_tokens"], ignore_eos=True)
    outs = smol.chat([c["messages"] for c in cases], params, use_tqdm=False)
    for case, out in zip(cases, outs):
        assert out.prompt == case["rendered"] == jinja_render(case["messages"], True)
        assert out.prompt_token_ids == case["prompt_ids"]
        assert out.outputs[0].token_ids == case["greedy_ids"]
        assert out.outputs[0].text == case["greedy_text"]


def test_chat_one_conversation_and_template_kwargs(smol, smol_golden):
    messages = chat_cases(smol_golden)[1]["messages"]
    one = smol.chat(messages, SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)
    assert len(one) == 1
    bare = smol.chat(messages, SamplingParams(temperature=0, max_tokens=4), use_tqdm=False,
                     add_generation_prompt=False)[0]
    assert bare.prompt == jinja_render(messages, False)
    kw = smol.chat(messages, SamplingParams(temperature=0, max_tokens=4), use_tqdm=False,
                   chat_template_kwargs={"add_generation_prompt": False})[0]
    assert kw.prompt == bare.prompt


def test_chat_template_override(tmp_path, smol_golden):
    from conftest import need_default_model
    from shardlm import LLM
    need_default_model()
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:")
    with LLM(model=DEFAULT_MODEL, chat_template=str(template), quiet=True, max_model_len=256, kv_cache_memory="256M") as llm:
        out = llm.chat([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=2), use_tqdm=False)[0]
    assert out.prompt == "user: Hi\nassistant:"
    assert os.path.exists(template)
