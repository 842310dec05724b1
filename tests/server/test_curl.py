"""Every route of `shardlm serve` with curl, on the default model
(SmolLM2-135M-Instruct): shapes as vLLM answers them, streaming and not,
usage against /tokenize, chat rendering against jinja2 (transformers'
environment), and every error case of the spec."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from serverlib import Server, curl, sse_events, wait_for

MODEL = os.environ["SHARDLM_MODEL"]
MAX_LEN = 512


@pytest.fixture(scope="module")
def srv():
    s = Server(MODEL, "--max-model-len", str(MAX_LEN), "--served-model-name", "smol", "--max-request-body", "1M")
    yield s
    assert s.stop() == 0, "".join(s.log[-30:])


def post(srv, path, body):
    code, text = curl(srv, path, body)
    return code, json.loads(text) if text.startswith(("{", "[")) else text


def count_tokens(srv, text, add_special=True):
    code, r = post(srv, "/tokenize", {"prompt": text, "add_special_tokens": add_special})
    assert code == 200
    return r["count"]


# ---- GET routes ------------------------------------------------------------------------

def test_models(srv):
    code, text = curl(srv, "/v1/models")
    assert code == 200
    r = json.loads(text)
    assert r["object"] == "list" and len(r["data"]) == 1
    m = r["data"][0]
    assert m["id"] == "smol" and m["object"] == "model" and m["max_model_len"] == MAX_LEN
    assert m["owned_by"] and m["parent"] is None
    assert m["permission"][0]["object"] == "model_permission"


def test_health_version_metrics(srv):
    assert curl(srv, "/health") == (200, "")
    code, text = curl(srv, "/version")
    assert code == 200 and json.loads(text)["version"]
    code, text = curl(srv, "/metrics")
    assert code == 200
    for name in ["num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "kv_cache_blocks_used",
                 "prefix_cache_queries_total", "prefix_cache_hits_total", "prompt_tokens_total",
                 "generation_tokens_total", "time_to_first_token_seconds_bucket",
                 "inter_token_latency_seconds_bucket", "e2e_request_latency_seconds_count"]:
        assert f"shardlm:{name}" in text, name


# ---- completions -----------------------------------------------------------------------

def test_completion(srv):
    prompt = "The capital of France is"
    code, r = post(srv, "/v1/completions", {"model": "smol", "prompt": prompt, "max_tokens": 6, "temperature": 0})
    assert code == 200, r
    assert r["object"] == "text_completion" and r["id"].startswith("cmpl-") and r["model"] == "smol"
    assert isinstance(r["created"], int)
    (c,) = r["choices"]
    assert c["index"] == 0 and isinstance(c["text"], str) and c["logprobs"] is None
    assert c["finish_reason"] in ("stop", "length")
    u = r["usage"]
    assert u["prompt_tokens"] == count_tokens(srv, prompt)
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    if c["finish_reason"] == "length":
        assert u["completion_tokens"] == 6
    # the text is what the ids decode to: re-tokenizing gives the same count
    assert 1 <= u["completion_tokens"] <= 6


def test_completion_prompt_forms(srv):
    ids = post(srv, "/tokenize", {"prompt": "Hello there"})[1]["tokens"]
    for prompt, n_prompts in [("Hi", 1), (["Hi", "Bye"], 2), (ids, 1), ([ids, ids[:1]], 2)]:
        code, r = post(srv, "/v1/completions", {"prompt": prompt, "max_tokens": 2, "n": 2, "temperature": 0.5})
        assert code == 200, r
        assert [c["index"] for c in r["choices"]] == list(range(2 * n_prompts))
        assert r["usage"]["completion_tokens"] == sum(1 for _ in r["choices"]) * 2 or \
            r["usage"]["completion_tokens"] <= 4 * n_prompts
    code, r = post(srv, "/v1/completions", {"prompt": [ids, ids[:1]], "max_tokens": 1})
    assert r["usage"]["prompt_tokens"] == len(ids) + 1


def test_completion_echo_and_logprobs(srv):
    code, r = post(srv, "/v1/completions", {"prompt": "One, two,", "max_tokens": 3, "echo": True, "temperature": 0})
    assert code == 200 and r["choices"][0]["text"].startswith("One, two,")
    code, r = post(srv, "/v1/completions", {"prompt": "One, two,", "max_tokens": 4, "logprobs": 3, "temperature": 0})
    assert code == 200
    lp = r["choices"][0]["logprobs"]
    n = r["usage"]["completion_tokens"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == n
    assert all(x <= 0 for x in lp["token_logprobs"])
    assert all(1 <= len(t) <= 4 for t in lp["top_logprobs"])
    assert "".join(lp["tokens"]) == r["choices"][0]["text"]
    assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])
    # greedy: the chosen token is the most likely one
    for tok, l, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert abs(max(top.values()) - l) < 1e-4


def test_completion_stream(srv):
    body = {"prompt": "Count: 1, 2, 3,", "max_tokens": 8, "temperature": 0}
    code, full = post(srv, "/v1/completions", body)
    code, text = curl(srv, "/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert code == 200
    events = sse_events(text)
    chunks, usage = events[:-1], events[-1]
    assert all(e["object"] == "text_completion" and e["id"] == chunks[0]["id"] for e in chunks)
    assert "".join(e["choices"][0]["text"] for e in chunks) == full["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == full["usage"]["completion_tokens"]
    assert usage["usage"]["prompt_tokens"] == full["usage"]["prompt_tokens"]


def test_stop_strings_and_sampling_fields(srv):
    body = {"prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 20, "temperature": 0, "stop": [" 9"], "top_k": 5,
            "top_p": 0.9, "min_p": 0.01, "repetition_penalty": 1.0, "seed": 7, "min_tokens": 1,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "ignore_eos": False, "user": "tester"}
    code, r = post(srv, "/v1/completions", body)
    assert code == 200, r
    c = r["choices"][0]
    assert " 9" not in c["text"]
    if c["finish_reason"] == "stop" and c["stop_reason"] is not None:
        assert c["stop_reason"] == " 9"
    # include_stop_str_in_output (vLLM's): the same text, now ending with the stop string (greedy SmolLM2
    # counts on: " 7, 8," then " 9", so the stop is met; python/tests/test_sampling.py checks the text
    # against transformers')
    code, kept = post(srv, "/v1/completions", dict(body, include_stop_str_in_output=True))
    assert code == 200, kept
    k = kept["choices"][0]
    assert (c["finish_reason"], c["stop_reason"]) == ("stop", " 9"), c
    assert (k["finish_reason"], k["stop_reason"], k["text"]) == ("stop", " 9", c["text"] + " 9"), k


# ---- chat --------------------------------------------------------------------------------

def test_chat(srv):
    msgs = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}]
    code, r = post(srv, "/v1/chat/completions", {"model": "smol", "messages": msgs, "max_tokens": 10, "temperature": 0})
    assert code == 200, r
    assert r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-")
    (c,) = r["choices"]
    assert c["message"]["role"] == "assistant" and isinstance(c["message"]["content"], str)
    assert c["message"]["tool_calls"] == [] and c["logprobs"] is None and "stop_reason" in c
    code, tok = post(srv, "/tokenize", {"messages": msgs})
    assert r["usage"]["prompt_tokens"] == tok["count"]


def test_chat_stream_with_usage_and_logprobs(srv):
    body = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 6, "temperature": 0}
    code, full = post(srv, "/v1/chat/completions", body)
    code, text = curl(srv, "/v1/chat/completions", {**body, "stream": True, "logprobs": True, "top_logprobs": 2,
                                                     "stream_options": {"include_usage": True}})
    assert code == 200
    events = sse_events(text)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-1])
    assert content == full["choices"][0]["message"]["content"]
    lps = [x for e in events[1:-1] if e["choices"][0]["logprobs"] for x in e["choices"][0]["logprobs"]["content"]]
    assert len(lps) == full["usage"]["completion_tokens"]
    for x in lps:
        assert set(x) == {"token", "logprob", "bytes", "top_logprobs"} and len(x["top_logprobs"]) == 2
        assert bytes(x["bytes"]).decode("utf-8", "replace") == x["token"]
    assert events[-1]["choices"] == []
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert events[-1]["usage"][k] == full["usage"][k]


def test_chat_content_parts_and_n(srv):
    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]
    code, a = post(srv, "/tokenize", {"messages": [{"role": "user", "content": parts}]})
    code, b = post(srv, "/tokenize", {"messages": [{"role": "user", "content": "Hello\nthere"}]})
    assert a["tokens"] == b["tokens"]
    code, r = post(srv, "/v1/chat/completions", {"messages": [{"role": "user", "content": parts}], "n": 3,
                                                 "max_tokens": 3})
    assert code == 200 and [c["index"] for c in r["choices"]] == [0, 1, 2]


def render_like_transformers(template, **ctx):
    """jinja2 configured as transformers' apply_chat_template configures it."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(**ctx)


def rendered_text(srv, body):
    code, tok = post(srv, "/tokenize", {**body, "add_special_tokens": False})
    assert code == 200, tok
    code, det = post(srv, "/detokenize", {"tokens": tok["tokens"]})
    return det["prompt"]


def test_chat_template_from_request_matches_transformers(srv):
    """The shared Qwen3 chat cases (rendered by transformers) through the
    request's chat_template, and a tool conversation checked with jinja2."""
    shared = os.environ.get("SHARDLM_SHARED", "")
    path = os.path.join(shared, "tokenizers", "qwen3", "tokenizer_config.json")
    if not os.path.exists(path):
        pytest.skip("no shared Qwen3 tokenizer_config.json")
    template = json.load(open(path))["chat_template"]
    cases = json.load(open(os.path.join(shared, "tokenizers", "qwen3", "cases.json")))["chat"]
    for case in cases:
        got = rendered_text(srv, {"messages": case["messages"], "chat_template": template,
                                  "add_generation_prompt": case["add_generation_prompt"]})
        assert got == case["text"]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    args = {"city": "Paris", "unit": "°C"}
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "reasoning_content": "Use the tool.",
                 "tool_calls": [{"id": "c1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": json.dumps(args)}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "18 degrees"}]
    expected_messages = json.loads(json.dumps(messages))
    expected_messages[1]["tool_calls"][0]["function"]["arguments"] = args
    for kwargs in [{}, {"enable_thinking": False}]:
        want = render_like_transformers(template, messages=expected_messages, tools=tools, add_generation_prompt=True,
                                        bos_token="<|im_start|>", eos_token="<|im_end|>", **kwargs)
        got = rendered_text(srv, {"messages": messages, "tools": tools, "chat_template": template,
                                  "chat_template_kwargs": kwargs})
        assert got == want


def test_continue_final_message(srv):
    msgs = [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "A fruit: ban"}]
    text = rendered_text(srv, {"messages": msgs, "continue_final_message": True, "add_generation_prompt": False})
    assert text.endswith("A fruit: ban")
    code, r = post(srv, "/v1/chat/completions", {"messages": msgs, "continue_final_message": True,
                                                 "add_generation_prompt": False, "max_tokens": 3})
    assert code == 200
    code, r = post(srv, "/v1/chat/completions", {"messages": msgs, "continue_final_message": True,
                                                 "add_generation_prompt": True, "max_tokens": 3})
    assert code == 400


def test_response_role():
    """vLLM's --response-role: the reply's role after a generation prompt; without one the reply continues (or
    follows) the final message and takes its role (vLLM's get_chat_request_role)."""
    s = Server(MODEL, "--max-model-len", "256", "--response-role", "narrator")
    try:
        msgs = [{"role": "user", "content": "Name a fruit."}]
        for extra, role in [({}, "narrator"), ({"add_generation_prompt": False}, "user"),
                            ({"messages": msgs + [{"role": "assistant", "content": "A ban"}],
                              "continue_final_message": True, "add_generation_prompt": False}, "assistant")]:
            body = {"messages": msgs, "max_tokens": 3, "temperature": 0, **extra}
            code, text = curl(s, "/v1/chat/completions", body)
            assert code == 200 and json.loads(text)["choices"][0]["message"]["role"] == role, text
            code, text = curl(s, "/v1/chat/completions", {**body, "stream": True, "n": 2})
            first = [e["choices"][0] for e in sse_events(text)[:2]]
            assert [(c["index"], c["delta"]) for c in first] == [(0, {"role": role, "content": ""}),
                                                                 (1, {"role": role, "content": ""})], text
    finally:
        assert s.stop() == 0


def test_request_log_shows_the_text():
    """--enable-log-requests logs a text prompt's first --max-log-len characters (as vLLM cuts its prompt
    string), JSON-quoted, and a chat's rendered prompt, beside the token ids."""
    s = Server(MODEL, "--max-model-len", "256", "--enable-log-requests", "--max-log-len", "7")
    try:
        code, text = curl(s, "/v1/completions", {"prompt": "Caf\u00e9 \"au\" lait\n", "max_tokens": 2})
        assert code == 200, text
        code, ids = curl(s, "/tokenize", {"prompt": "Caf\u00e9 \"au\" lait\n"})
        ids = json.loads(ids)["tokens"]
        code, text = curl(s, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        assert code == 200, text
        assert wait_for(lambda: sum("Received request" in line for line in s.log) == 2)
        got = [line.split(": ", 1)[1].split("; params")[0] for line in s.log if "Received request" in line]
        shown = ", ".join(map(str, ids[:7])) + (f", ... {len(ids) - 7} more" if len(ids) > 7 else "")
        assert got[0] == f'prompt 0: "Caf\u00e9 \\"a" (+8 characters), {len(ids)} tokens [{shown}]', got
        assert got[1].startswith('prompt 0: "<|im_st" (+') and " tokens [" in got[1], got
    finally:
        assert s.stop() == 0


def test_chat_echo(srv):
    """vLLM's chat `echo`: the final message's content goes before the reply when its role is the reply's (a
    continued assistant message), streamed as one content chunk per choice after the role chunks; else nothing."""
    msgs = [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "A fruit: ban"}]
    body = {"messages": msgs, "continue_final_message": True, "add_generation_prompt": False, "max_tokens": 4,
            "temperature": 0}
    code, plain = post(srv, "/v1/chat/completions", body)
    code, echoed = post(srv, "/v1/chat/completions", {**body, "echo": True})
    assert code == 200, echoed
    reply = plain["choices"][0]["message"]["content"]
    assert echoed["choices"][0]["message"]["content"] == "A fruit: ban" + reply
    assert echoed["usage"] == plain["usage"]
    code, text = curl(srv, "/v1/chat/completions", {**body, "echo": True, "stream": True, "n": 2})
    events = sse_events(text)
    assert [e["choices"][0]["delta"] for e in events[:4]] == [{"role": "assistant", "content": ""}] * 2 + \
        [{"content": "A fruit: ban"}] * 2, events[:4]
    for i in range(2):
        got = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"] and
                      e["choices"][0]["index"] == i)
        assert got == "A fruit: ban" + reply
    # after a generation prompt the reply is the assistant's and the final message the user's: nothing echoed
    body = {"messages": msgs[:1], "max_tokens": 4, "temperature": 0}
    code, plain = post(srv, "/v1/chat/completions", body)
    code, echoed = post(srv, "/v1/chat/completions", {**body, "echo": True, "logprobs": True})
    assert code == 200, echoed
    assert echoed["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]


def test_tokenize_detokenize(srv):
    code, r = post(srv, "/tokenize", {"prompt": "Hello world", "return_token_strs": True})
    assert code == 200 and r["count"] == len(r["tokens"]) == len(r["token_strs"]) and r["max_model_len"] == MAX_LEN
    code, d = post(srv, "/detokenize", {"tokens": r["tokens"]})
    assert code == 200 and d["prompt"] == "Hello world"


# ---- errors --------------------------------------------------------------------------------

def is_error(code, r, status, fragment=None):
    assert code == status, (code, r)
    e = r["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["code"] == status
    if fragment:
        assert fragment in e["message"], e["message"]
    return e


ERRORS = [
    ("/v1/completions", {"prompt": "x", "model": "nope"}, 404, "The model `nope` does not exist."),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "model": "gpt-4"}, 404, "does not exist"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens must be at least 1"),
    ("/v1/completions", {"prompt": "x", "max_tokens": MAX_LEN}, 400, "maximum context length is 512"),
    ("/v1/completions", {"prompt": "hello " * 600}, 400, "maximum context length is 512"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 10 ** 30}, 400, "max_tokens must be between 1 and"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "10"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "n": 0}, 400, "n must be at least 1"),
    ("/v1/completions", {"prompt": "x", "n": 100000}, 400, "n must be at most"),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"prompt": "x", "top_k": -5}, 400, "top_k"),
    ("/v1/completions", {"prompt": "x", "logprobs": 50}, 400, "greater than max allowed"),
    ("/v1/completions", {"prompt": "x", "suffix": "y"}, 400, "suffix"),
    ("/v1/completions", {"prompt": "x", "stop": 3}, 400, "stop"),
    ("/v1/completions", {"prompt": "x", "include_stop_str_in_output": "yes"}, 400,
     "include_stop_str_in_output: Input should be a valid boolean"),
    ("/v1/completions", {"prompt": "x", "stream_options": {"include_usage": True}}, 400, "stream=True"),
    ("/v1/completions", {"prompt": []}, 400, "prompt"),
    ("/v1/completions", {"prompt": [[1, 2], "x", {}]}, 400, "prompt[2]"),
    ("/v1/completions", {"prompt": [10 ** 9]}, 400, "out of vocabulary"),
    ("/v1/completions", {}, 400, "prompt: Field required"),
    ("/v1/chat/completions", {}, 400, "messages: Field required"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "x"}]}, 400, "role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, 400,
     "`logprobs` must be set to true"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "chat_template": "{% if %}"}, 400,
     "chat_template"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "chat_template": "{{ raise_exception('no way') }}"}, 400, "no way"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}, 400,
     "tool_choice"),
    ("/v1/chat/completions", {"messages": [{"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": "{not json"}}]}]}, 400, "arguments"),
    ("/tokenize", {"prompt": 5}, 400, "prompt"),
    ("/detokenize", {"tokens": [-1]}, 400, "tokens"),
]


@pytest.mark.parametrize("path,body,status,fragment", ERRORS, ids=[f"{i}" for i in range(len(ERRORS))])
def test_error(srv, path, body, status, fragment):
    if body.get("max_tokens") == 10 ** 30:
        code, text = curl(srv, path, data=b'{"prompt": "x", "max_tokens": 1000000000000000000000000000000}')
        is_error(code, json.loads(text), status, fragment)
        return
    code, r = post(srv, path, body)
    is_error(code, r, status, fragment)


def test_transport_errors(srv):
    is_error(*post_raw(srv, "/v1/completions", b"{bad"), 400, "Invalid JSON")
    is_error(*post_raw(srv, "/v1/completions", b'{"prompt": "\xff\xfe"}'), 400, "UTF-8")
    is_error(*post_raw(srv, "/v1/completions", b'{"prompt": "\\ud800"}'), 400, "Invalid JSON")
    is_error(*post_raw(srv, "/v1/completions", b"[1, 2]"), 400, "JSON object")
    is_error(*post_raw(srv, "/v1/completions", b""), 400, "empty")
    is_error(*post_raw(srv, "/v1/completions", b'{"prompt": "' + b"a" * (2 << 20) + b'"}'), 413, "larger than")
    code, text = curl(srv, "/v1/nowhere")
    is_error(code, json.loads(text), 404, "no route")
    code, text = curl(srv, "/v1/completions")
    is_error(code, json.loads(text), 405)


def post_raw(srv, path, data):
    code, text = curl(srv, path, data=data)
    return code, json.loads(text)


# ---- disconnects and shutdown ------------------------------------------------------------------

def test_disconnect_mid_stream_frees_kv_blocks(srv):
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 400, "stream": True, "ignore_eos": True,
                       "temperature": 1.0}).encode()
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        got = b""
        while b"data: " not in got:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        s.close()
    assert wait_for(lambda: srv.metrics()["shardlm:kv_cache_blocks_used"] == 0 and
                    srv.metrics()["shardlm:num_requests_running"] == 0, timeout=10), srv.metrics()
    m = srv.metrics()
    assert m['shardlm:request_success_total{model_name="smol",finished_reason="abort"}'] >= 4


def test_disconnect_non_streaming_aborts(srv):
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert wait_for(lambda: srv.metrics()["shardlm:num_requests_running"] == 1, timeout=10)
    s.close()
    assert wait_for(lambda: srv.metrics()["shardlm:num_requests_running"] == 0 and
                    srv.metrics()["shardlm:kv_cache_blocks_used"] == 0, timeout=5), srv.metrics()


def test_sigterm_with_requests_in_flight():
    s = Server(MODEL, "--max-model-len", "256")
    results = []

    def stream():
        results.append(curl(s, "/v1/completions", {"prompt": "Hi", "max_tokens": 200, "ignore_eos": True,
                                                   "stream": True}))

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    assert wait_for(lambda: s.metrics()["shardlm:num_requests_running"] == 3, timeout=20)
    t0 = time.time()
    assert s.stop(signal.SIGTERM) == 0, "".join(s.log[-20:])
    assert time.time() - t0 < 15
    for t in threads:
        t.join(10)
    assert len(results) == 3
    for code, text in results:
        assert code == 200 and text.rstrip().endswith("data: [DONE]"), text[-300:]


def test_api_key():
    s = Server(MODEL, "--max-model-len", "256", "--api-key", "sekrit")
    try:
        code, text = curl(s, "/v1/models")
        is_error(code, json.loads(text), 401, "Unauthorized")
        code, text = curl(s, "/v1/models", None, "-H", "Authorization: Bearer wrong")
        assert code == 401
        code, text = curl(s, "/v1/models", None, "-H", "Authorization: Bearer sekri")
        assert code == 401
        code, text = curl(s, "/v1/models", None, "-H", "Authorization: Bearer sekrit")
        assert code == 200
        assert curl(s, "/health")[0] == 200 and curl(s, "/metrics")[0] == 200
    finally:
        assert s.stop() == 0
    s = Server(MODEL, "--max-model-len", "256", env={"SHARDLM_API_KEY": "fromenv"})
    try:
        assert curl(s, "/v1/models")[0] == 401
        assert curl(s, "/v1/models", None, "-H", "Authorization: Bearer fromenv")[0] == 200
    finally:
        assert s.stop() == 0


def test_cli_errors():
    r = subprocess.run([os.environ["SHARDLM_BIN"], "serve", "--prot", "1"], capture_output=True, text=True)
    assert r.returncode != 0 and "--port" in r.stderr
    r = subprocess.run([os.environ["SHARDLM_BIN"], "serve", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for flag in ["--host", "--port", "--api-key", "--served-model-name", "--max-model-len", "--max-num-seqs",
                 "--max-num-batched-tokens", "--gpu-memory-utilization", "--dtype", "--tensor-parallel-size",
                 "--pipeline-parallel-size", "--enable-prefix-caching", "--chat-template", "--generation-config",
                 "--log-level"]:
        assert flag in r.stdout, flag
