"""cross_check_jsonschema.py -- random outputs of our JSON-schema grammars
must validate with the Python `jsonschema` package.

For every schema in --schemas, grammar_driver prints --count random walks
through the grammar's matcher that ended accepting (one JSON string per
line); each must parse as JSON and validate against the schema (Draft
2020-12, with the format checker for date, date-time, email, uuid where
jsonschema can check them).

Then the bounds, the other way round: in each sample, every string under
minLength / maxLength and every array under minItems / maxItems (reached
through properties and items alone, with no format, pattern, enum, const or
$ref on the way) is set to min - 1, min, max and max + 1 characters (1- to
4-byte characters and a newline) or items (copies of its first); the
grammar (grammar_driver --check) must accept each such text exactly when
jsonschema validates it. Exit 1 on the first schema with a failure.
"""
import argparse
import json
import pathlib
import subprocess
import sys

import jsonschema

CHARS = "a\u00e9\u4e2d\U0001F600\nb"  # 1, 2, 3, 4 bytes and an escape


def node_at(schema, path):
    """The schema node of path (keys and indexes), through properties and items only; None elsewhere."""
    node = schema
    for step in path:
        if not isinstance(node, dict) or any(k in node for k in ("$ref", "anyOf", "allOf", "enum", "const")):
            return None
        node = node.get("properties", {}).get(step) if isinstance(step, str) else node.get("items")
    if not isinstance(node, dict) or any(k in node for k in ("$ref", "anyOf", "allOf", "enum", "const", "format", "pattern")):
        return None
    return node


def set_at(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = set_at(value[path[0]], path[1:], new)
    return copy


def bound_probes(schema, instance):
    """Texts of instance with one bounded string or array set to each count around its bounds."""
    probes = []

    def walk(value, path):
        node = node_at(schema, path)
        if node is not None and isinstance(value, str) and ("minLength" in node or "maxLength" in node):
            lo, hi = node.get("minLength", 0), node.get("maxLength")
            for k in sorted({lo - 1, lo, lo + 1} | ({hi - 1, hi, hi + 1} if hi is not None else set())):
                if k >= 0:
                    probes.append(set_at(instance, path, "".join(CHARS[i % len(CHARS)] for i in range(k))))
        if node is not None and isinstance(value, list) and value and ("minItems" in node or "maxItems" in node):
            lo, hi = node.get("minItems", 0), node.get("maxItems")
            for k in sorted({lo - 1, lo, lo + 1} | ({hi - 1, hi, hi + 1} if hi is not None else set())):
                if k >= 0:
                    probes.append(set_at(instance, path, [value[0]] * k))
        if isinstance(value, dict):
            for key, v in value.items():
                walk(v, path + [key])
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, path + [i])

    walk(instance, [])
    texts = [json.dumps(p, ensure_ascii=False) for p in probes]
    # not a sample's lone \uD8xx escapes, nor its numbers past float range (written back as Infinity)
    return [t for t in texts if not any(0xD800 <= ord(c) <= 0xDFFF for c in t) and "Infinity" not in t]


def check_bounds(driver, path, schema, validator, samples):
    """Returns (probes, mismatches) of the bound probes of the samples."""
    texts = [t for s in samples for t in bound_probes(schema, json.loads(s))]
    if not texts:
        return 0, 0
    out = subprocess.run([driver, str(path), "--check"], input="".join(json.dumps(t) + "\n" for t in texts),
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        print(f"FAIL {path.name}: driver --check exit {out.returncode}: {out.stderr.strip()}")
        return len(texts), len(texts)
    bad = 0
    for text, ours in zip(texts, out.stdout.split()):
        valid = validator.is_valid(json.loads(text))
        if (ours == "1") != valid:
            if bad < 3:
                print(f"FAIL {path.name}: {text!r}: the grammar {'accepts' if ours == '1' else 'refuses'} it, "
                      f"jsonschema {'validates' if valid else 'refuses'} it")
            bad += 1
    return len(texts), bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--schemas", required=True)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", default="1")
    args = ap.parse_args()
    failed = False
    for path in sorted(pathlib.Path(args.schemas).glob("*.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        out = subprocess.run([args.driver, str(path), str(args.count), str(args.seed)],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            print(f"FAIL {path.name}: driver exit {out.returncode}: {out.stderr.strip()}")
            failed = True
            continue
        samples = [json.loads(line) for line in out.stdout.split("\n") if line]  # not splitlines: U+2028 may be in outputs
        bad = 0
        for text in samples:
            try:
                validator.validate(json.loads(text))
            except (ValueError, jsonschema.ValidationError) as e:
                if bad < 3:
                    print(f"FAIL {path.name}: {text!r}: {str(e).splitlines()[0]}")
                bad += 1
        longest = max((len(s) for s in samples), default=0)
        n_probes, probes_bad = check_bounds(args.driver, path, schema, validator, samples)
        print(f"{'ok  ' if not bad and not probes_bad and samples else 'FAIL'} {path.name}: {len(samples)} samples, "
              f"{bad} invalid, longest {longest} bytes; {n_probes} texts at the bounds, {probes_bad} judged otherwise")
        failed |= bad > 0 or probes_bad > 0 or not samples
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
