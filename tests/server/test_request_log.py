"""`shardlm serve`'s logs as vLLM's flags shape them, on a fixture model
(tests/fixtures/llama_gqa, token-id prompts): --enable-log-requests logs
each request under the id its response carries, with its prompt ids
(--max-log-len of them) and the parameters it set, and names a request
whose client hung up mid-stream; the periodic stats line (interval from
SHARDLM_LOG_STATS_INTERVAL, as vLLM's VLLM_LOG_STATS_INTERVAL) adds up to
the tokens served; --disable-log-stats silences it; vLLM's
--trust-remote-code and --disable-log-requests are accepted."""
import http.client
import json
import os
import re
import subprocess

from serverlib import Server, wait_for

FIXTURE = os.path.join(os.environ["SHARDLM_FIXTURES"], "llama_gqa")
STATS = re.compile(r"Avg prompt throughput: ([\d.]+) tokens/s, Avg generation throughput: ([\d.]+) tokens/s, "
                   r"Running: (\d+) reqs, Waiting: (\d+) reqs, KV cache usage: ([\d.]+)%, "
                   r"Prefix cache hit rate: ([\d.]+)%")


def lines(srv, pattern):
    return [m for m in (re.search(pattern, line) for line in list(srv.log)) if m]


def test_requests_logged_under_their_ids():
    srv = Server(FIXTURE, "--enable-log-requests", "--max-log-len", "3", "--trust-remote-code",
                 env={"SHARDLM_LOG_STATS_INTERVAL": "1"})
    try:
        code, r = srv.post("/v1/completions", {"prompt": [1, 5, 9, 3, 4], "max_tokens": 7, "ignore_eos": True,
                                               "temperature": 0.5, "seed": 11, "stop": ["x", "y"]})
        assert code == 200, r
        got = lines(srv, r"Received request (\S+): (.*)")
        assert [m.group(1) for m in got] == [r["id"]], srv.log
        assert got[0].group(2) == ("prompt 0: 5 tokens [1, 5, 9, ... 2 more]; params: n=1, temperature=0.5, "
                                   "seed=11, max_tokens=7, stop strings=2, ignore_eos=true, stream=false")
        # two prompts in one request: one line, both prompts
        code, r2 = srv.post("/v1/completions", {"prompt": [[1, 2], [3, 4, 5, 6]], "max_tokens": 2, "n": 2})
        assert code == 200, r2
        assert wait_for(lambda: len(lines(srv, r"Received request")) == 2)
        assert re.search(re.escape(r2["id"]) + r": prompt 0: 2 tokens \[1, 2\]; prompt 1: 4 tokens "
                         r"\[3, 4, 5, \.\.\. 1 more\]; params: n=2, max_tokens=2, stream=false", "".join(srv.log))

        # a client that leaves mid-stream: 64 choices of 250 tokens take seconds on the CPU
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        conn.request("POST", "/v1/completions", json.dumps({"prompt": [1, 2, 3], "max_tokens": 250, "n": 64,
                                                             "ignore_eos": True, "stream": True}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        first = resp.readline().decode()
        while not first.startswith("data: "):
            first = resp.readline().decode()
        stream_id = json.loads(first[len("data: "):])["id"]
        conn.sock.close()
        conn.close()
        assert wait_for(lambda: lines(srv, r"Aborted request " + re.escape(stream_id) + ": the client hung up"),
                        timeout=30), srv.log[-5:]
        # the finished requests are not reported as hung up
        assert not lines(srv, r"Aborted request " + re.escape(r["id"]))

        # the stats lines, one a second: their generation rates add up to at least the 7 + 2x2x2 tokens
        # served before the stream (the stream's count is cut by the abort)
        assert wait_for(lambda: any(float(m.group(2)) == 0 for m in lines(srv, STATS)), timeout=30)
        stats = lines(srv, STATS)
        assert sum(float(m.group(1)) for m in stats) > 0 and sum(float(m.group(2)) for m in stats) >= 15
        assert int(stats[-1].group(3)) == 0 and int(stats[-1].group(4)) == 0
    finally:
        assert srv.stop() == 0, "".join(srv.log[-30:])


def test_quiet_by_default_and_disable_log_stats():
    srv = Server(FIXTURE, "--disable-log-stats", "--disable-log-requests", env={"SHARDLM_LOG_STATS_INTERVAL": "1"})
    try:
        code, r = srv.post("/v1/completions", {"prompt": [1, 5, 9], "max_tokens": 20, "ignore_eos": True})
        assert code == 200, r
        assert not wait_for(lambda: lines(srv, STATS), timeout=2.5)
        assert not lines(srv, r"Received request")
    finally:
        assert srv.stop() == 0, "".join(srv.log[-30:])


def test_bad_values():
    p = subprocess.run([os.environ["SHARDLM_BIN"], "serve", FIXTURE, "--port", "0", "--max-log-len", "-2"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--max-log-len must be -1 (all) or at least 0, got -2" in p.stderr, p.stderr
    srv = Server(FIXTURE, env={"SHARDLM_LOG_STATS_INTERVAL": "10s"})
    try:
        assert wait_for(lambda: lines(srv, r'SHARDLM_LOG_STATS_INTERVAL="10s" is not a positive number of seconds: '
                                           r'using 10'), timeout=10), srv.log
    finally:
        assert srv.stop() == 0, "".join(srv.log[-30:])
