"""`pip install ./python` works offline (--no-build-isolation --no-deps) and
the installed package finds the libshardlm.so copied beside it, with
SHARDLM_LIBRARY unset and the source tree off the path. It installs into a
throwaway target folder with the test venv's pip and build tools; it skips
with a message when those cannot build a wheel (setuptools < 70.1 needs the
wheel package)."""

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


def test_pip_install_then_import_from_elsewhere(tmp_path):
    if not can_build_wheels():
        pytest.skip("pip install ./python needs setuptools >= 70.1 or the wheel package in the test venv")
    library = os.environ.get("SHARDLM_LIBRARY")
    if not library:
        pytest.skip("SHARDLM_LIBRARY (the built libshardlm.so to package) is not set")
    target = tmp_path / "site"
    env = dict(os.environ, SHARDLM_LIBRARY=library, PIP_NO_INDEX="1")
    env.pop("PYTHONPATH", None)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--quiet",
                          "--target", str(target), os.path.join(ROOT, "python")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (target / "shardlm" / "libshardlm.so").is_file()

    seq = load_json(FIXTURES, "llama_gqa", "golden.json")["sequences"][0]
    code = ("import shardlm, sys\n"
            "assert shardlm.__file__.startswith(sys.argv[1]), shardlm.__file__\n"
            "llm = shardlm.LLM(model=sys.argv[2], quiet=True)\n"
            f"out = llm.generate({{'prompt_token_ids': {seq['prompt']}}}, "
            "shardlm.SamplingParams(temperature=0, ignore_eos=True), use_tqdm=False)\n"
            "print(out[0].outputs[0].token_ids)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SHARDLM_LIBRARY", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run([sys.executable, "-c", code, str(target), os.path.join(FIXTURES, "llama_gqa")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(seq["greedy"])
