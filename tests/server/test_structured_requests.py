"""Structured output and tool calling, the request side, on the default
model (SmolLM2-135M-Instruct): every malformed shape of response_format,
structured_outputs, guided_*, llama.cpp's json_schema / grammar, tools and
tool_choice is a 400 naming the field (vLLM's messages where vLLM has one),
two constraints in one request are a 400 naming both, the tool-call server
flags are checked before the model loads, and tool conversations reach the
chat template as transformers' templates expect them (content null as "",
arguments as objects), checked against jinja2. None of this needs the
engine to constrain anything; test_structured_outputs.py judges outputs."""
import json
import os
import subprocess

import openai
import pytest

from serverlib import Server, curl

MODEL = os.environ["SHARDLM_MODEL"]
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOLS = [WEATHER]


@pytest.fixture(scope="module")
def srv():
    s = Server(MODEL, "--max-model-len", "512")
    yield s
    assert s.stop() == 0, "".join(s.log[-30:])


def post(srv, path, body):
    code, text = curl(srv, path, body)
    return code, json.loads(text)


def chat(**fields):
    return ("/v1/chat/completions", {"messages": MSG, "max_tokens": 4, **fields})


def completion(**fields):
    return ("/v1/completions", {"prompt": "x", "max_tokens": 4, **fields})


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}
UNSUPPORTED = {"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}

# (request, param, fragment of the message)
BAD = [
    (chat(response_format="json"), "response_format", "response_format: Input should be a valid dictionary"),
    (chat(response_format={}), "response_format", "response_format.type: Field required"),
    (chat(response_format={"type": "xml"}), "response_format",
     'response_format.type: Input should be "text", "json_object" or "json_schema"'),
    (chat(response_format={"type": "json_schema"}), "response_format", "response_format.json_schema: Field required"),
    (chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}), "response_format",
     "response_format.json_schema.schema: Field required"),
    (chat(response_format={"type": "json_schema", "json_schema": {"name": 1, "schema": SCHEMA}}), "response_format",
     "response_format.json_schema.name: Input should be a valid string"),
    (chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": "yes"}}),
     "response_format", "response_format.json_schema.strict: Input should be a valid boolean"),
    (chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": "{not json"}}),
     "response_format", "response_format.json_schema.schema: Input should be a JSON schema"),
    (chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": UNSUPPORTED}}),
     "response_format", "response_format.json_schema.schema: json schema: the keyword 'oneOf'"),
    (completion(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}),
     "response_format", "Input should be a JSON schema"),
    (chat(guided_json=5), "guided_json", "guided_json: Input should be a JSON schema"),
    (chat(guided_json="[1, 2]"), "guided_json", "guided_json: Input should be a JSON schema"),
    (completion(guided_json=UNSUPPORTED), "guided_json", "guided_json: json schema: the keyword 'oneOf'"),
    (chat(guided_regex=5), "guided_regex", "guided_regex: Input should be a valid string"),
    (chat(guided_regex="(ab"), "guided_regex", "guided_regex: "),
    (chat(guided_choice=[]), "guided_choice", "guided_choice: Input should be a non-empty list of strings"),
    (chat(guided_choice="yes"), "guided_choice", "guided_choice: Input should be a non-empty list of strings"),
    (completion(guided_choice=["a", 1]), "guided_choice", "guided_choice[1]: Input should be a valid string"),
    (chat(guided_grammar=""), "guided_grammar", "guided_grammar: Input should be a grammar in GBNF"),
    (chat(grammar=["root ::= x"]), "grammar", "grammar: Input should be a grammar in GBNF"),
    (completion(json_schema="nope"), "json_schema", "json_schema: Input should be a JSON schema"),
    (chat(structured_outputs=[]), "structured_outputs", "structured_outputs: Input should be a valid dictionary"),
    (chat(structured_outputs={"json_object": "yes"}), "structured_outputs",
     "structured_outputs.json_object: Input should be a valid boolean"),
    (chat(structured_outputs={"structural_tag": "{}"}), "structured_outputs",
     "structured_outputs.structural_tag is not supported"),
    (chat(structured_outputs={"regex": 3}), "structured_outputs", "structured_outputs.regex: Input should be a valid"),
    (chat(structured_outputs={"choice": [None]}), "structured_outputs", "structured_outputs.choice[0]"),
    # two constraints
    (chat(structured_outputs={"regex": "a+", "choice": ["a"]}), "structured_outputs",
     "`structured_outputs.regex` and `structured_outputs.choice` both constrain the output"),
    (chat(response_format={"type": "json_object"}, guided_choice=["a", "b"]), "guided_choice",
     "`response_format` and `guided_choice` both constrain the output"),
    (completion(guided_regex="a+", response_format={"type": "json_object"}), "guided_regex",
     "`response_format` and `guided_regex` both constrain the output"),
    (completion(json_schema=SCHEMA, grammar="root ::= \"a\""), "grammar",
     "`json_schema` and `grammar` both constrain the output"),
    (chat(structured_outputs={"json_object": True}, guided_json=SCHEMA), "guided_json",
     "`structured_outputs.json_object` and `guided_json` both constrain"),
    (chat(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "tool_choice",
     "`response_format` and `tool_choice` both constrain the output"),
    # tools
    (chat(tools="get_weather"), "tools", "tools: Input should be a valid list"),
    (chat(tools=[5], tool_choice="none"), "tools", "tools[0]: Input should be a valid dictionary"),
    (chat(tools=[{"type": "function"}], tool_choice="none"), "tools", "tools[0].function: Field required"),
    (chat(tools=[{"type": "function", "function": {"parameters": {}}}], tool_choice="none"), "tools",
     "tools[0].function.name: Field required"),
    (chat(tools=[{"type": "code", "function": {"name": "f"}}], tool_choice="none"), "tools",
     "tools[0].type: Input should be 'function'"),
    (chat(tools=[WEATHER, {"function": {"name": "f", "parameters": [1]}}], tool_choice="none"), "tools",
     "tools[1].function.parameters: Input should be a valid dictionary"),
    # tool_choice, with vLLM's messages
    (chat(tool_choice="required"), "tool_choice", "When using `tool_choice`, `tools` must be set."),
    (chat(tool_choice={"type": "function", "function": {"name": "get_weather"}}), "tool_choice",
     "When using `tool_choice`, `tools` must be set."),
    (chat(tools=TOOLS, tool_choice="sometimes"), "tool_choice",
     'Invalid value for `tool_choice`: sometimes! Only named tools, "none", "auto" or "required" are supported.'),
    (chat(tools=TOOLS, tool_choice=5), "tool_choice", "Invalid value for `tool_choice`: 5!"),
    (chat(tools=TOOLS, tool_choice={"type": "function"}), "tool_choice",
     "Invalid value for `function` in `tool_choice`! Correct usage:"),
    (chat(tools=TOOLS, tool_choice={"type": "function", "function": {}}), "tool_choice",
     "Expected field `name` in `function` in `tool_choice`!"),
    (chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": ""}}), "tool_choice",
     "Invalid `name` in `function` in `tool_choice`!"),
    (chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice",
     "The tool specified in `tool_choice` does not match any of the specified `tools`"),
    (chat(tools=TOOLS, tool_choice="none", parallel_tool_calls="false"), "parallel_tool_calls",
     "parallel_tool_calls: Input should be a valid boolean"),
    (chat(tools=TOOLS, tool_choice="auto"), "tool_choice",
     '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'),
    (chat(tools=TOOLS), "tool_choice", '"auto" tool choice requires --enable-auto-tool-choice'),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": UNSUPPORTED}}],
          tool_choice={"type": "function", "function": {"name": "f"}}), "tools",
     "tools[0].function.parameters: json schema: the keyword 'oneOf'"),
    (chat(tools=[WEATHER, {"type": "function", "function": {"name": "f", "parameters": UNSUPPORTED}}],
          tool_choice="required"), "tools", "tools[1].function.parameters: json schema"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "$defs": {"D": {"type": "string"}}, "type": "object", "properties": {"d": {"$ref": "#/$defs/D"}}}}},
                 {"type": "function", "function": {"name": "g", "parameters": {
                     "$defs": {"D": {"type": "integer"}}, "type": "object", "properties": {"d": {"$ref": "#/$defs/D"}}}}}],
          tool_choice="required"), "tools", "Tool definition 'D' has multiple schemas, which is not supported."),
]


@pytest.mark.parametrize("req,param,fragment", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_bad_request(srv, req, param, fragment):
    path, body = req
    code, r = post(srv, path, body)
    assert code == 400, (code, r)
    e = r["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["code"] == 400 and e["type"] == "BadRequestError"
    assert fragment in e["message"], e["message"]
    assert e["param"] == param, e


# Requests that are fine: they generate (their outputs are judged in test_structured_outputs.py).
GOOD = [
    chat(response_format={"type": "text"}),
    chat(response_format=None, guided_json=None, structured_outputs=None),
    chat(tools=TOOLS, tool_choice="none"),
    chat(tools=[], tool_choice="required"),           # OpenAI's rule: no tools -> none
    chat(tools=TOOLS, tool_choice="required", parallel_tool_calls=False),
    chat(tools=[]),
    chat(tools=None, tool_choice=None),
    chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": json.dumps(SCHEMA)}}),
    chat(structured_outputs={"choice": ["yes", "no"], "disable_any_whitespace": True}, guided_decoding_backend="x"),
    completion(guided_json=SCHEMA, guided_whitespace_pattern=" "),
    completion(tools=TOOLS, tool_choice="auto"),      # not a chat field: ignored, as vLLM ignores it
]


@pytest.mark.parametrize("req", GOOD, ids=[f"{i}" for i in range(len(GOOD))])
def test_good_request(srv, req):
    path, body = req
    code, r = post(srv, path, body)
    assert code == 200, r
    if path == "/v1/chat/completions" and body.get("tool_choice") in ("none", "required", None):
        m = r["choices"][0]["message"]
        assert isinstance(m["content"], str) and m["tool_calls"] == []


def test_sdk_errors(srv):
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="tool choice requires --enable-auto-tool-choice"):
        client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=MSG, tools=TOOLS, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="both constrain the output"):
        client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=MSG, max_tokens=2,
                                       response_format={"type": "json_object"},
                                       extra_body={"guided_regex": "[a-z]+"})


# ---- server flags --------------------------------------------------------------------------

@pytest.mark.parametrize("args,fragment", [
    (["--enable-auto-tool-choice"], "--enable-auto-tool-choice requires --tool-call-parser"),
    (["--tool-call-parser", "xml"], '--tool-call-parser: unknown parser "xml"'),
    (["--enable-auto-tool-choice", "--tool-call-parser", "hermes2"], "hermes, llama3_json, mistral or pythonic"),
])
def test_tool_flags_checked_before_loading(args, fragment):
    r = subprocess.run([os.environ["SHARDLM_BIN"], "serve", MODEL, "--port", "0", *args], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert fragment in r.stderr and "weights" not in r.stderr, r.stderr


def test_tool_flags_in_help():
    r = subprocess.run([os.environ["SHARDLM_BIN"], "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert "--enable-auto-tool-choice" in r.stdout and "--tool-call-parser" in r.stdout


# ---- tool conversations reach the template ------------------------------------------------

def render_like_transformers(template, **ctx):
    """jinja2 configured as transformers' apply_chat_template configures it."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(**ctx)


def rendered_text(srv, body):
    code, tok = post(srv, "/tokenize", {**body, "add_special_tokens": False})
    assert code == 200, tok
    code, det = post(srv, "/detokenize", {"tokens": tok["tokens"]})
    return det["prompt"]


ARGS = {"city": "Paris", "days": [1, 2], "unit": "°C"}
CONVERSATION = [
    {"role": "system", "content": "You call tools."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "chatcmpl-tool-1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(ARGS)}},
        {"id": "chatcmpl-tool-2", "type": "function", "function": {"name": "now", "arguments": ""}}]},
    {"role": "tool", "tool_call_id": "chatcmpl-tool-1", "content": "18 degrees"},
    {"role": "tool", "tool_call_id": "chatcmpl-tool-2", "content": "noon"},
]


def as_vllm_gives_templates(messages):
    """vLLM's conversion: content None -> "", arguments JSON strings -> objects ("" -> {})."""
    out = json.loads(json.dumps(messages))
    for m in out:
        if m.get("content") is None:
            m["content"] = ""
        for call in m.get("tool_calls") or []:
            a = call["function"]["arguments"]
            call["function"]["arguments"] = json.loads(a) if a else {}
    return out


# What Llama 3.1's template does with tools and calls, cut down: arguments through tojson, tool results as JSON.
LLAMA31_LIKE = (
    "{{ bos_token }}{% if tools %}{% for t in tools %}{{ t | tojson(indent=4) }}\n\n{% endfor %}{% endif %}"
    "{% for message in messages %}"
    "{% if message.tool_calls %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{% for tool_call in message.tool_calls %}{% set tool_call = tool_call.function %}"
    "{{ '{\"name\": \"' + tool_call.name + '\", \"parameters\": ' }}{{ tool_call.arguments | tojson }}{{ '}' }}"
    "{% endfor %}<|eom_id|>"
    "{% elif message.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>\n\n"
    "{% if message.content is mapping or message.content is iterable %}{{ message.content | tojson }}"
    "{% else %}{{ message.content }}{% endif %}<|eot_id|>"
    "{% else %}<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n{{ message.content | trim }}<|eot_id|>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def smollm2_template():
    return json.load(open(os.path.join(MODEL, "tokenizer_config.json")))["chat_template"]


def test_tool_conversation_default_template(srv):
    """SmolLM2's template concatenates content: a call-only assistant message renders with "" content."""
    want = render_like_transformers(smollm2_template(), messages=as_vllm_gives_templates(CONVERSATION), tools=TOOLS,
                                    add_generation_prompt=True, bos_token="<|im_start|>", eos_token="<|im_end|>")
    assert rendered_text(srv, {"messages": CONVERSATION, "tools": TOOLS}) == want
    code, r = post(srv, "/v1/chat/completions", {"messages": CONVERSATION, "tools": TOOLS, "tool_choice": "none",
                                                 "max_tokens": 3})
    assert code == 200, r


def test_tool_conversation_llama31_like_template(srv):
    want = render_like_transformers(LLAMA31_LIKE, messages=as_vllm_gives_templates(CONVERSATION), tools=TOOLS,
                                    add_generation_prompt=True, bos_token="<|im_start|>", eos_token="<|im_end|>")
    assert '"parameters": {"city": "Paris", "days": [1, 2], "unit": "°C"}' in want
    got = rendered_text(srv, {"messages": CONVERSATION, "tools": TOOLS, "chat_template": LLAMA31_LIKE})
    assert got == want


def test_tool_conversation_qwen_template(srv):
    shared = os.environ.get("SHARDLM_SHARED", "")
    path = os.path.join(shared, "tokenizers", "qwen3", "tokenizer_config.json")
    if not os.path.exists(path):
        pytest.skip("no shared Qwen3 tokenizer_config.json")
    template = json.load(open(path))["chat_template"]
    want = render_like_transformers(template, messages=as_vllm_gives_templates(CONVERSATION), tools=TOOLS,
                                    add_generation_prompt=True, bos_token="<|im_start|>", eos_token="<|im_end|>")
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"' in want
    assert rendered_text(srv, {"messages": CONVERSATION, "tools": TOOLS, "chat_template": template}) == want
