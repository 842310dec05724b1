"""`shardlm serve` on a committed fixture model without a tokenizer
(tests/fixtures/llama_gqa): token-id prompts, streaming and not, logprobs
as token_id:N strings, and the clear errors for what needs a tokenizer."""
import json
import os

import pytest

from serverlib import Server, curl, sse_events

FIXTURE = os.path.join(os.environ["SHARDLM_FIXTURES"], "llama_gqa")


@pytest.fixture(scope="module")
def srv():
    s = Server(FIXTURE)
    yield s
    assert s.stop() == 0, "".join(s.log[-30:])


def post(srv, path, body):
    code, text = curl(srv, path, body)
    return code, json.loads(text)


def test_ids_prompt(srv):
    code, r = post(srv, "/v1/completions", {"prompt": [1, 5, 9, 3], "max_tokens": 5, "ignore_eos": True,
                                            "temperature": 0, "logprobs": 2})
    assert code == 200, r
    c = r["choices"][0]
    assert r["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9,
                          "prompt_tokens_details": {"cached_tokens": r["usage"]["prompt_tokens_details"]["cached_tokens"]}}
    assert c["finish_reason"] == "length" and len(c["logprobs"]["tokens"]) == 5
    assert all(t.startswith("token_id:") for t in c["logprobs"]["tokens"])


def test_ids_stream_matches(srv):
    body = {"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 6, "ignore_eos": True, "temperature": 0, "logprobs": 0}
    code, full = post(srv, "/v1/completions", body)
    code, text = curl(srv, "/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}})
    events = sse_events(text)
    for i in range(2):
        toks = [t for e in events if e["choices"] and e["choices"][0]["index"] == i
                for t in (e["choices"][0]["logprobs"] or {}).get("tokens", [])]
        assert toks == full["choices"][i]["logprobs"]["tokens"]
    assert events[-1]["usage"]["completion_tokens"] == 12 and events[-1]["usage"]["prompt_tokens"] == 5


def test_context_limits(srv):
    code, r = post(srv, "/v1/completions", {"prompt": [1] * 256})
    assert code == 400 and "maximum context length is 256" in r["error"]["message"]
    code, r = post(srv, "/v1/completions", {"prompt": [1] * 200, "max_tokens": 57})
    assert code == 400 and "(57 > 256 - 200)" in r["error"]["message"]
    code, r = post(srv, "/v1/completions", {"prompt": [1] * 200, "max_tokens": 56, "ignore_eos": True})
    assert code == 200 and r["usage"]["completion_tokens"] == 56


def test_text_needs_a_tokenizer(srv):
    for path, body in [("/v1/completions", {"prompt": "hello"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                       ("/tokenize", {"prompt": "hello"}), ("/detokenize", {"tokens": [1]})]:
        code, r = post(srv, path, body)
        assert code == 400 and "tokenizer" in r["error"]["message"], (path, r)


def test_ping_is_health(srv):
    """vLLM's /ping (SageMaker's health check), GET and POST: /health's answer."""
    for method in ("GET", "POST"):
        code, body = srv.request(method, "/ping")
        assert (code, body) == (200, ""), (method, code, body)
    code, body = srv.request("PUT", "/ping")
    assert code == 405, body
