"""A bounded fuzz of malformed requests against a running server: random
JSON mutations, wrong types, huge numbers, invalid UTF-8, truncated bodies,
garbage request lines and slowloris connections. Every complete request
gets an HTTP answer (an OpenAI-shaped error unless it was valid), and the
server stays up and keeps serving. Seeded: set SHARDLM_FUZZ_SEED to vary."""
import json
import os
import random
import socket
import threading
import time

from serverlib import Server, sse_events

MODEL = os.environ["SHARDLM_MODEL"]
SEED = int(os.environ.get("SHARDLM_FUZZ_SEED", "20241125"))
SECONDS = float(os.environ.get("SHARDLM_FUZZ_SECONDS", "20"))

BASES = [
    ("/v1/completions", {"prompt": "Hello", "max_tokens": 4, "temperature": 0.5, "logprobs": 1, "n": 2}),
    ("/v1/completions", {"prompt": [[1, 2, 3], "hi"], "max_tokens": 3, "stream": True, "echo": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True,
                              "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2}),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": "S"},
                                           {"role": "user", "content": [{"type": "text", "text": "x"}]}],
                              "max_tokens": 3, "stop": ["a", "b"], "top_k": 3, "seed": 1}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Weather?"}], "max_tokens": 6, "stream": True,
                              "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                                  "type": "object", "properties": {"a": {"type": "string"}}}}}],
                              "tool_choice": "required"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "tool_choice": "auto",
                              "tools": [{"type": "function", "function": {"name": "g"}}],
                              "guided_regex": "<tool_call>[a-z{}\":, ]*"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
                              "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
                                  "type": "object", "properties": {"b": {"type": "array", "items": {"type": "integer"}}}}}}}),
    ("/v1/completions", {"prompt": "Pick", "max_tokens": 3, "guided_choice": ["a", "bb"], "n": 2}),
    ("/tokenize", {"prompt": "Hello world", "add_special_tokens": True}),
    ("/tokenize", {"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": True}),
    ("/detokenize", {"tokens": [1, 2, 3]}),
]
WEIRD = [None, True, False, 0, -1, 1, 2 ** 31, -2 ** 31, 2 ** 63 - 1, 1e308, -1e308, 1.5, "", "x" * 1000, "\u0000",
         "\ud7ff\ue000", [], [None], [[[]]], {}, {"a": {"b": {"c": []}}}, "💥" * 50, [1] * 2000, -0.0]


def mutate_value(rng, v, depth=0):
    if depth > 3 or rng.random() < 0.4:
        return rng.choice(WEIRD)
    if isinstance(v, dict):
        v = dict(v)
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            keys = list(v)
            if op < 0.3 and keys:
                del v[rng.choice(keys)]
            elif op < 0.8 and keys:
                k = rng.choice(keys)
                v[k] = mutate_value(rng, v[k], depth + 1)
            else:
                v[rng.choice(["n", "max_tokens", "stream", "messages", "prompt", "model", "tools", "stop",
                              "chat_template", "logprobs", "top_logprobs", "temperature", "suffix",
                              "stream_options", "continue_final_message", "chat_template_kwargs",
                              "add_generation_prompt", "tokens", "min_tokens", "stop_token_ids", "response_format",
                              "tool_choice", "guided_json", "guided_choice", "guided_regex", "guided_grammar",
                              "structured_outputs", "json_schema", "grammar"])] = rng.choice(WEIRD)
        return v
    if isinstance(v, list):
        v = list(v)
        if v and rng.random() < 0.5:
            i = rng.randrange(len(v))
            v[i] = mutate_value(rng, v[i], depth + 1)
        else:
            v.append(rng.choice(WEIRD))
        return v
    return rng.choice(WEIRD)


def mutate_bytes(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.3 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op < 0.5:
            data[rng.randrange(len(data) + 1):] = b""
        elif op < 0.7:
            pos = rng.randrange(len(data) + 1)
            data[pos:pos] = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00", b"{", b"]"])
        else:
            pos = rng.randrange(len(data) + 1)
            data[pos:pos] = b"9" * rng.randint(1, 400)
    return bytes(data)


def exchange(port, raw, timeout=60):
    """Sends raw bytes, reads until the server closes; returns the response bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(raw)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def request_bytes(path, body):
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: f\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def check_answer(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), resp[:200]
    status = int(head.split(b" ")[1])
    assert status in (200, 400, 404, 405, 413), resp[:500]
    if status != 200:
        # chunked or not, the error JSON is in there
        start, end = body.find(b"{"), body.rfind(b"}")
        err = json.loads(body[start:end + 1])["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["code"] == status
    elif b"text/event-stream" in head:
        assert b"data: [DONE]" in body, body[-300:]
    return status


def slowloris(port, stop, rng):
    socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: s\r\n")
        socks.append(s)
    while not stop.is_set():
        for s in socks:
            try:
                s.sendall(b"X-%d: %d\r\n" % (rng.randrange(1000), rng.randrange(1000)))
            except OSError:
                pass
        time.sleep(0.5)
    for s in socks:
        s.close()


def test_fuzz_requests_server_stays_up():
    srv = Server(MODEL, "--max-model-len", "128", "--max-request-body", "64K", "--enable-auto-tool-choice",
                 "--tool-call-parser", "hermes")
    rng = random.Random(SEED)
    stop = threading.Event()
    loris = threading.Thread(target=slowloris, args=(srv.port, stop, random.Random(SEED + 1)))
    loris.start()
    counts = {}
    try:
        t0 = time.time()
        i = 0
        while time.time() - t0 < SECONDS:
            i += 1
            path, base = rng.choice(BASES)
            kind = rng.random()
            if kind < 0.5:
                raw = request_bytes(path, json.dumps(mutate_value(rng, base)).encode())
            elif kind < 0.8:
                raw = request_bytes(path, mutate_bytes(rng, json.dumps(base).encode()))
            elif kind < 0.9:
                # truncated body: promises more than it sends, then half-closes
                body = json.dumps(base).encode()
                raw = request_bytes(path, body)[: -rng.randint(1, len(body))]
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
                s.sendall(raw)
                s.close()
                continue
            else:
                raw = rng.choice([b"GARBAGE\r\n\r\n", b"GET /health HTTP/9.9\r\n\r\n",
                                  b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                                  b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nConnection: close\r\n\r\n",
                                  b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
                                  b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 5000 + b"\r\n"])
                resp = exchange(srv.port, raw)
                assert srv.alive()
                if resp:
                    assert resp.startswith(b"HTTP/1."), resp[:100]
                continue
            status = check_answer(exchange(srv.port, raw))
            counts[status] = counts.get(status, 0) + 1
            assert srv.alive(), "".join(srv.log[-30:])
        print(f"fuzz: {i} requests, answers by status {counts}")
        assert counts.get(400, 0) > 0
        status, r = srv.get("/health")
        assert status == 200
        status, r = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
        assert status == 200 and r["choices"][0]["message"]["role"] == "assistant"
    finally:
        stop.set()
        loris.join()
        assert srv.stop() == 0, "".join(srv.log[-30:])
