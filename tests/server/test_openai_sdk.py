"""The official OpenAI Python SDK (pinned in tests/requirements.txt) against
`shardlm serve` on the default model: completions, chat, streaming chat
with usage, logprobs, models.list, and a wrong key -> AuthenticationError."""
import os

import openai
import pytest

from serverlib import Server

MODEL = os.environ["SHARDLM_MODEL"]
KEY = "test-key-123"


@pytest.fixture(scope="module")
def client():
    s = Server(MODEL, "--max-model-len", "512", "--api-key", KEY)
    yield openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0)
    assert s.stop() == 0, "".join(s.log[-30:])


def model_id(client):
    return client.models.list().data[0].id


def test_models_list(client):
    models = client.models.list().data
    assert len(models) == 1 and models[0].id == "SmolLM2-135M-Instruct"


def test_completions(client):
    r = client.completions.create(model=model_id(client), prompt="The capital of France is", max_tokens=5,
                                  temperature=0)
    assert r.object == "text_completion" and len(r.choices) == 1
    assert r.usage.completion_tokens <= 5 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completions_logprobs(client):
    r = client.completions.create(model=model_id(client), prompt="Hello", max_tokens=3, logprobs=2, temperature=0)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == r.usage.completion_tokens


def test_chat(client):
    r = client.chat.completions.create(model=model_id(client), messages=[{"role": "user", "content": "Hi!"}],
                                       max_tokens=8, temperature=0)
    assert r.choices[0].message.role == "assistant" and isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_chat_logprobs(client):
    r = client.chat.completions.create(model=model_id(client), messages=[{"role": "user", "content": "Hi!"}],
                                       max_tokens=4, logprobs=True, top_logprobs=3, temperature=0)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert all(len(c.top_logprobs) == 3 and c.logprob <= 0 for c in content)


def test_streaming_chat_with_usage(client):
    full = client.chat.completions.create(model=model_id(client), messages=[{"role": "user", "content": "Count to 3"}],
                                          max_tokens=8, temperature=0)
    stream = client.chat.completions.create(model=model_id(client),
                                            messages=[{"role": "user", "content": "Count to 3"}], max_tokens=8,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
    assert text == full.choices[0].message.content
    assert usage.completion_tokens == full.usage.completion_tokens
    assert usage.prompt_tokens == full.usage.prompt_tokens


def test_wrong_key(client):
    bad = openai.OpenAI(base_url=str(client.base_url), api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="x", messages=[{"role": "user", "content": "x"}])


def test_errors_map_to_sdk_exceptions(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=model_id(client), prompt="x", max_tokens=100000)
