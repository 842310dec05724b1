"""cross_check_jsonschema.py -- random outputs of our JSON-schema grammars
must validate with the Python `jsonschema` package.

For every schema in --schemas, grammar_driver prints --count random walks
through the grammar's matcher that ended accepting (one JSON string per
line); each must parse as JSON and validate against the schema (Draft
2020-12, with the format checker for date, date-time, email, uuid where
jsonschema can check them). Exit 1 on the first schema with a failure.
"""
import argparse
import json
import pathlib
import subprocess
import sys

import jsonschema


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
        print(f"{'ok  ' if not bad and samples else 'FAIL'} {path.name}: {len(samples)} samples, "
              f"{bad} invalid, longest {longest} bytes")
        failed |= bad > 0 or not samples
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
