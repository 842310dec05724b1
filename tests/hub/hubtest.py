"""hubtest.py -- what the hub test scripts share: running the C driver
(hub_cli) against a mock hub with a private cache, and a tiny test runner
(each test_* function in order; exit 1 on any failure, 77 to skip)."""

import os
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def run_cli(cli, model, cache, endpoint, env=None, args=()):
    """Runs hub_cli with a clean hub environment; returns (rc, stdout, stderr)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    e.update({"HF_HUB_CACHE": cache, "HF_ENDPOINT": endpoint, "HF_HOME": os.path.join(cache, "home")})
    e.update(env or {})
    p = subprocess.run([cli, model, *args], env=e, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout.strip(), p.stderr


def new_cache():
    return tempfile.mkdtemp(prefix="sl_hub_cache_")


def run_tests(module_globals):
    tests = [(n, f) for n, f in module_globals.items() if n.startswith("test_") and callable(f)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print("ok   %s" % name, flush=True)
        except Exception:
            failed += 1
            print("FAIL %s" % name, flush=True)
            traceback.print_exc()
    print("%d/%d passed" % (len(tests) - failed, len(tests)))
    sys.exit(1 if failed else 0)
