#!/usr/bin/env python3
"""kill_worker_serve.py -- a worker rank of `shardlm serve` killed while a
request streams (completions one after another, so one is in flight):
/health stops answering 200 (503 while the server shuts down), the
request in flight ends (an SSE error event naming the rank, as seen here)
rather than hanging, and the server exits non-zero
with a message that names the rank, within seconds: well before the
communication deadline (30 s here), since a rank on the same machine is
watched by its process id while the others wait for it.

usage: kill_worker_serve.py SHARDLM MODEL_DIR [TPxPP]   (default 2x1)
exit 77 (skip) when MODEL_DIR does not exist. Extra serve arguments (e.g.
--device cuda) come from $SHARDLM_LAYOUT_ARGS.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from layout_check import arguments, free_port

DEADLINE = 30  # SHARDLM_COMM_TIMEOUT for the job: a silent rank is given up on after this
WITHIN = 12    # seconds from the kill to the server's exit (a dead local rank is seen within a second)
LIMIT = 60     # how long to wait for the exit at all


def health(port):
    """/health's status, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def stream(port, result):
    """Streaming completions one after another (a tiny model finishes one in a second) until one does not
    end with [DONE]: result gets how many finished and how the last one ended."""
    body = {"prompt": [5, 6, 7], "max_tokens": 240, "temperature": 0, "stream": True, "ignore_eos": True}
    finished, ending = 0, None
    while ending is None:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        last = b""
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                for line in r:
                    if line.startswith(b"data: "):
                        last = line.strip()
                        if b'"error"' in line:
                            ending = line.decode()[:300]
        except OSError as e:
            ending = f"{type(e).__name__}: {e}"[:300]
        if last == b"data: [DONE]" and ending is None:
            finished += 1
        elif ending is None:
            ending = f"ended without [DONE] after {last[:200]!r}"
    result.update(finished=finished, ending=ending)


def worker_pids():
    """The server's worker ranks: `shardlm worker` processes (started by MPI for the server)."""
    out = subprocess.run(["pgrep", "-f", "shardlm worker"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def main():
    shardlm, model_dir, rest = arguments()
    tp, pp = (int(x) for x in (rest[0] if rest else "2x1").split("x"))
    port = free_port()
    env = dict(os.environ, SHARDLM_COMM_TIMEOUT=str(DEADLINE))
    extra = os.environ.get("SHARDLM_LAYOUT_ARGS", "").split()
    server = subprocess.Popen([shardlm, "serve", model_dir, "--host", "127.0.0.1", "--port", str(port),
                               "--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp),
                               "--max-model-len", "256", *extra],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = []
    threading.Thread(target=lambda: stderr.extend(server.stderr), daemon=True).start()
    try:
        for _ in range(600):
            if health(port) == 200:
                break
            if server.poll() is not None:
                sys.exit(f"the server exited before it was ready: {''.join(stderr)[-2000:]}")
            time.sleep(0.1)
        else:
            sys.exit("the server was not ready in 60 s")
        result = {}
        t = threading.Thread(target=stream, args=(port, result), daemon=True)
        t.start()
        time.sleep(1.5)  # requests are flowing
        pids = worker_pids()
        if not pids:
            sys.exit("no worker process to kill")
        killed = time.time()
        for pid in pids[:1]:
            os.kill(pid, signal.SIGKILL)
        statuses = set()
        while server.poll() is None and time.time() - killed < LIMIT:
            statuses.add(health(port))
            time.sleep(0.2)
        elapsed = time.time() - killed
        t.join(timeout=10)
        log = "".join(stderr)
        print(f"{tp}x{pp}: worker {pids[0]} killed; /health answered {sorted(statuses, key=str)}; "
              f"server exit status {server.returncode} after {elapsed:.1f} s; stream: {result}")
        print("\n".join(l for l in log.splitlines() if re.search(r"rank|failed|timed out", l))[-1500:])
        ok = True
        if server.returncode is None:
            print(f"FAIL: the server still runs {LIMIT} s after its worker died")
            ok = False
        elif server.returncode == 0:
            print("FAIL: the server exited 0 after its worker died")
            ok = False
        elif elapsed > WITHIN:
            print(f"FAIL: the server took {elapsed:.1f} s to exit (more than {WITHIN} s)")
            ok = False
        if 200 in statuses and not (statuses - {200}):
            print("FAIL: /health kept answering 200")
            ok = False
        if not re.search(rf"rank \d+ \(process {pids[0]}\b", log):
            print(f"FAIL: no message names the killed rank (process {pids[0]})")
            ok = False
        if t.is_alive():
            print("FAIL: a client request still hangs after the server exited")
            ok = False
        sys.exit(0 if ok else 1)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        subprocess.run(["pkill", "-9", "-f", "shardlm worker"], capture_output=True)


if __name__ == "__main__":
    main()
