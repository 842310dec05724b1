"""Shared fixtures: the repository's models and golden files, and engines
opened once per test module (opening SmolLM2 takes about a second).

Truth comes from outside shardlm: transformers' greedy tokens and top-5
logprobs recorded in tests/fixtures/*/golden.json, the tokenizers library,
and jinja2 for chat templates. The default model is optional: tests that
need it skip with a message when models/SmolLM2-135M-Instruct is absent.

Engines whose outputs are held to transformers' tokens and logprobs at the
CPU reference's tolerances (EXACT: the fixtures', the dtype and layout tests)
open on the CPU even where a GPU is visible: the GPU rounds its 16-bit
activations and sums in other orders, so it parts from transformers at near
ties and is held to them, near ties allowed, by test_golden (C). The rest
open on the default device.
"""

import json
import os

import pytest

from shardlm import LLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct")
EXACT = {"device": "cpu"}
FIXTURE_MODELS = sorted(d for d in os.listdir(FIXTURES)
                        if os.path.exists(os.path.join(FIXTURES, d, "model.safetensors")))


def load_json(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return json.load(f)


def need_default_model():
    if not os.path.exists(os.path.join(DEFAULT_MODEL, "model.safetensors")):
        pytest.skip(f"the default model is not at {DEFAULT_MODEL}: run tools/get-default-model.sh to fetch and convert it")


@pytest.fixture(scope="module")
def smol():
    need_default_model()
    with LLM(model=DEFAULT_MODEL, quiet=True, max_model_len=1024, kv_cache_memory="512M") as llm:
        yield llm


@pytest.fixture(scope="module")
def smol_golden():
    return load_json(FIXTURES, "smollm2", "golden.json")


@pytest.fixture(scope="module", params=FIXTURE_MODELS)
def fixture_model(request):
    """(name, LLM, golden sequences) for each tiny fixture model (ids only: no tokenizer)."""
    name = request.param
    with LLM(model=os.path.join(FIXTURES, name), quiet=True, max_model_len=128, kv_cache_memory="64M", **EXACT) as llm:
        yield name, llm, load_json(FIXTURES, name, "golden.json")["sequences"]
