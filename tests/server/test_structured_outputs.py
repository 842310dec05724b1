"""Structured output and tool calls end to end on the default model
(SmolLM2-135M-Instruct), through the official OpenAI SDK: what the model
writes under response_format / guided_* / llama.cpp's fields is judged by
outside truth (Python's json, jsonschema and re), tool_choice "required" and
a named function give calls whose arguments validate against the tool's
schema, a streamed call reassembles to the call of the same request not
streamed, and "auto" with the hermes parser reads <tool_call> blocks (the
model is held to writing one by a regex, since SmolLM2 was never taught
to), and the SDK's parse() with a Pydantic model returns it parsed. These need the
engine to apply the grammar (sl_guide)."""
import json
import os
import re
from typing import Literal, Optional

import jsonschema
import openai
import pydantic
import pytest

from serverlib import Server, curl

MODEL = os.environ["SHARDLM_MODEL"]

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20},
    "age": {"type": "integer"},
    "pets": {"type": "array", "items": {"type": "string", "enum": ["cat", "dog", "fish"]}, "maxItems": 3}},
    "required": ["name", "age", "pets"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}},
                   "required": ["zone"], "additionalProperties": False}}}
TOOLS = [WEATHER, CLOCK]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


@pytest.fixture(scope="module")
def server():
    s = Server(MODEL, "--max-model-len", "1024", "--enable-auto-tool-choice", "--tool-call-parser", "hermes")
    yield s
    assert s.stop() == 0, "".join(s.log[-30:])


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300)


def create(client, **kw):
    return client.chat.completions.create(model="SmolLM2-135M-Instruct", **{"messages": ASK, "max_tokens": 120,
                                                                           "temperature": 0, **kw})


# ---- structured output ---------------------------------------------------------------------

def test_response_format_json_schema(client):
    r = create(client, messages=[{"role": "user", "content": "Describe a person as JSON."}], n=3, temperature=0.8,
               seed=7, response_format={"type": "json_schema",
                                        "json_schema": {"name": "person", "schema": PERSON, "strict": True}})
    assert len(r.choices) == 3
    for c in r.choices:
        assert c.finish_reason == "stop", c
        jsonschema.validate(json.loads(c.message.content), PERSON)


def test_response_format_json_object(client):
    r = create(client, messages=[{"role": "user", "content": "Give me a JSON object with keys name and age."}],
               max_tokens=200,
               response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_guided_choice(client):
    choices = ["Paris", "London", "Berlin"]
    r = create(client, messages=[{"role": "user", "content": "The capital of France?"}], n=2, temperature=1.0,
               seed=3, extra_body={"guided_choice": choices})
    assert all(c.message.content in choices for c in r.choices)


def test_guided_regex_and_structured_outputs(client):
    pattern = r"[0-9]{3}-[A-Z]{2}"
    r = create(client, extra_body={"structured_outputs": {"regex": pattern}})
    assert re.fullmatch(pattern, r.choices[0].message.content)
    r = create(client, extra_body={"guided_regex": r"(yes|no), because [a-z ]{1,30}\."})
    assert re.fullmatch(r"(yes|no), because [a-z ]{1,30}\.", r.choices[0].message.content)


def test_gbnf_grammar(client):
    grammar = 'root ::= answer " " answer\nanswer ::= "yes" | "no" | "maybe"'
    r = create(client, extra_body={"guided_grammar": grammar})
    assert re.fullmatch(r"(yes|no|maybe) (yes|no|maybe)", r.choices[0].message.content)


def test_completions_route(client):
    r = client.completions.create(model="SmolLM2-135M-Instruct", prompt="A person as JSON:", max_tokens=120,
                                  temperature=0, extra_body={"json_schema": PERSON})
    jsonschema.validate(json.loads(r.choices[0].text), PERSON)
    r = client.completions.create(model="SmolLM2-135M-Instruct", prompt="Pick a color:", max_tokens=5, temperature=0,
                                  extra_body={"guided_choice": ["red", "green"]})
    assert r.choices[0].text in ("red", "green")


def test_streamed_json_equals_whole(client):
    kw = dict(messages=[{"role": "user", "content": "Describe a person as JSON."}],
              response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
    whole = create(client, **kw).choices[0].message.content
    text = "".join(ch.choices[0].delta.content or "" for ch in create(client, stream=True, **kw) if ch.choices)
    assert text == whole
    jsonschema.validate(json.loads(text), PERSON)


class Pet(pydantic.BaseModel):
    kind: Literal["cat", "dog", "fish"]
    name: str = pydantic.Field(max_length=16)


class Owner(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    age: int
    pets: list[Pet] = pydantic.Field(max_length=2)
    nickname: Optional[str] = pydantic.Field(max_length=12)


def test_sdk_parse_pydantic_model(client):
    """The SDK's own structured-output path: parse() turns the Pydantic model into its strict JSON
    schema ($defs and $ref for Pet, anyOf with null for the Optional, every field required) and the
    reply back into an Owner, greedy and sampled."""
    for kw in ({"temperature": 0}, {"temperature": 0.8, "seed": 11, "n": 2}):
        r = client.chat.completions.parse(model="SmolLM2-135M-Instruct", response_format=Owner, max_tokens=200,
                                          messages=[{"role": "user", "content": "Describe a pet owner as JSON."}], **kw)
        assert len(r.choices) == kw.get("n", 1)
        for c in r.choices:
            assert c.finish_reason == "stop", c
            assert isinstance(c.message.parsed, Owner), c.message
            assert c.message.parsed == Owner.model_validate_json(c.message.content)
            assert len(c.message.parsed.pets) <= 2


def test_invalid_grammar_is_400(server):
    code, text = curl(server, "/v1/chat/completions", {"messages": ASK, "guided_grammar": "root ::= missing"})
    assert code == 400, text
    assert "missing" in json.loads(text)["error"]["message"]


# ---- forced tool calls -----------------------------------------------------------------------

def check_call(call):
    assert call.type == "function" and re.fullmatch(r"chatcmpl-tool-[0-9a-f]{32}", call.id)
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("question", ["What is the weather like in Paris right now?", "What time is it in Tokyo?",
                                      "Weather in Oslo and time in Lima?"])
def test_tool_choice_required(client, question):
    # greedy: sampled, this model may repeat calls until max_tokens (the array is unbounded, as in vLLM)
    r = create(client, messages=[{"role": "user", "content": question}], tools=TOOLS, tool_choice="required", n=2,
               max_tokens=200)
    for c in r.choices:
        assert c.finish_reason == "tool_calls" and c.message.content is None
        assert len(c.message.tool_calls) >= 1
        for call in c.message.tool_calls:
            check_call(call)


def test_tool_choice_named(client):
    for name in ("get_weather", "get_time"):
        r = create(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": name}})
        c = r.choices[0]
        assert c.finish_reason == "stop" and c.message.content is None  # as vLLM and OpenAI for a named function
        assert [call.function.name for call in c.message.tool_calls] == [name]
        check_call(c.message.tool_calls[0])


def reassemble(stream):
    """Tool calls out of streamed deltas, as clients assemble them; checks the delta shapes on the way."""
    calls, content, finish = {}, "", None
    for chunk in stream:
        for ch in chunk.choices:
            content += ch.delta.content or ""
            finish = ch.finish_reason or finish
            for d in ch.delta.tool_calls or []:
                if d.index not in calls:  # a call's first delta: id, type, name and "" arguments
                    assert d.id and d.type == "function" and d.function.name and d.function.arguments == ""
                    calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
                else:
                    assert d.id is None and d.function.name is None
                    calls[d.index]["arguments"] += d.function.arguments
    assert sorted(calls) == list(range(len(calls)))
    return [calls[i] for i in sorted(calls)], content, finish


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_streamed_tool_calls_equal_whole(client, choice):
    whole = create(client, tools=TOOLS, tool_choice=choice).choices[0]
    calls, content, finish = reassemble(create(client, tools=TOOLS, tool_choice=choice, stream=True))
    assert [(c["name"], c["arguments"]) for c in calls] == \
           [(c.function.name, c.function.arguments) for c in whole.message.tool_calls]
    assert content == "" and finish == whole.finish_reason


def test_tool_conversation_round_trip(client):
    """The calls of one turn and their results go back in the next turn's messages."""
    first = create(client, tools=TOOLS, tool_choice="required").choices[0].message
    messages = ASK + [first.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"} for call in first.tool_calls]
    r = create(client, messages=messages, tools=TOOLS, tool_choice="none", max_tokens=20)
    assert isinstance(r.choices[0].message.content, str) and r.choices[0].message.tool_calls == []


# ---- tool_choice "auto": the hermes parser ----------------------------------------------------

HERMES_CALL = (r'I will check\. <tool_call>\n\{"name": "get_weather", "arguments": '
               r'\{"city": "(Paris|Lyon)", "unit": "(celsius|fahrenheit)"\}\}\n</tool_call>')


def test_auto_reads_hermes_calls(client):
    r = create(client, tools=TOOLS, tool_choice="auto", extra_body={"guided_regex": HERMES_CALL})
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content == "I will check."
    assert [call.function.name for call in c.message.tool_calls] == ["get_weather"]
    check_call(c.message.tool_calls[0])
    calls, content, finish = reassemble(create(client, tools=TOOLS, tool_choice="auto", stream=True,
                                               extra_body={"guided_regex": HERMES_CALL}))
    assert content == "I will check." and finish == "tool_calls"
    assert [(x["name"], x["arguments"]) for x in calls] == [("get_weather", c.message.tool_calls[0].function.arguments)]


def test_auto_without_a_call_is_content(client):
    kw = dict(tools=TOOLS, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16)
    whole = create(client, **kw).choices[0]
    assert whole.message.tool_calls == [] and whole.finish_reason in ("stop", "length")
    calls, content, finish = reassemble(create(client, stream=True, **kw))
    assert calls == [] and content == whole.message.content and finish == whole.finish_reason


def test_auto_with_a_broken_call_is_content(client):
    broken = r'<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "Paris"\n</tool_call>'
    c = create(client, tools=TOOLS, extra_body={"guided_regex": broken}).choices[0]
    assert c.message.tool_calls == [] and c.finish_reason == "stop"
    assert c.message.content.startswith("<tool_call>")
