"""idle_cpu.py SHARDLM MODEL [TP] -- an idle `serve --tensor-parallel-size TP` (2) costs next to nothing.

Starts the server with TP ranks (on the default device: the GPU where there is one), waits for /health, lets it settle, then
reads the CPU time (user + system, from /proc) of the server and every
process under it (the worker, Open MPI's daemon) over a few idle seconds;
then serves one request and measures again.
A rank waiting for work must sleep, not poll: together they may use at most
10% of one core. Prints each process's share, so a regression names the
process that spins.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

IDLE_S = 4.0
LIMIT = 0.10  # cores, all processes together

shardlm, model = sys.argv[1], sys.argv[2]
tp = int(sys.argv[3]) if len(sys.argv) > 3 else 2
ticks = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(root):
    """root and its descendants: {pid: name}."""
    parent = {}
    names = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(d)] = int(fields[1])
        names[int(d)] = name
    out = {}
    for pid in parent:
        p = pid
        while p in parent and p != root:
            p = parent[p]
        if p == root:
            out[pid] = names[pid]
    return out


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


port = free_port()
proc = subprocess.Popen([shardlm, "serve", model, "--tensor-parallel-size", str(tp), "--port", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
try:
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                print("the server did not become ready:", proc.stderr.read() if proc.poll() is not None else "timeout")
                sys.exit(1)
            time.sleep(0.1)
    def idle_cores(when):
        """Cores the server's processes use together over IDLE_S seconds with nothing to do."""
        time.sleep(1.0)  # the last work settles
        procs = tree(proc.pid)
        before = {pid: cpu_seconds(pid) for pid in procs}
        t0 = time.time()
        time.sleep(IDLE_S)
        elapsed = time.time() - t0
        total = 0.0
        for pid, name in sorted(procs.items()):
            after = cpu_seconds(pid)
            if after is None or before[pid] is None:
                continue
            used = after - before[pid]
            total += used
            print(f"{when}: {name} (pid {pid}): {used:.2f} CPU-s over {elapsed:.1f} s idle")
        workers = sum(1 for n in procs.values() if n == "shardlm")
        print(f"{when}: {len(procs)} processes ({workers} shardlm), together {total / elapsed:.3f} cores (limit {LIMIT})")
        if workers < tp:
            print(f"expected the server and its {tp - 1} worker(s) among them")
            sys.exit(1)
        return total / elapsed

    started = idle_cores("after start")
    # and once the ranks have worked: a served request must leave nothing polling behind it
    body = json.dumps({"prompt": [1, 2, 3], "max_tokens": 8}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=60).read()
    served = idle_cores("after a request")
    sys.exit(0 if started <= LIMIT and served <= LIMIT else 1)
finally:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
