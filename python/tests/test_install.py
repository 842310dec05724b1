"""`pip install ./python` works offline (--no-build-isolation --no-deps) and
the installed package finds the libshardlm.so copied beside it, with
SHARDLM_LIBRARY unset and the source tree off the path; it carries the
shardlm executable its worker ranks run (bin/shardlm), so a tensor-parallel
engine starts from the installed package with SHARDLM_WORKER_EXE unset and
no shardlm on PATH, and its workers are that executable. It installs once
per module into a throwaway target folder with the test venv's pip and
build tools; it skips with a message when those cannot build a wheel
(setuptools < 70.1 needs the wheel package)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import FIXTURES, ROOT, load_json


def can_build_wheels():
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    import setuptools
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The site folder `pip install --target` filled (SHARDLM_LIBRARY and the shardlm beside it packaged)."""
    if not can_build_wheels():
        pytest.skip("pip install ./python needs setuptools >= 70.1 or the wheel package in the test venv")
    library = os.environ.get("SHARDLM_LIBRARY")
    if not library:
        pytest.skip("SHARDLM_LIBRARY (the built libshardlm.so to package) is not set")
    target = tmp_path_factory.mktemp("install") / "site"
    env = dict(os.environ, SHARDLM_LIBRARY=library, PIP_NO_INDEX="1")
    env.pop("PYTHONPATH", None)
    if os.environ.get("SHARDLM_WORKER_EXE"):  # ctest names the shardlm built with the library
        env["SHARDLM_EXECUTABLE"] = os.environ["SHARDLM_WORKER_EXE"]
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--quiet",
                          "--target", str(target), os.path.join(ROOT, "python")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return target


def installed_env(target):
    """The environment of a user of the installed package: no source tree, no SHARDLM_* pointers, and no
    shardlm executable on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHARDLM_LIBRARY", "PYTHONPATH", "SHARDLM_WORKER_EXE")}
    env["PYTHONPATH"] = str(target)
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(d for d in dirs if d and not os.path.exists(os.path.join(d, "shardlm")))
    return env


def test_pip_install_then_import_from_elsewhere(installed, tmp_path):
    assert (installed / "shardlm" / "libshardlm.so").is_file()
    seq = load_json(FIXTURES, "llama_gqa", "golden.json")["sequences"][0]
    code = ("import shardlm, sys\n"
            "assert shardlm.__file__.startswith(sys.argv[1]), shardlm.__file__\n"
            "llm = shardlm.LLM(model=sys.argv[2], quiet=True, device='cpu')\n"
            f"out = llm.generate({{'prompt_token_ids': {seq['prompt']}}}, "
            "shardlm.SamplingParams(temperature=0, ignore_eos=True), use_tqdm=False)\n"
            "print(out[0].outputs[0].token_ids)\n")
    run = subprocess.run([sys.executable, "-c", code, str(installed), os.path.join(FIXTURES, "llama_gqa")],
                         cwd=tmp_path, env=installed_env(installed), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(seq["greedy"])


def test_installed_package_carries_a_working_worker(installed, tmp_path):
    exe = installed / "shardlm" / "bin" / "shardlm"
    assert exe.is_file() and os.access(exe, os.X_OK), f"{exe}: the package has no shardlm executable for its workers"
    run = subprocess.run([str(exe), "version"], cwd=tmp_path, env=installed_env(installed), capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 0 and run.stdout.startswith("shardlm "), run.stdout + run.stderr


# Opens a tp=2 engine from the installed package and, while it is open, lists the processes running the
# package's own shardlm (the workers), then generates.
TENSOR_PARALLEL = """
import os, sys
import shardlm
target, model, prompt = sys.argv[1], sys.argv[2], [int(t) for t in sys.argv[3].split(",")]
exe = os.path.realpath(os.path.join(target, "shardlm", "bin", "shardlm"))

def workers():
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            n += os.path.realpath(f"/proc/{pid}/exe") == exe
        except OSError:
            pass
    return n

with shardlm.LLM(model=model, tensor_parallel_size=2, quiet=True, max_model_len=128, kv_cache_memory="64M",
                 device="cpu") as llm:
    print("workers", workers())
    out = llm.generate({"prompt_token_ids": prompt}, shardlm.SamplingParams(temperature=0, max_tokens=16,
                       ignore_eos=True), use_tqdm=False)
print("tokens", " ".join(map(str, out[0].outputs[0].token_ids)))
"""


def test_installed_package_runs_tensor_parallel_without_worker_exe(installed, tmp_path):
    seq = load_json(FIXTURES, "llama_gqa", "golden.json")["sequences"][0]
    args = [str(installed), os.path.join(FIXTURES, "llama_gqa"), ",".join(map(str, seq["prompt"]))]
    run = subprocess.run([sys.executable, "-c", TENSOR_PARALLEL, *args], cwd=tmp_path, env=installed_env(installed),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    assert lines["workers"] == "1", "the worker rank should run the package's own bin/shardlm\n" + run.stderr
    assert list(map(int, lines["tokens"].split())) == seq["greedy"]
