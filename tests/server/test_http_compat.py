"""HTTP behaviour vLLM users rely on, on the fixture model llama_gqa (fast):
only the served model name is served (404 NotFoundError otherwise), an
over-limit body of any size is read before its 413 (clients that send before they
read see the answer, not a reset), GET responses keep the connection
alive, an integer past 64 bits is a 400 naming its field, and a busy port
is reported before the model loads."""
import http.client
import json
import os
import socket
import subprocess
import time

import openai
import pytest

from serverlib import Server

FIXTURE = os.path.join(os.environ["SHARDLM_FIXTURES"], "llama_gqa")
LIMIT = 4096


@pytest.fixture(scope="module")
def named():
    s = Server(FIXTURE, "--served-model-name", "smol", "--max-request-body", str(LIMIT))
    yield s
    assert s.stop() == 0, "".join(s.log[-30:])


def raw_post(srv, path, data, conn=None):
    """(status, JSON) of a POST of raw bytes with http.client (it sends the whole body before reading)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    c.request("POST", path, data, {"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read())


# ---- model names --------------------------------------------------------------------------------

def test_only_the_served_name(named):
    client = openai.OpenAI(base_url=named.url + "/v1", api_key="none", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["smol"]
    r = client.completions.create(model="smol", prompt=[1, 2, 3], max_tokens=2)
    assert r.model == "smol"
    for other in ["llama_gqa", FIXTURE, os.path.abspath(FIXTURE), "gpt-4"]:
        with pytest.raises(openai.NotFoundError) as e:
            client.completions.create(model=other, prompt=[1, 2, 3], max_tokens=2)
        assert e.value.status_code == 404
        assert e.value.body == {"message": f"The model `{other}` does not exist.", "type": "NotFoundError",
                                "param": "model", "code": 404}
    code, r = raw_post(named, "/v1/completions", json.dumps({"prompt": [1, 2], "max_tokens": 1}))
    assert code == 200 and r["model"] == "smol"  # no "model": the served one


def test_default_names():
    s = Server(FIXTURE)
    try:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["llama_gqa"]
        for name in ["llama_gqa", FIXTURE]:  # the folder's name, and the model argument as given
            assert client.completions.create(model=name, prompt=[1, 2], max_tokens=1).model == "llama_gqa"
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="smol", prompt=[1, 2], max_tokens=1)
    finally:
        assert s.stop() == 0, "".join(s.log[-30:])


# ---- request bodies over the limit -----------------------------------------------------------------

def is_413(code, r):
    assert code == 413, (code, r)
    assert r["error"]["code"] == 413 and r["error"]["type"] == "RequestEntityTooLarge"
    assert f"limit of {LIMIT} bytes" in r["error"]["message"] and "--max-request-body" in r["error"]["message"]


def test_body_over_limit_is_read_then_413(named):
    conn = http.client.HTTPConnection("127.0.0.1", named.port, timeout=60)
    is_413(*raw_post(named, "/v1/completions", b"x" * (8 << 20), conn))
    sock = conn.sock
    conn.request("GET", "/health")  # the body was read whole: the connection goes on
    r = conn.getresponse()
    r.read()
    assert r.status == 200 and conn.sock is sock
    is_413(*named.request("POST", "/v1/completions", raw=b" " * (LIMIT * 100)))  # urllib


def test_body_far_over_limit_is_read_then_413(named):
    # However far past the limit, within the drain time: urllib sends it all (Content-Length 80 MiB over the
    # limit) before it reads. A server that answers at once, or stops reading after some bytes, resets it.
    is_413(*named.request("POST", "/v1/completions", raw=b" " * (LIMIT + (80 << 20))))
    conn = http.client.HTTPConnection("127.0.0.1", named.port, timeout=60)
    is_413(*raw_post(named, "/v1/completions", b"x" * (LIMIT + (80 << 20)), conn))
    conn.request("GET", "/health")
    r = conn.getresponse()
    r.read()
    assert r.status == 200


def test_chunked_body_over_limit(named):
    conn = http.client.HTTPConnection("127.0.0.1", named.port, timeout=60)
    chunks = (b" " * 65536 for _ in range(64))
    conn.request("POST", "/v1/completions", chunks, {"Content-Type": "application/json"}, encode_chunked=True)
    r = conn.getresponse()
    is_413(r.status, json.loads(r.read()))


# ---- keep-alive ----------------------------------------------------------------------------------------

def test_get_keeps_the_connection(named):
    conn = http.client.HTTPConnection("127.0.0.1", named.port, timeout=60)
    sock = None
    for path, status in [("/health", 200), ("/v1/models", 200), ("/version", 200), ("/metrics", 200),
                         ("/nowhere", 404), ("/health", 200)]:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        assert r.status == status and (r.getheader("Connection") or "").lower() != "close", (path, r.headers)
        assert sock is None or conn.sock is sock, path
        sock = conn.sock


# ---- integers past 64 bits ---------------------------------------------------------------------------------

BIG = [2 ** 63, 10 ** 30, -(2 ** 63) - 1]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n", "best_of", "seed", "top_k",
                                   "logprobs", "min_tokens"])
@pytest.mark.parametrize("big", BIG)
def test_integer_past_64_bits_names_the_field(named, field, big):
    body = f'{{"prompt": [1, 2], "{field}": {big}}}'
    code, r = raw_post(named, "/v1/completions", body)
    assert code == 400 and r["error"]["param"] == field, r
    assert r["error"]["message"].startswith(f"{field} must be between ") and f"got {float(big):.0f}" in r["error"]["message"]


def test_integer_past_64_bits_elsewhere(named):
    code, r = raw_post(named, "/v1/chat/completions",
                       '{"messages": [], "logprobs": true, "top_logprobs": 18446744073709551616}')
    assert code == 400 and r["error"]["param"] == "top_logprobs", r
    code, r = raw_post(named, "/v1/completions", '{"prompt": [1, 18446744073709551616]}')
    assert code == 400 and r["error"]["param"] == "prompt" and "out of range" in r["error"]["message"], r
    code, r = raw_post(named, "/v1/completions", '{"prompt": [1, 2], "max_tokens": 1, "seed": 9223372036854775807}')
    assert code == 200, r  # the largest int64 still fits


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_large_max_tokens_is_reported_as_sent(named, field):
    # within 64 bits but past the context: vLLM's message, with the number the client sent (not a capped one)
    big = 2 ** 63 - 1
    code, r = raw_post(named, "/v1/completions", json.dumps({"prompt": [1, 2], field: big}))
    assert code == 400 and r["error"]["param"] == "max_tokens", r
    assert r["error"]["message"].startswith(f"'max_tokens' or 'max_completion_tokens' is too large: {big}. ")
    assert f"({big} > 256 - 2)" in r["error"]["message"], r
    code, r = raw_post(named, "/v1/completions", json.dumps({"prompt": [1, 2], field: big, "min_tokens": 2 ** 40}))
    assert code == 400 and r["error"]["param"] == "max_tokens", r  # min_tokens <= max_tokens as sent: fine
    code, r = raw_post(named, "/v1/completions", json.dumps({"prompt": [1, 2], field: 2 ** 40, "min_tokens": 2 ** 41}))
    assert code == 400 and r["error"]["param"] == "min_tokens", r
    assert r["error"]["message"] == f"min_tokens must be less than or equal to max_tokens={2 ** 40}, got {2 ** 41}.", r


# ---- busy port --------------------------------------------------------------------------------------------------

def test_busy_port_before_loading():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.time()
        p = subprocess.run([os.environ["SHARDLM_BIN"], "serve", FIXTURE, "--host", "127.0.0.1", "--port", str(port)],
                           capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and time.time() - t0 < 10, p.stderr
    assert f"127.0.0.1:{port} is already in use" in p.stderr and "--port" in p.stderr, p.stderr
    assert "weights" not in p.stderr and "KV cache" not in p.stderr and "tokenizer" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
