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
with LLM(model=model, tensor_parallel_size=tp, pipeline_parallel_size=pp, quiet=True, max_model_len=128, kv_cache_memory="64M") as llm:
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
