"""tensor_parallel_size / pipeline_parallel_size from Python: worker ranks
run the shardlm executable (SHARDLM_WORKER_EXE, set by ctest) and the
tokens equal transformers'. Each layout runs in its own process: MPI can be
initialized only once per process, so a process holds one multi-rank engine
in its life. Skips when the executable is not given."""

import os
import subprocess
import sys

import pytest

from conftest import FIXTURES, load_json

PROGRAM = """
import sys
from shardlm import LLM, SamplingParams
tp, pp, model = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
prompts = [{"prompt_token_ids": [int(t) for t in p.split(",")]} for p in sys.argv[4:]]
with LLM(model=model, tensor_parallel_size=tp, pipeline_parallel_size=pp, quiet=True, max_model_len=128, kv_cache_memory="64M",
         device="cpu") as llm:
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False)
for o in outs:
    print(" ".join(map(str, o.outputs[0].token_ids)))
"""


@pytest.mark.parametrize("tp, pp", [(2, 1), (1, 2)])
def test_parallel_layouts_equal_transformers(tp, pp):
    exe = os.environ.get("SHARDLM_WORKER_EXE")
    if not exe or not os.path.exists(exe):
        pytest.skip("SHARDLM_WORKER_EXE (the shardlm executable that worker ranks run) is not set")
    seqs = load_json(FIXTURES, "llama_gqa", "golden.json")["sequences"]
    args = [str(tp), str(pp), os.path.join(FIXTURES, "llama_gqa")] + [",".join(map(str, s["prompt"])) for s in seqs]
    run = subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    got = [list(map(int, line.split())) for line in run.stdout.splitlines()]
    assert got == [s["greedy"] for s in seqs]


# A worker program that is missing, not a program, exits at once, or passes `version` but dies as a worker:
# the open raises (RuntimeError) within seconds instead of leaving MPI waiting for workers that never join.
OPEN_TP2 = """
import sys, time
from shardlm import LLM
start = time.monotonic()
try:
    LLM(model=sys.argv[1], tensor_parallel_size=2, quiet=True, max_model_len=128, kv_cache_memory="64M")
except RuntimeError as e:
    print(f"raised after {time.monotonic() - start:.1f} s: {e}")
    sys.exit(0)
sys.exit("opened")
"""


def bogus_worker(kind, tmp_path):
    if kind == "missing name":
        return "no-such-shardlm-anywhere"
    if kind == "missing path":
        return str(tmp_path / "no" / "shardlm")
    if kind == "not executable":
        path = tmp_path / "shardlm"
        path.write_text("#!/bin/sh\nexit 0\n")
        return str(path)
    if kind == "exits at once":
        return "/bin/false"
    real = os.environ.get("SHARDLM_WORKER_EXE")
    if not real or not os.path.exists(real):
        pytest.skip("SHARDLM_WORKER_EXE (the shardlm executable that worker ranks run) is not set")
    path = tmp_path / "shardlm"  # "dies as a worker": answers `version` as shardlm does, then exits
    path.write_text(f'#!/bin/sh\n[ "$1" = version ] && exec "{real}" version\nexit 3\n')
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("kind", ["missing name", "missing path", "not executable", "exits at once",
                                  "dies as a worker"])
def test_bad_worker_exe_raises_quickly(kind, tmp_path):
    exe = bogus_worker(kind, tmp_path)
    env = dict(os.environ, SHARDLM_WORKER_EXE=exe, SHARDLM_COMM_TIMEOUT="3")
    try:
        run = subprocess.run([sys.executable, "-c", OPEN_TP2, os.path.join(FIXTURES, "llama_gqa")], env=env,
                             capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"LLM(tensor_parallel_size=2) with SHARDLM_WORKER_EXE={exe} hung instead of raising")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "raised after" in run.stdout and exe.split("/")[-1] in run.stdout, run.stdout
    assert float(run.stdout.split()[2]) < 15, run.stdout


# A worker killed under a live Python process: the next generate raises, closing the engine returns
# (no MPI_Abort of the caller), and the process lives on; MPI cannot start a second job in it, and
# says so.
KILL_WORKER = """
import os, signal, sys, time
from shardlm import LLM, SamplingParams

def descendants(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out

llm = LLM(model=sys.argv[1], tensor_parallel_size=2, quiet=True, max_model_len=128, kv_cache_memory="64M")
workers = [p for p in descendants(os.getpid()) if b"worker" in open(f"/proc/{p}/cmdline", "rb").read()]
assert workers, "no worker process found"
for p in workers:
    os.kill(p, signal.SIGKILL)
start = time.monotonic()
try:
    llm.generate([{"prompt_token_ids": [5, 6, 7]}], SamplingParams(max_tokens=64, ignore_eos=True), use_tqdm=False)
    sys.exit("generate returned after the worker died")
except RuntimeError as e:
    print(f"generate raised after {time.monotonic() - start:.1f} s: {e}")
llm.close()
print("closed; the process lives on")
try:
    LLM(model=sys.argv[1], tensor_parallel_size=2, quiet=True, max_model_len=128, kv_cache_memory="64M")
    sys.exit("a second job opened")
except RuntimeError as e:
    print(f"second job: {e}")
"""


def test_dead_worker_leaves_the_caller_alive():
    exe = os.environ.get("SHARDLM_WORKER_EXE")
    if not exe or not os.path.exists(exe):
        pytest.skip("SHARDLM_WORKER_EXE (the shardlm executable that worker ranks run) is not set")
    env = dict(os.environ, SHARDLM_COMM_TIMEOUT="3")
    run = subprocess.run([sys.executable, "-c", KILL_WORKER, os.path.join(FIXTURES, "llama_gqa")],
                         capture_output=True, text=True, timeout=120, env=env)
    print(run.stdout, run.stderr[-2000:])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "closed; the process lives on" in run.stdout
    assert "start a new process" in run.stdout
