"""serverlib -- start `shardlm serve` for a test and talk to it.

The server binary, the models and the shared data come from environment
variables set by tests/server/CMakeLists.txt:
  SHARDLM_BIN        the shardlm executable
  SHARDLM_MODEL      the default model folder (SmolLM2-135M-Instruct)
  SHARDLM_FIXTURES   tests/fixtures (tiny models without a tokenizer)
  SHARDLM_SHARED     the shared reference data
"""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request


class Server:
    """One `shardlm serve` process on 127.0.0.1 and an ephemeral port."""

    def __init__(self, model, *args, env=None):
        cmd = [os.environ["SHARDLM_BIN"], "serve", model, "--host", "127.0.0.1", "--port", "0", "--threads", "2", *args]
        self.log = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.port = None
        ready = threading.Event()

        def read_log():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"serving .* on http://[^:]+:(\d+)", line)
                if m and not ready.is_set():
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=read_log, daemon=True)
        self.reader.start()
        ready.wait(180)
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.log))
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Signals the server and returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.reader.join(5)
        return rc

    def alive(self):
        return self.proc.poll() is None

    # ---- plain HTTP --------------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, raw=None, timeout=300):
        """Returns (status, parsed JSON or text)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def metrics(self):
        """The /metrics samples as {name{labels}: value} plus {name: value} for unlabeled use."""
        status, text = self.get("/metrics")
        assert status == 200
        out = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
            out.setdefault(key.split("{")[0], float(value))
        return out


def curl(server, path, body=None, *args, data=None):
    """curl as a user runs it: returns (status, body text)."""
    cmd = ["curl", "-s", "-N", "-w", "\n%{http_code}", server.url + path, *args]
    if body is not None or data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
    r = subprocess.run(cmd, input=payload, capture_output=True, timeout=300)
    text = r.stdout.decode()
    text, _, code = text.rpartition("\n")
    return int(code), text


def sse_events(text):
    """The JSON payloads of an SSE body; asserts it ends with [DONE]."""
    events = [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", text[-500:]
    for block in text.split("\n\n"):
        assert block == "" or block.startswith("data: "), block
    return [json.loads(e) for e in events[:-1]]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=30, step=0.1):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(step)
    return pred()
