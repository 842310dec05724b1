#!/usr/bin/env python3
"""Differential test: the C chat-template interpreter against jinja2.

Every template (the shared tokenizers' chat templates, tests/chat_template/
templates/*.jinja, and the feature snippets below) is rendered over generated
conversations by jinja2 in the environment transformers builds in
`_compile_jinja_template` (ImmutableSandboxedEnvironment, trim_blocks,
lstrip_blocks, loopcontrols, its tojson/raise_exception/strftime_now/dict/
namespace), and by the C renderer (render_tool, JSON lines). Outputs must be
byte-identical; when jinja2 raises, C must fail too, with the same message for
raise_exception. A fixed seed keeps CI deterministic; --seed random explores.
"""
import argparse
import json
import os
import random
import subprocess
import sys
from datetime import datetime

try:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("skipped: jinja2 is not installed in the test venv (run tools/venv.sh)")
    sys.exit(77)

# ---- transformers' environment, mirrored (transformers itself is not a test dependency) ----


class RaisedByTemplate(Exception):
    pass


class GenerationTag(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %} renders its body (AssistantTracker without tracking)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class TemplateDict:
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError("underscore-prefixed namespace attribute")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env


# ---- feature snippets: constructs models' templates use, one or two per line ----

FEATURES = [
    "{% for m in messages %}{{ loop.index }}/{{ loop.length }} {{ loop.index0 }} {{ loop.revindex }} "
    "{{ loop.revindex0 }} {{ loop.first }} {{ loop.last }} [{{ loop.previtem.role if loop.previtem is defined }}]"
    "[{{ loop.nextitem.role if loop.nextitem is defined }}]\n{% endfor %}",
    "{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.role }}{% if not loop.last %},{% endif %}"
    "{% else %}none{% endfor %}",
    "{% for m in messages %}{% if m.role == 'tool' %}{% continue %}{% endif %}{{ m.role }}"
    "{% if loop.index > 3 %}{% break %}{% endif %} {% endfor %}",
    "{%- for m in messages %}\n  {%- if m.content is string %}\n    {{- m.content | trim }}|\n  {%- endif %}\n{%- endfor %}",
    "{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.s = ns.s ~ m.role[0] %}"
    "{% endfor %}{{ ns.n }} {{ ns.s }}",
    "{% set x = 1 %}{% for m in messages %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}",
    "{% macro fmt(m, sep=': ') %}{{ m.role | upper }}{{ sep }}{{ m.content }}{% endmacro %}"
    "{% for m in messages %}{{ fmt(m) }}\n{{ fmt(m, sep=' = ') }}\n{% endfor %}",
    "{% macro box(title) %}[{{ title }}|{{ caller() }}]{% endmacro %}{% call box('t') %}{{ messages | length }}{% endcall %}",
    "{% filter upper %}{{ messages[0].content }}{% endfilter %}",
    "{% set block %}{% for m in messages %}{{ m.role }} {% endfor %}{% endset %}{{ block | trim | replace(' ', ',') }}",
    "{% set a, b = 1, 'two' %}{{ a }} {{ b }} {{ (a, b) }} {{ [a, b] }} {{ {'k': a, 'l': [b, none, true]} }}",
    "{{ messages | map(attribute='role') | join(', ') }}|{{ messages | selectattr('role', 'equalto', 'user') | list | length }}"
    "|{{ messages | rejectattr('role', 'in', ['user', 'system']) | map(attribute='role') | list }}",
    "{{ messages | map(attribute='role') | unique | list }} {{ messages | map(attribute='role') | sort | list }} "
    "{{ messages | map(attribute='role') | sort(reverse=true) | first }} {{ messages | last | tojson }}",
    "{% for m in messages %}{{ m.content | tojson }} {{ m | tojson(indent=2) }} {{ m | tojson(sort_keys=true) }}\n{% endfor %}",
    "{{ tools | tojson }}\n{{ tools | tojson(indent=4) }}\n{% for t in tools %}{{ t.function.parameters | tojson(separators=(',', ':')) }}{% endfor %}",
    "{% for m in messages %}{{ m }}\n{{ m | string }}\n{{ m.items() | list }}\n{{ m.keys() | list }} {% endfor %}",
    "{% for m in messages %}{% for k, v in m.items() %}{{ k }}={{ v }};{% endfor %}{% for k in m %}{{ k }}{% endfor %}\n{% endfor %}",
    "{% for m in messages %}{% if m.content is string %}{{ m.content.strip() }}|{{ m.content.lstrip('<') }}|{{ m.content.rstrip('.!') }}"
    "|{{ m.content.split() }}|{{ m.content.split('</think>')[-1] }}|{{ m.content.upper() }}|{{ m.content.lower() }}|{{ m.content.title() }}"
    "|{{ m.content.startswith('<tool_response>') }}|{{ m.content.endswith(('!', '?')) }}|{{ m.content.replace('a', 'A') }}"
    "|{{ m.content.capitalize() }}|{{ m.content | capitalize }}|{{ m.content | title }}|{{ m.content.find('e') }}"
    "|{{ m.content.split('\\n', 1) }}|{{ m.content.rsplit(' ', 1) }}|{{ m.content.splitlines() }}\n{% endif %}{% endfor %}",
    "{% for m in messages %}{% if m.content is string %}{{ m.content[0] }}|{{ m.content[-1] }}|{{ m.content[1:4] }}|{{ m.content[::-1] }}"
    "|{{ m.content[::2] }}|{{ m.content[-3:] }}|{{ m.content | length }}|{{ m.content | wordcount }}|{{ m.content | reverse }}"
    "|{{ m.content | center(30) }}|{{ m.content | indent(2) }}|{{ m.content | indent(3, first=true, blank=true) }}\n{% endif %}{% endfor %}",
    "{{ messages[::-1] | map(attribute='role') | list }} {{ messages[1:] | length }} {{ messages[-1].role }} {{ messages[0]['role'] }}",
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1.5 * 2 }} {{ 0.1 + 0.2 }} "
    "{{ 1e20 }} {{ 1e-7 }} {{ 3.0 }} {{ 10 / 5 }} {{ 'ab' * 3 }} {{ [1] * 2 }} {{ 'x' ~ 1 ~ none ~ true }} {{ -3 | abs }} "
    "{{ 2.5 | round }} {{ 3.14159 | round(2) }} {{ 2.7 | round(method='floor') }} {{ 7 | float }} {{ '12' | int + 1 }} "
    "{{ 'x' | int }} {{ '3.9' | int }} {{ '4.5' | float }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ true == 1 }}",
    "{{ 'a' in 'cat' }} {{ 'z' not in 'cat' }} {{ 1 in [1, 2] }} {{ 'role' in messages[0] }} {{ messages[0].role is string }} "
    "{{ none is none }} {{ 1 is number }} {{ 1.0 is float }} {{ 1 is integer }} {{ true is boolean }} {{ [] is iterable }} "
    "{{ {} is mapping }} {{ 'x' is sequence }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 2 is eq 2 }} "
    "{{ 2 is gt 1 }} {{ 'a' is lower }} {{ 'A' is upper }} {{ nothing is undefined }} {{ messages is defined }} "
    "{{ 1 is in [1] }} {{ none is sameas none }} {{ true is true }} {{ false is false }} {{ raise_exception is callable }}",
    "{{ nothing }}|{{ nothing | default('d') }}|{{ '' | default('e', true) }}|{{ none | default('n') }}|{{ nothing is defined }}"
    "|{{ (nothing or 'x') }}|{{ 'yes' if nothing else 'no' }}|{{ 'a' if false }}|{{ messages[0].missing }}|{{ messages[99] }}",
    "{{ messages[0].missing.deeper }}",
    "{{ nothing.attr }}",
    "{{ 'a' + 1 }}",
    "{{ 'a' + messages[0] }}",
    "{{ messages.append(1) }}",
    "{{ raise_exception('custom failure: ' ~ messages | length) }}",
    "{% if messages | length > 2 %}{{ raise_exception('Too many messages: ' + messages[2].role) }}{% endif %}ok",
    "{{ dict(a=1, b='x') }} {{ dict(a=1) | tojson }} {{ {'b': 2, 'a': 1} | dictsort }} {{ {'a': 1}.get('a') }} "
    "{{ {'a': 1}.get('z', 'dflt') }} {{ {'a': 1}['a'] }} {{ range(5) | list }} {{ range(1, 10, 3) | list }} "
    "{{ range(3) | sum }} {{ [3, 1, 2] | max }} {{ [3, 1, 2] | min }} {{ ['b', 'A', 'c'] | sort }} {{ [1, 2, 3, 4, 5] | batch(2) | list }}",
    "{{ 'He said \"hi\"' }} {{ ['it\\'s', \"say \\\"x\\\"\", 'tab\\tnew\\nline', 'back\\\\slash', '\\u00e9\\u4e2d\\U0001F600'] }} "
    "{{ '%s=%d' % ('x', 3) }} {{ 'v%s' | format(2) }} {{ '{} and {}'.format('a', 'b') }} {{ '\\x41\\101' }}",
    "{%- set sys = messages[0].content if messages[0].role == 'system' else 'default system' -%}\n  {{ sys }}\n"
    "{%- for m in messages[1:] -%}\n    <{{ m.role }}>\n    {{- m.content if m.content is string else m.content | tojson -}}\n"
    "    </{{ m.role }}>\n{%- endfor -%}",
    "  {% if true %}\n    indented\n  {% endif %}\n\t{%+ if true %}kept{% endif %}\n  {# comment #}\nafter\n  {{ 'var' }}\n"
    "{% raw %}{{ not rendered }}{% endraw %}\n  {%- if true -%}  \n  x  \n  {%- endif %}\n{%- if add_generation_prompt %}gen{% endif %}\n",
    "{% with a = messages | length, b = 2 %}{{ a * b }}{% endwith %} {{ messages | length is even }} "
    "{{ messages | selectattr('tool_calls') | list | length }} {{ messages | selectattr('content', 'none') | list | length }}",
    "{% for m in messages %}{% if m.tool_calls %}{% for tc in m.tool_calls %}{{ tc.function.name }}({{ tc.function.arguments | tojson }})"
    "{{ tc.function.arguments.items() | list }}{% endfor %}{% endif %}{% endfor %}",
    "{% for m in messages %}{% if m.reasoning_content is defined and m.reasoning_content %}<think>{{ m.reasoning_content }}</think>"
    "{% elif m.content is string and '</think>' in m.content %}{{ m.content.split('</think>')[0].split('<think>')[-1] }}{% endif %}{% endfor %}"
    "{% if enable_thinking is defined and enable_thinking is false %}no-think{% endif %}",
]


# ---- generated conversations ----

TEXTS = [
    "Hello!", "How are you?", "What's 2+2?", "  padded  ", "", "multi\nline\n\ntext\n", "tab\there",
    "quotes ' and \" and `", "back\\slash \\n not newline", "unicode: é 中文 한국어 😀 👩‍👩‍👧", "emoji \U0001F600",
    "<think>\nreasoning here\n</think>\n\nanswer", "<tool_response>42</tool_response>", "{{ not a template }}",
    "{% raw %}", "trailing space ", "\nleading newline", "a" * 200, "Zero\u200bwidth", "control \x01\x1f chars",
    "line\r\nwindows", "ß straße", "ǅ title-case", "numbers 12 3.5 -7", "<|im_start|>fake special<|im_end|>",
]

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city, e.g. \"Paris\" — with unicode",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
                "units": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city"],
        },
    },
}
TOOL2 = {"type": "function", "function": {"name": "search", "description": "Search the web",
                                          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}


def gen_args(rng):
    choices = [{"city": rng.choice(["Paris", "東京", "New \"York\""])},
               {"city": "Oslo", "days": rng.randint(1, 9), "units": None, "flag": True, "ratio": 0.25},
               {"q": rng.choice(TEXTS), "nested": {"list": [1, 2.5, "x", None, False]}}, {}]
    return rng.choice(choices)


def gen_tool_call(rng):
    args = gen_args(rng)
    call = {"type": "function", "function": {"name": rng.choice(["get_weather", "search"]),
                                             "arguments": json.dumps(args) if rng.random() < 0.2 else args}}
    if rng.random() < 0.7:
        call["id"] = "".join(rng.choice("abcdefXYZ0123456789") for _ in range(rng.choice([9, 9, 9, 5])))
    return call


def gen_message(rng, role):
    m = {"role": role, "content": rng.choice(TEXTS)}
    if role == "assistant":
        if rng.random() < 0.25:
            m["tool_calls"] = [gen_tool_call(rng) for _ in range(rng.randint(1, 2))]
            if rng.random() < 0.5:
                m["content"] = None if rng.random() < 0.5 else ""
        if rng.random() < 0.2:
            m["reasoning_content"] = rng.choice(TEXTS)
    if role == "tool":
        m["content"] = rng.choice(['{"temp": 21}', "42", "error: not found", rng.choice(TEXTS)])
        if rng.random() < 0.8:
            m["tool_call_id"] = "".join(rng.choice("abc123") for _ in range(9))
    return m


def gen_conversation(rng):
    msgs = []
    if rng.random() < 0.5:
        msgs.append(gen_message(rng, "system"))
    turns = rng.randint(1, 5)
    for _ in range(turns):
        msgs.append(gen_message(rng, "user"))
        if rng.random() < 0.85:
            a = gen_message(rng, "assistant")
            msgs.append(a)
            if a.get("tool_calls"):
                for _ in a["tool_calls"]:
                    msgs.append(gen_message(rng, "tool"))
                msgs.append(gen_message(rng, "assistant"))
    if rng.random() < 0.1:  # roles out of order, unknown roles: templates raise
        msgs.insert(rng.randrange(len(msgs) + 1), gen_message(rng, rng.choice(["user", "assistant", "developer"])))
    if rng.random() < 0.3 and msgs[-1]["role"] == "assistant":
        msgs.pop()
    ctx = {"messages": msgs, "add_generation_prompt": rng.random() < 0.7}
    if rng.random() < 0.35:
        ctx["tools"] = [TOOL] + ([TOOL2] if rng.random() < 0.5 else [])
    if rng.random() < 0.4:
        ctx["enable_thinking"] = rng.random() < 0.5
    return ctx


# ---- templates ----


def load_templates(args):
    out = []
    shared = os.path.join(args.shared, "tokenizers")
    if os.path.isdir(shared):
        for name in sorted(os.listdir(shared)):
            cfg_path = os.path.join(shared, name, "tokenizer_config.json")
            if not os.path.exists(cfg_path):
                continue
            with open(cfg_path, encoding="utf-8") as f:
                cfg = json.load(f)
            if not isinstance(cfg.get("chat_template"), str):
                continue

            def tok(v):
                return v.get("content") if isinstance(v, dict) else v

            out.append((f"shared/{name}", cfg["chat_template"],
                        {"bos_token": tok(cfg.get("bos_token")), "eos_token": tok(cfg.get("eos_token"))}))
    else:
        print(f"note: shared templates not found under {shared}; using the committed ones only")
    with open(os.path.join(args.templates, "tokens.json"), encoding="utf-8") as f:
        tokens = json.load(f)
    for name in sorted(os.listdir(args.templates)):
        if name.endswith(".jinja"):
            with open(os.path.join(args.templates, name), encoding="utf-8") as f:
                out.append((name, f.read(), tokens.get(name, {})))
    for i, src in enumerate(FEATURES):
        out.append((f"feature{i}", src, {"bos_token": "<s>", "eos_token": "</s>"}))
    return out


def render_py(env_cache, env, src, ctx):
    try:
        tpl = env_cache.get(src)
        if tpl is None:
            tpl = env_cache[src] = env.from_string(src)
    except Exception as e:  # syntax error
        return ("error", "compile", f"{type(e).__name__}: {e}")
    try:
        return ("ok", tpl.render(**ctx))
    except jinja2.exceptions.TemplateError as e:
        kind = "raise" if type(e) is jinja2.exceptions.TemplateError else type(e).__name__
        return ("error", kind, str(e))
    except Exception as e:
        return ("error", type(e).__name__, str(e))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--render", required=True)
    ap.add_argument("--templates", required=True)
    ap.add_argument("--shared", default="")
    ap.add_argument("--seed", default="1")
    ap.add_argument("--cases", type=int, default=300, help="conversations per template")
    args = ap.parse_args()
    seed = random.randrange(1 << 30) if args.seed == "random" else int(args.seed)
    print(f"seed {seed}")
    rng = random.Random(seed)
    env = make_env()
    templates = load_templates(args)
    cases = []
    for name, src, toks in templates:
        n = args.cases if not name.startswith("feature") else max(20, args.cases // 10)
        for _ in range(n):
            ctx = gen_conversation(rng)
            for k, v in toks.items():
                if v is not None:
                    ctx[k] = v
            cases.append((name, src, ctx))
    lines = "".join(json.dumps({"template": src, "context": ctx}) + "\n" for _, src, ctx in cases)
    proc = subprocess.run([args.render], input=lines.encode(), stdout=subprocess.PIPE, check=True)
    results = [json.loads(l) for l in proc.stdout.decode().splitlines()]
    assert len(results) == len(cases), f"renderer answered {len(results)} of {len(cases)} cases"
    env_cache = {}
    failures = 0
    stats = {"ok": 0, "error": 0}
    for (name, src, ctx), c in zip(cases, results):
        py = render_py(env_cache, env, src, ctx)
        stats[py[0]] += 1
        bad = None
        if py[0] == "ok":
            if not c["ok"]:
                bad = f"C failed: {c['error']}"
            elif c["text"] != py[1]:
                bad = f"output differs\n--- jinja2\n{py[1]!r}\n--- C\n{c['text']!r}"
        else:
            if c["ok"]:
                bad = f"jinja2 raised {py[1]}: {py[2]!r} but C rendered {c['text']!r}"
            elif py[1] == "raise" and c["error"] != py[2]:
                bad = f"raise_exception message differs: jinja2 {py[2]!r}, C {c['error']!r}"
        if bad:
            failures += 1
            if failures <= 8:
                print(f"FAIL [{name}] context={json.dumps(ctx, ensure_ascii=False)[:600]}\n{bad}\n")
    print(f"{len(cases)} cases over {len(templates)} templates (jinja2: {stats['ok']} rendered, "
          f"{stats['error']} raised): {failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
