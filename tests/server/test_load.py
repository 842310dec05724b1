"""Load on loopback: 256 concurrent streaming chat requests all complete
with well-formed streams; then a run where clients disconnect at random
points ends with zero KV blocks in use (read from /metrics)."""
import json
import os
import random
import socket
import threading

from serverlib import Server, sse_events, wait_for

MODEL = os.environ["SHARDLM_MODEL"]
N = 256


def http_stream(port, body, read_chunks=None, rng=None):
    """POSTs a streaming request on a raw socket; returns the decoded body
    (de-chunked), or None when it hung up on purpose after read_chunks reads."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=600)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    raw = b""
    reads = 0
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        raw += chunk
        reads += 1
        if read_chunks is not None and reads >= read_chunks:
            if rng.random() < 0.5:  # a reset instead of a clean close
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
            return None
    s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out += rest[:n]
        body = rest[n + 2:]
    return out.decode()


def test_256_concurrent_streaming_chats():
    srv = Server(MODEL, "--max-model-len", "512", "--max-num-seqs", "256")
    try:
        results = [None] * N
        errors = []

        def one(i):
            try:
                text = http_stream(srv.port, {"messages": [{"role": "user", "content": f"Say a word about {i}"}],
                                              "max_tokens": 8, "stream": True, "ignore_eos": True,
                                              "stream_options": {"include_usage": True}})
                results[i] = sse_events(text)
            except Exception as e:  # noqa: BLE001 -- reported below
                errors.append(f"{i}: {e!r}")

        threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(900)
        assert not errors, errors[:5]
        ids = set()
        for events in results:
            assert events[0]["choices"][0]["delta"]["role"] == "assistant"
            assert events[-1]["usage"]["completion_tokens"] == 8
            finals = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
            assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "length"
            ids.add(events[0]["id"])
        assert len(ids) == N
        # the engine frees a finished request's blocks in its next step
        assert wait_for(lambda: srv.metrics()["shardlm:kv_cache_blocks_used"] == 0 and
                        srv.metrics()["shardlm:num_requests_running"] == 0, timeout=30), srv.metrics()
    finally:
        assert srv.stop() == 0, "".join(srv.log[-20:])


def test_random_disconnects_free_every_kv_block():
    srv = Server(MODEL, "--max-model-len", "512")
    rng = random.Random(1234)
    try:
        plans = [rng.choice([None, 1, 2, 3, 5, 8]) for _ in range(64)]
        errors = []

        def one(i, plan):
            try:
                r = random.Random(i)
                text = http_stream(srv.port, {"messages": [{"role": "user", "content": f"Tell a story {i}"}],
                                              "max_tokens": 64 if plan is None else 300, "ignore_eos": True,
                                              "stream": True}, read_chunks=plan, rng=r)
                if plan is None:
                    sse_events(text)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{i}: {e!r}")

        threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(plans)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(900)
        assert not errors, errors[:5]
        assert wait_for(lambda: srv.metrics()["shardlm:kv_cache_blocks_used"] == 0 and
                        srv.metrics()["shardlm:num_requests_running"] == 0 and
                        srv.metrics()["shardlm:num_requests_waiting"] == 0, timeout=30), srv.metrics()
        status, _ = srv.get("/health")
        assert status == 200
    finally:
        assert srv.stop() == 0, "".join(srv.log[-20:])
