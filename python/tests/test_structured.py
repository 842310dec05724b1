"""Structured output through vLLM's API shape (SamplingParams.structured_outputs)
on the default model: every output is checked by an outside judge -- JSON
schemas by the `jsonschema` library, regexes by Python's `re`, choices by
membership -- with greedy and random sampling and several choices per prompt.
A bad constraint raises ValueError with the engine's message."""

import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest

from conftest import DEFAULT_MODEL
from shardlm import GuidedDecodingParams, SamplingParams, StructuredOutputsParams

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
        "address": {"$ref": "#/$defs/address"},
        "role": {"enum": ["admin", "user", "guest"]},
        "score": {"anyOf": [{"type": "number"}, {"type": "null"}]},
    },
    "required": ["name", "age", "role", "address"],
    "additionalProperties": False,
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "zip": {"type": "string", "pattern": "[0-9]{5}"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        }
    },
}


def chat(text):
    return [{"role": "user", "content": text}]


def test_json_schema_greedy_and_sampled(smol):
    conv = chat("Describe a user of a web site as JSON.")
    greedy = SamplingParams(temperature=0, max_tokens=200, structured_outputs=StructuredOutputsParams(json=PERSON))
    sampled = SamplingParams(temperature=1.0, seed=11, n=4, max_tokens=200,
                             structured_outputs=StructuredOutputsParams(json=json.dumps(PERSON)))
    outs = smol.chat([conv, conv], [greedy, sampled], use_tqdm=False)
    assert len(outs[0].outputs) == 1 and len(outs[1].outputs) == 4
    # a sampled choice may still be inside a value when max_tokens ends it: "score" is a number of any
    # length, and at temperature 1 the model can go on with digits (on a CPU without AVX-512 one of the
    # four did, past 160 of them); it must then have used every token. The rest must be whole and valid.
    finished = 0
    for c in outs[0].outputs + outs[1].outputs:
        if c.finish_reason == "length" and c is not outs[0].outputs[0]:
            assert len(c.token_ids) == 200, c.text
            continue
        assert c.finish_reason == "stop", c.text
        jsonschema.validate(json.loads(c.text), PERSON)
        finished += 1
    assert finished >= 3, "the greedy choice and at least two of the four sampled ones end their JSON"


def test_regex_choice_grammar(smol):
    cases = [
        (StructuredOutputsParams(regex=r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9]"),
         lambda t: re.fullmatch(r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9]", t)),
        (StructuredOutputsParams(choice=["Paris", "London", "Berlin"]), lambda t: t in ("Paris", "London", "Berlin")),
        (GuidedDecodingParams(grammar='root ::= "The answer is " [0-9]+ "."'),
         lambda t: re.fullmatch(r"The answer is [0-9]+\.", t)),
        (StructuredOutputsParams(grammar='start: "The answer is " INT "."\n%import common.INT\n'),  # Lark
         lambda t: re.fullmatch(r"The answer is [0-9]+\.", t)),
    ]
    conv = chat("When and where did the French revolution start? Answer briefly.")
    for seed in (0, 1):
        params = [SamplingParams(temperature=0.9, seed=seed, max_tokens=300, structured_outputs=g) for g, _ in cases]
        for (g, ok), out in zip(cases, smol.chat([conv] * len(cases), params, use_tqdm=False)):
            text = out.outputs[0].text
            assert out.outputs[0].finish_reason == "stop", (g, text)
            assert ok(text), (g, text)


def test_json_object(smol):
    sp = SamplingParams(temperature=0, max_tokens=300, structured_outputs=StructuredOutputsParams(json_object=True))
    for q in ("What is the capital of France? Answer in JSON.", "Give me a JSON object with two fields."):
        out = smol.chat(chat(q), sp, use_tqdm=False)[0].outputs[0]
        assert out.finish_reason == "stop", out.text
        assert isinstance(json.loads(out.text), dict)


def test_guided_decoding_alias_and_logprobs(smol):
    sp = SamplingParams(temperature=0, max_tokens=8, logprobs=3,
                        guided_decoding=GuidedDecodingParams(choice=["yes", "no"]))
    out = smol.chat(chat("Is the sky blue?"), sp, use_tqdm=False)[0].outputs[0]
    assert out.text in ("yes", "no")
    assert len(out.logprobs) == len(out.token_ids)


def test_backend_masks_give_the_host_tokens(smol):
    """The backend samples guided rows with the grammar's mask; logprobs keep a request's rows on the host,
    which masks and samples the whole row. Both give the same tokens, greedy and seeded with each filter."""
    conv = chat("Describe a user of a web site as JSON.")
    guide = StructuredOutputsParams(json=PERSON)
    for filters in [dict(temperature=0), dict(temperature=1.0), dict(temperature=0.8, top_k=40, top_p=0.9, min_p=0.02)]:
        backend = SamplingParams(seed=3, max_tokens=150, structured_outputs=guide, **filters)
        host = SamplingParams(seed=3, max_tokens=150, structured_outputs=guide, logprobs=0, **filters)
        by_backend, by_host = (o.outputs[0] for o in smol.chat([conv, conv], [backend, host], use_tqdm=False))
        assert by_backend.logprobs is None and len(by_host.logprobs) == len(by_host.token_ids)
        assert by_backend.token_ids == by_host.token_ids, (filters, by_backend.text, by_host.text)
        assert by_backend.finish_reason == by_host.finish_reason


def test_bad_constraints(smol):
    with pytest.raises(ValueError, match="one kind"):
        StructuredOutputsParams(json=PERSON, regex="a+")
    with pytest.raises(ValueError, match="one kind"):
        StructuredOutputsParams()
    for g, needle in [(StructuredOutputsParams(json='{"type": '), "not valid JSON"),
                      (StructuredOutputsParams(json={"type": "string", "contentEncoding": "base64"}), "contentEncoding"),
                      (StructuredOutputsParams(grammar="root ::= missing"), "missing"),
                      (StructuredOutputsParams(grammar="start: a\n%declare X\n"), "%declare"),
                      (StructuredOutputsParams(regex="(unclosed"), "regex")]:
        with pytest.raises(ValueError, match=needle):
            smol.generate(["Hi"], SamplingParams(max_tokens=4, structured_outputs=g), use_tqdm=False)
    # the engine is unharmed
    assert smol.generate(["Hi"], SamplingParams(max_tokens=2), use_tqdm=False)[0].outputs[0].token_ids


# The mask is applied where the sampling happens (rank 0): every layout gives one process's outputs.
LAYOUT = """
import json, sys
from shardlm import LLM, SamplingParams, StructuredOutputsParams
tp, pp, model, schema = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
with LLM(model=model, tensor_parallel_size=tp, pipeline_parallel_size=pp, quiet=True, max_model_len=512,
         kv_cache_memory="256M") as llm:
    sp = SamplingParams(temperature=1.0, seed=5, n=2, max_tokens=120,
                        structured_outputs=StructuredOutputsParams(json=schema))
    out = llm.chat([{"role": "user", "content": "Describe a user of a web site as JSON."}], sp, use_tqdm=False)[0]
print(json.dumps([c.text for c in out.outputs]))
"""


@pytest.mark.parametrize("tp, pp", [(2, 1), (1, 2)])
def test_layouts_give_the_same_guided_outputs(smol, tp, pp):
    exe = os.environ.get("SHARDLM_WORKER_EXE")
    if not exe or not os.path.exists(exe):
        pytest.skip("SHARDLM_WORKER_EXE (the shardlm executable that worker ranks run) is not set")
    sp = SamplingParams(temperature=1.0, seed=5, n=2, max_tokens=120,
                        structured_outputs=StructuredOutputsParams(json=PERSON))
    one = smol.chat(chat("Describe a user of a web site as JSON."), sp, use_tqdm=False)[0]
    run = subprocess.run([sys.executable, "-c", LAYOUT, str(tp), str(pp), DEFAULT_MODEL, json.dumps(PERSON)],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    texts = json.loads(run.stdout)
    for t in texts:
        jsonschema.validate(json.loads(t), PERSON)
    assert texts == [c.text for c in one.outputs]
