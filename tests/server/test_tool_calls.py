"""Tool calls beyond the basics, end to end on the default model
(SmolLM2-135M-Instruct) through the official OpenAI SDK:
parallel_tool_calls false (at most one call: "required" held to one by its
grammar, a named function one anyway, "auto" returning the first call the
parser reads, streamed deltas reassembling to the same call), its type
checked, and the pythonic parser (--tool-call-parser pythonic: the output
a Python list of calls, arguments returned as JSON). SmolLM2 was never
taught either format, so a regex holds it to writing the calls."""
import json
import os
import re

import jsonschema
import openai
import pytest

from serverlib import Server, curl
from test_structured_outputs import ASK, SCHEMAS, TOOLS, reassemble

MODEL = os.environ["SHARDLM_MODEL"]

TWO_HERMES_CALLS = (r'<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "(Paris|Oslo)", "unit": "celsius"\}\}'
                    r'\n</tool_call>\n<tool_call>\n\{"name": "get_time", "arguments": \{"zone": "(CET|UTC)"\}\}\n'
                    r'</tool_call>')
TWO_PYTHONIC_CALLS = (r'\[get_weather\(city="(Paris|Oslo)", unit="(celsius|fahrenheit)"\), '
                      r"get_time\(zone='(CET|UTC)'\)\]")


def start(parser):
    return Server(MODEL, "--max-model-len", "1024", "--enable-auto-tool-choice", "--tool-call-parser", parser)


@pytest.fixture(scope="module")
def hermes():
    s = start("hermes")
    yield s
    assert s.stop() == 0, "".join(s.log[-30:])


@pytest.fixture(scope="module")
def pythonic():
    s = start("pythonic")
    yield s
    assert s.stop() == 0, "".join(s.log[-30:])


def client_of(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300)


def create(server, **kw):
    return client_of(server).chat.completions.create(
        model="SmolLM2-135M-Instruct", **{"messages": ASK, "max_tokens": 120, "temperature": 0, **kw})


def check_call(call):
    assert call.type == "function" and re.fullmatch(r"chatcmpl-tool-[0-9a-f]{32}", call.id)
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def calls_of(choice):
    return [(c.function.name, c.function.arguments) for c in choice.message.tool_calls]


def streamed(server, **kw):
    calls, content, finish = reassemble(create(server, stream=True, **kw))
    return [(c["name"], c["arguments"]) for c in calls], content, finish


# ---- parallel_tool_calls ---------------------------------------------------------------------

def test_required_not_parallel_is_one_call(hermes):
    """Greedy, this question gets three calls; not parallel, the grammar ends the array after one."""
    kw = dict(messages=[{"role": "user", "content": "Get the weather in Paris, London and Berlin."}], tools=TOOLS,
              tool_choice="required", max_tokens=300)
    assert len(create(hermes, **kw).choices[0].message.tool_calls) > 1
    kw["parallel_tool_calls"] = False
    r = create(hermes, n=8, temperature=1.0, seed=5, **kw)
    for c in r.choices:
        assert c.finish_reason == "tool_calls" and c.message.content is None
        assert len(c.message.tool_calls) == 1
        check_call(c.message.tool_calls[0])
    whole = create(hermes, **kw).choices[0]
    assert len(whole.message.tool_calls) == 1
    assert streamed(hermes, **kw) == (calls_of(whole), "", "tool_calls")


def test_named_not_parallel_is_one_call(hermes):
    r = create(hermes, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}},
               parallel_tool_calls=False)
    c = r.choices[0]
    assert [call.function.name for call in c.message.tool_calls] == ["get_time"] and c.finish_reason == "stop"
    check_call(c.message.tool_calls[0])


@pytest.mark.parametrize("server_name,regex", [("hermes", TWO_HERMES_CALLS), ("pythonic", TWO_PYTHONIC_CALLS)])
def test_auto_not_parallel_returns_the_first_call(request, server_name, regex):
    server = request.getfixturevalue(server_name)
    kw = dict(tools=TOOLS, tool_choice="auto", max_tokens=250, extra_body={"guided_regex": regex})
    both = create(server, **kw).choices[0]
    assert [name for name, _ in calls_of(both)] == ["get_weather", "get_time"] and both.message.content is None
    one = create(server, parallel_tool_calls=False, **kw).choices[0]
    assert calls_of(one) == calls_of(both)[:1] and one.finish_reason == "tool_calls"
    assert one.message.content is None
    check_call(one.message.tool_calls[0])
    assert streamed(server, parallel_tool_calls=False, **kw) == (calls_of(one), "", "tool_calls")
    assert streamed(server, parallel_tool_calls=True, **kw) == (calls_of(both), "", "tool_calls")


@pytest.mark.parametrize("value", ["no", 0, 1, [], {}])
def test_parallel_tool_calls_must_be_a_boolean(hermes, value):
    code, text = curl(hermes, "/v1/chat/completions", {"messages": ASK, "tools": TOOLS, "parallel_tool_calls": value})
    assert code == 400, text
    e = json.loads(text)["error"]
    assert e["param"] == "parallel_tool_calls" and "parallel_tool_calls: Input should be a valid boolean" in e["message"]


def test_parallel_tool_calls_null_or_without_tools_is_fine(hermes):
    code, text = curl(hermes, "/v1/chat/completions", {"messages": ASK, "parallel_tool_calls": None, "max_tokens": 2})
    assert code == 200, text
    code, text = curl(hermes, "/v1/chat/completions", {"messages": ASK, "parallel_tool_calls": False, "max_tokens": 2})
    assert code == 200, text


# ---- the pythonic parser ----------------------------------------------------------------------

def test_pythonic_calls(pythonic):
    c = create(pythonic, tools=TOOLS, extra_body={"guided_regex": TWO_PYTHONIC_CALLS}).choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    assert [call.function.name for call in c.message.tool_calls] == ["get_weather", "get_time"]
    for call in c.message.tool_calls:
        check_call(call)
    weather = json.loads(c.message.tool_calls[0].function.arguments)
    assert c.message.tool_calls[0].function.arguments == json.dumps(weather)  # json.dumps's spacing, as vLLM
    assert streamed(pythonic, tools=TOOLS, extra_body={"guided_regex": TWO_PYTHONIC_CALLS}) == \
           (calls_of(c), "", "tool_calls")


def test_pythonic_literals(pythonic):
    regex = (r"\[get_weather\(city='It\\'s \"Paris\"\\n', unit=\"celsius\", days=\[1, -2\.5, True, None\], "
             r"extra=\{'a': \{\"b\": False\}\}\)\]")
    c = create(pythonic, tools=TOOLS, extra_body={"guided_regex": regex}).choices[0]
    assert [call.function.name for call in c.message.tool_calls] == ["get_weather"]
    assert json.loads(c.message.tool_calls[0].function.arguments) == {
        "city": "It's \"Paris\"\n", "unit": "celsius", "days": [1, -2.5, True, None], "extra": {"a": {"b": False}}}
    assert streamed(pythonic, tools=TOOLS, extra_body={"guided_regex": regex}) == (calls_of(c), "", "tool_calls")


@pytest.mark.parametrize("regex,call_sent", [(r"Hello there\.", False), (r"\[get_weather\(Paris\)\]", False),
                                              (r"\[get_weather\(city=1\)\] ok", True)])
def test_pythonic_other_text_is_content(pythonic, regex, call_sent):
    kw = dict(tools=TOOLS, extra_body={"guided_regex": regex})
    c = create(pythonic, **kw).choices[0]
    assert c.message.tool_calls == [] and c.finish_reason == "stop"
    assert re.fullmatch(regex, c.message.content)
    if not call_sent:  # a call that breaks after it was sent stays sent, as with every parser
        assert streamed(pythonic, **kw) == ([], c.message.content, "stop")
