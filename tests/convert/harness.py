"""harness.py -- what the tests of tests/convert share: where things are, the
converter imported from tools/, skipping (exit 77) and running pytest."""

import json
import os
import struct
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODEL = os.environ.get("SHARDLM_DEFAULT_MODEL") or os.path.join(ROOT, "models", "SmolLM2-135M-Instruct")
FIXTURES = os.environ.get("SHARDLM_FIXTURES") or os.path.join(ROOT, "tests", "fixtures")
GGUF = os.path.join(os.path.dirname(MODEL), ".download", "SmolLM2-135M-Instruct.Q4_1.gguf")
SKIP = 77

sys.path.insert(0, os.path.join(ROOT, "tools"))
import convert_gguf  # noqa: E402  (after the path is set)


def skip(why):
    print(f"SKIP: {why}", flush=True)
    sys.exit(SKIP)


def run(test_file):
    """Run the pytest tests of `test_file`; any failure is exit status 1."""
    status = pytest.main([test_file, "-q", "-p", "no:cacheprovider", "-W", "error::RuntimeWarning"])
    sys.exit(0 if status == 0 else 1)


def read_bf16_safetensors(path):
    """{name: fp32 array} from a bf16 safetensors file, by the format's definition."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "BF16", name
        a, b = info["data_offsets"]
        bits = np.frombuffer(blob[8 + n + a:8 + n + b], dtype=np.uint16)
        out[name] = convert_gguf.bf16_bits_to_f32(bits).reshape(info["shape"])
    return header, out
