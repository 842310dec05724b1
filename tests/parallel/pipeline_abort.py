#!/usr/bin/env python3
"""pipeline_abort.py -- requests cancelled during a pipelined run give every KV block back.

Starts `shardlm serve MODEL` with pipeline stages (several micro-batches in
flight), streams many completions at once and hangs up on half of them after
their first tokens (the server aborts them, often while their step is still
in flight on another stage), lets the rest finish, then reads /metrics until
no request runs: every KV block must be free and the server still healthy
(a last request completes).

usage: pipeline_abort.py SHARDLM MODEL_DIR TPxPP
exit 77 (skip) when MODEL_DIR does not exist.
"""
import http.client
import json
import os
import random
import re
import socket
import sys
import threading
import time
import urllib.request

from layout_check import arguments, serving


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    values = {}
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_blocks_used"):
        m = re.search(rf"^\S*{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        values[name] = float(m.group(1)) if m else None
    return values


def stream(port, prompt, max_tokens, hang_up_after, results, i):
    """Streams one completion; hang_up_after > 0: close the connection after that many events."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "logprobs": 1}  # an event per token, even without a tokenizer
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    events = 0
    while True:
        line = resp.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            events += 1
            if line.strip() == b"data: [DONE]":
                break
            if hang_up_after and events >= hang_up_after:
                conn.sock.shutdown(socket.SHUT_RDWR)
                conn.close()
                results[i] = "hung up"
                return
    conn.close()
    results[i] = f"done after {events} events" if resp.status == 200 else f"HTTP {resp.status}"


def main():
    shardlm, model, (layout,) = arguments()
    tp, pp = (int(x) for x in layout.split("x"))
    vocab = json.load(open(os.path.join(model, "config.json")))["vocab_size"]
    extra = ("--kv-cache-memory", "64M", "--max-num-batched-tokens", "32", "--max-model-len", "256")
    with serving(shardlm, model, tp, pp, extra) as port:
        rng = random.Random(7)
        n = 16
        results = [None] * n
        threads = []
        for i in range(n):
            prompt = [rng.randrange(3, vocab) for _ in range(rng.randrange(2, 60))]
            hang_up_after = 1 + i % 4 if i % 2 else 0
            t = threading.Thread(target=stream, args=(port, prompt, 40, hang_up_after, results, i))
            t.start()
            threads.append(t)
        for t in threads:
            t.join(timeout=300)
        print("requests:", ", ".join(str(r) for r in results))
        if any(r is None or r.startswith("HTTP") for r in results):
            sys.exit("a request failed")
        # An aborted sequence whose step is still in flight on a later stage leaves the
        # running count before its blocks come back (they are freed when the step ends),
        # so wait for the blocks too; a leak still shows after the 30 s.
        for _ in range(300):
            m = metrics(port)
            if m["num_requests_running"] == 0 and m["num_requests_waiting"] == 0 and m["kv_cache_blocks_used"] == 0:
                break
            time.sleep(0.1)
        print(f"after the requests: {m}")
        if m["kv_cache_blocks_used"] != 0:
            sys.exit(f"{m['kv_cache_blocks_used']:.0f} KV blocks still held after every request ended")
        last = [None]
        stream(port, [5, 6, 7], 4, 0, last, 0)
        if last[0] != "done after 5 events":
            sys.exit(f"the server did not answer a last request normally: {last[0]}")
        print(f"tp={tp} pp={pp}: ok, no KV block leaked, {sum(r == 'hung up' for r in results)} requests cancelled")


if __name__ == "__main__":
    main()
