"""ctypes mirror of include/shardlm.h and the lookup of libshardlm.so.

This module owns everything that touches the C ABI: the structures (field
for field in the header's order, so ctypes lays them out as the C compiler
does), the function prototypes, and the translation of a failed call into a
Python exception. The rest of the package only sees `lib()` and `check()`.

The library is found, in this order: the path in $SHARDLM_LIBRARY, a
libshardlm.so installed beside this file, then the system loader path.
"""

import ctypes
import ctypes.util
import math
import os

SL_UNSET = -2147483647 - 1
NAN = math.nan

SL_EINVAL = -1
SL_ENOTSUP = -5
SL_ETIMEDOUT = -7
FINISH_REASONS = {0: None, 1: "stop", 2: "length", 3: "abort"}

c_char_p = ctypes.c_char_p
c_int = ctypes.c_int
c_int32_p = ctypes.POINTER(ctypes.c_int32)
c_float_p = ctypes.POINTER(ctypes.c_float)


class EngineOptions(ctypes.Structure):
    _fields_ = [
        ("model", c_char_p),
        ("backend", c_char_p),
        ("tensor_parallel_size", c_int),
        ("pipeline_parallel_size", c_int),
        ("max_model_len", c_int),
        ("max_num_seqs", c_int),
        ("max_num_batched_tokens", c_int),
        ("block_size", c_int),
        ("gpu_memory_utilization", ctypes.c_double),
        ("kv_cache_memory", ctypes.c_int64),
        ("device_memory", ctypes.c_int64),
        ("enable_prefix_caching", c_int),
        ("n_threads", c_int),
        ("chat_template", c_char_p),
        ("generation_config", c_char_p),
        ("revision", c_char_p),
        ("download_dir", c_char_p),
        ("quiet", c_int),
        ("debug_checks", c_int),
        ("matmul_precision", c_char_p),
        ("kv_cache_dtype", c_char_p),
        ("dtype", c_char_p),
        ("seed", ctypes.c_int64),
        ("enforce_eager", c_int),
    ]


class EngineInfo(ctypes.Structure):
    _fields_ = [
        ("model_path", c_char_p),
        ("model_name", c_char_p),
        ("vocab_size", c_int),
        ("max_model_len", c_int),
        ("block_size", c_int),
        ("n_kv_blocks", c_int),
        ("kv_cache_tokens", ctypes.c_int64),
        ("max_concurrency", c_int),
        ("tensor_parallel_size", c_int),
        ("pipeline_parallel_size", c_int),
        ("weight_bytes", ctypes.c_int64),
        ("kv_cache_bytes", ctypes.c_int64),
        ("n_threads", c_int),
        ("kv_cache_dtype", c_char_p),
        ("device", c_char_p),
        ("step_read_bytes", ctypes.c_int64),
    ]


# sl_guide_kind
GUIDE_NONE, GUIDE_JSON, GUIDE_JSON_OBJECT, GUIDE_REGEX, GUIDE_CHOICE, GUIDE_GRAMMAR = range(6)


class Guide(ctypes.Structure):
    _fields_ = [
        ("kind", c_int),
        ("text", c_char_p),
        ("choices", ctypes.POINTER(c_char_p)),
        ("n_choices", c_int),
    ]


class Sampling(ctypes.Structure):
    _fields_ = [
        ("temperature", ctypes.c_float),
        ("top_p", ctypes.c_float),
        ("min_p", ctypes.c_float),
        ("top_k", c_int),
        ("repetition_penalty", ctypes.c_float),
        ("presence_penalty", ctypes.c_float),
        ("frequency_penalty", ctypes.c_float),
        ("seed", ctypes.c_int64),
        ("n", c_int),
        ("max_tokens", c_int),
        ("min_tokens", c_int),
        ("stop", ctypes.POINTER(c_char_p)),
        ("n_stop", c_int),
        ("include_stop_str_in_output", c_int),
        ("stop_token_ids", c_int32_p),
        ("n_stop_token_ids", c_int),
        ("ignore_eos", c_int),
        ("logprobs", c_int),
        ("skip_special_tokens", c_int),
        ("guide", Guide),
    ]


class Request(ctypes.Structure):
    _fields_ = [
        ("prompt", c_char_p),
        ("prompt_ids", c_int32_p),
        ("n_prompt_ids", c_int),
        ("add_special_tokens", c_int),
        ("params", Sampling),
    ]


class Output(ctypes.Structure):
    _fields_ = [
        ("request_id", ctypes.c_uint64),
        ("index", c_int),
        ("text", ctypes.c_void_p),
        ("text_len", ctypes.c_size_t),
        ("token_ids", c_int32_p),
        ("n_tokens", c_int),
        ("logprobs", c_float_p),
        ("top_ids", c_int32_p),
        ("top_logprobs", c_float_p),
        ("n_top", c_int),
        ("finished", c_int),
        ("finish_reason", c_int),
        ("stop_reason", c_char_p),
        ("stop_token", ctypes.c_int32),
        ("n_prompt_tokens", c_int),
        ("n_output_tokens", c_int),
        ("n_cached_tokens", c_int),
        ("error", c_char_p),
    ]


class EngineStats(ctypes.Structure):
    _fields_ = [
        ("n_running", c_int),
        ("n_waiting", c_int),
        ("n_kv_blocks_used", c_int),
        ("n_kv_blocks_total", c_int),
        ("prefix_cache_queries", ctypes.c_int64),
        ("prefix_cache_hits", ctypes.c_int64),
        ("prompt_tokens", ctypes.c_int64),
        ("generation_tokens", ctypes.c_int64),
        ("n_preemptions", ctypes.c_int64),
        ("n_steps", ctypes.c_int64),
        ("requests_finished", ctypes.c_int64),
        ("healthy", c_int),
        ("comm_seconds", ctypes.c_double),
        ("step_seconds", ctypes.c_double),
        ("output_seconds", ctypes.c_double),
    ]


ERR_SIZE = 1024
_P = ctypes.c_void_p
_ERR = (ctypes.c_char_p, ctypes.c_size_t)
_PROTOTYPES = {
    "sl_engine_options_init": (None, [ctypes.POINTER(EngineOptions)]),
    "sl_engine_open": (c_int, [ctypes.POINTER(EngineOptions), ctypes.POINTER(_P), *_ERR]),
    "sl_engine_close": (None, [_P]),
    "sl_engine_get_info": (None, [_P, ctypes.POINTER(EngineInfo)]),
    "sl_engine_get_stats": (None, [_P, ctypes.POINTER(EngineStats)]),
    "sl_request_init": (None, [ctypes.POINTER(Request)]),
    "sl_engine_submit": (c_int, [_P, ctypes.POINTER(Request), _P, _P, ctypes.POINTER(ctypes.c_uint64), *_ERR]),
    "sl_engine_abort": (None, [_P, ctypes.c_uint64]),
    "sl_engine_poll": (c_int, [_P, ctypes.c_uint64, c_int, ctypes.POINTER(ctypes.POINTER(Output))]),
    "sl_output_free": (None, [ctypes.POINTER(Output)]),
    "sl_engine_apply_chat_template": (c_int, [_P, c_char_p, c_char_p, ctypes.POINTER(_P), *_ERR]),
    "sl_engine_tokenize": (c_int, [_P, c_char_p, c_int, ctypes.POINTER(c_int32_p), ctypes.POINTER(c_int), *_ERR]),
    "sl_engine_detokenize": (c_int, [_P, c_int32_p, c_int, c_int, ctypes.POINTER(_P), *_ERR]),
    "sl_free": (None, [_P]),
    "sl_version": (c_char_p, []),
}

_lib = None
_lib_path = None


def _candidates():
    env = os.environ.get("SHARDLM_LIBRARY")
    if env:
        return [env]
    beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libshardlm.so")
    found = [beside] if os.path.exists(beside) else []
    system = ctypes.util.find_library("shardlm")
    return found + [system or "libshardlm.so"]


def _load():
    global _lib_path
    tried = []
    for path in _candidates():
        try:
            handle = ctypes.CDLL(path)
            _lib_path = path
            return handle
        except OSError as e:
            tried.append(f"{path}: {e}")
    raise ImportError("cannot load libshardlm: " + "; ".join(tried) +
                      ". Set SHARDLM_LIBRARY to the path of libshardlm.so (built by CMake as build/<dir>/libshardlm.so)")


def lib():
    """The loaded library, with every prototype declared (loaded once)."""
    global _lib
    if _lib is None:
        handle = _load()
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(handle, name)
            fn.restype = restype
            fn.argtypes = argtypes
        _lib = handle
    return _lib


def loaded_from_package():
    """True when the library in use is the one installed inside this package (beside this file)."""
    lib()
    here = os.path.dirname(os.path.abspath(__file__))
    return _lib_path is not None and os.path.dirname(os.path.abspath(_lib_path)) == here


def err_buffer():
    return ctypes.create_string_buffer(ERR_SIZE)


def check(rc, err, what):
    """Raises for a negative return code: ValueError for bad input (invalid or unsupported, as
    vLLM raises for both), RuntimeError otherwise."""
    if rc == 0:
        return
    msg = err.value.decode("utf-8", "replace") if err is not None else ""
    text = msg or f"{what} failed (code {rc})"
    if rc in (SL_EINVAL, SL_ENOTSUP):
        raise ValueError(text)
    raise RuntimeError(text)


def take_string(ptr):
    """Decodes a malloc'd char* from the library and frees it."""
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        lib().sl_free(ptr)


def encode(s):
    return None if s is None else os.fsencode(s) if isinstance(s, os.PathLike) else s.encode("utf-8")
