"""The ctypes mirror matches include/shardlm.h: every struct has the
header's fields, in its order, with matching C types, and every SL_API
function the binding uses is declared there. A header change that the
binding does not follow fails here instead of corrupting memory."""

import ctypes
import os
import re

import pytest

from conftest import ROOT

from shardlm import _lib

HEADER = os.path.join(ROOT, "include", "shardlm.h")
C_TYPES = {
    "int": ctypes.c_int, "int32_t": ctypes.c_int32, "int64_t": ctypes.c_int64, "uint64_t": ctypes.c_uint64,
    "float": ctypes.c_float, "double": ctypes.c_double, "size_t": ctypes.c_size_t,
    "sl_finish_reason": ctypes.c_int, "sl_sampling": _lib.Sampling, "sl_guide": _lib.Guide,
    "sl_guide_kind": ctypes.c_int,
}


def header_text():
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def header_fields(struct):
    body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (struct, struct), header_text(), re.S).group(1)
    fields = []
    for decl in filter(None, (d.strip() for d in body.split(";"))):
        m = re.match(r"((?:const\s+)?[A-Za-z_0-9]+(?:\s*\*\s*(?:const\s*\*)?)?)\s*(.*)", decl, re.S)
        ctype, names = m.group(1), m.group(2)
        for name in names.split(","):
            stars = ctype.count("*") + name.count("*")
            fields.append((name.strip(" *"), ctype.replace("const", "").strip(" *"), stars))
    return fields


def same_type(py_type, c_name, stars):
    if stars:
        return issubclass(py_type, (ctypes._Pointer, ctypes.c_char_p, ctypes.c_void_p))
    return ctypes.sizeof(py_type) == ctypes.sizeof(C_TYPES[c_name]) and (
        py_type in (ctypes.c_float, ctypes.c_double)) == (C_TYPES[c_name] in (ctypes.c_float, ctypes.c_double))


@pytest.mark.parametrize("struct, mirror", [
    ("sl_engine_options", _lib.EngineOptions), ("sl_engine_info", _lib.EngineInfo), ("sl_sampling", _lib.Sampling),
    ("sl_guide", _lib.Guide), ("sl_request", _lib.Request), ("sl_output", _lib.Output), ("sl_engine_stats", _lib.EngineStats)])
def test_structs_match_header(struct, mirror):
    want = header_fields(struct)
    have = mirror._fields_
    assert [n for n, _, _ in want] == [n for n, _ in have], f"{struct} changed in include/shardlm.h"
    for (name, c_name, stars), (_, py_type) in zip(want, have):
        assert same_type(py_type, c_name, stars), f"{struct}.{name}: {c_name}{'*' * stars} vs {py_type}"


def test_functions_declared():
    declared = set(re.findall(r"SL_API[^;]*?\b(sl_\w+)\s*\(", header_text()))
    assert set(_lib._PROTOTYPES) <= declared


def test_unset_marker_matches_header():
    assert re.search(r"#define SL_UNSET \(-2147483647 - 1\)", header_text())
    assert _lib.SL_UNSET == -2147483647 - 1
