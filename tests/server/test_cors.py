"""CORS as vLLM answers it: vLLM's server wraps its routes in Starlette's
CORSMiddleware with --allowed-origins, --allowed-methods, --allowed-headers
and --allow-credentials. Here Starlette's middleware itself (over an app
that answers 200) meets the same requests as `shardlm serve` on a fixture
model, under three flag sets; the status and body of every preflight and
the Access-Control-* and Vary headers of every answer must be Starlette's.
Preflights need no API key (vLLM's key check lets OPTIONS through)."""
import asyncio
import http.client
import json
import os
import subprocess

import pytest
from starlette.middleware.cors import CORSMiddleware

from serverlib import Server

FIXTURE = os.path.join(os.environ["SHARDLM_FIXTURES"], "llama_gqa")
A, B, OTHER = "https://a.example", "http://b.example:3000", "https://evil.example"

CONFIGS = {  # name: (shardlm flags, Starlette's arguments as vLLM passes them)
    "defaults": ([], dict(allow_origins=["*"], allow_credentials=False, allow_methods=["*"], allow_headers=["*"])),
    "listed": (["--allowed-origins", json.dumps([A, B]), "--allow-credentials", "--allowed-methods",
                '["GET", "POST"]', "--allowed-headers", '["Authorization", "X-Custom"]'],
               dict(allow_origins=[A, B], allow_credentials=True, allow_methods=["GET", "POST"],
                    allow_headers=["Authorization", "X-Custom"])),
    "any_origin_credentials": (["--allow-credentials"], dict(allow_origins=["*"], allow_credentials=True,
                                                             allow_methods=["*"], allow_headers=["*"])),
}

PREFLIGHTS = [  # (path, extra request headers)
    ("/v1/completions", {"Origin": A, "Access-Control-Request-Method": "POST"}),
    ("/v1/chat/completions", {"Origin": B, "Access-Control-Request-Method": "POST",
                              "Access-Control-Request-Headers": "content-type, authorization"}),
    ("/v1/models", {"Origin": OTHER, "Access-Control-Request-Method": "GET"}),
    ("/v1/models", {"Origin": A, "Access-Control-Request-Method": "PUT"}),
    ("/v1/models", {"Origin": A, "Access-Control-Request-Method": "QUERY"}),
    ("/nowhere", {"Origin": A, "Access-Control-Request-Method": "GET",
                  "Access-Control-Request-Headers": "X-Custom,  Accept-Language"}),
    ("/v1/completions", {"Origin": A, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-other"}),
    ("/v1/completions", {"Origin": OTHER, "Access-Control-Request-Method": "DELETE",
                         "Access-Control-Request-Headers": "authorization,,accept"}),
    ("/health", {"Origin": A, "Access-Control-Request-Method": "GET", "Access-Control-Request-Private-Network": "true"}),
]

SIMPLE = [  # (method, path, body, extra request headers): answered by the route, CORS headers added
    ("GET", "/v1/models", None, {"Origin": A}),
    ("GET", "/v1/models", None, {"Origin": OTHER}),
    ("GET", "/v1/models", None, {}),
    ("GET", "/health", None, {"Origin": B, "Cookie": "session=1"}),
    ("POST", "/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 2}, {"Origin": A}),
    ("POST", "/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 2, "stream": True}, {"Origin": B}),
    ("OPTIONS", "/v1/models", None, {"Origin": A}),  # no Access-Control-Request-Method: not a preflight
]


def starlette(kwargs, method, path, headers):
    """Starlette's CORSMiddleware over an app answering 200: (status, body, CORS headers)."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"app"})

    async def run():
        sent = []
        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "http_version": "1.1",
                 "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": ""}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await CORSMiddleware(app, **kwargs)(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], body.decode(), cors_headers((k.decode(), v.decode()) for k, v in start["headers"])

    return asyncio.run(run())


def cors_headers(pairs):
    return sorted((k.lower(), v) for k, v in pairs if k.lower().startswith("access-control-") or k.lower() == "vary")


def shardlm(srv, method, path, body, headers):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    data = json.dumps(body) if body is not None else None
    conn.request(method, path, data, {**({"Content-Type": "application/json"} if data else {}), **headers})
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    return r.status, text, cors_headers(r.getheaders())


@pytest.mark.parametrize("name", CONFIGS)
def test_as_starlette_answers(name):
    flags, kwargs = CONFIGS[name]
    srv = Server(FIXTURE, "--api-key", "sk-test", *flags)
    try:
        auth = {"Authorization": "Bearer sk-test"}
        for path, headers in PREFLIGHTS:
            want = starlette(kwargs, "OPTIONS", path, headers)
            got = shardlm(srv, "OPTIONS", path, None, headers)
            assert got == want, (name, path, headers)
        for method, path, body, headers in SIMPLE:
            _, _, want = starlette(kwargs, method, path, headers)
            status, text, got = shardlm(srv, method, path, body, {**auth, **headers})
            assert got == want, (name, method, path, headers, text[:200])
            assert status == (405 if method == "OPTIONS" else 200), text[:200]
    finally:
        assert srv.stop() == 0, "".join(srv.log[-30:])


def test_bad_lists_refused():
    for flag, value in [("--allowed-origins", "https://a.example"), ("--allowed-headers", '["a", 3]'),
                        ("--allowed-methods", '{"GET": 1}')]:
        p = subprocess.run([os.environ["SHARDLM_BIN"], "serve", FIXTURE, "--port", "0", flag, value],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and f"{flag} must be a JSON list of strings" in p.stderr, p.stderr
