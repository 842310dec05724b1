"""SamplingParams: how one request is sampled, shaped like vLLM's.

A field left at None is "unset": the engine then takes the model's
generation_config.json value when it has one, else the OpenAI/vLLM default,
exactly as the C API's NaN / SL_UNSET do. Values are checked by the engine
at submission (a bad one raises ValueError with the engine's message); this
class only normalizes shapes: stop becomes a list (as vLLM does).
"""

import ctypes
from dataclasses import dataclass
from typing import List, Optional, Union

from . import _lib


def _float(v):
    return _lib.NAN if v is None else float(v)


def _int(v):
    return _lib.SL_UNSET if v is None else int(v)


@dataclass
class SamplingParams:
    n: int = 1
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    seed: Optional[int] = None
    max_tokens: Optional[int] = 16
    min_tokens: int = 0
    stop: Optional[Union[str, List[str]]] = None
    stop_token_ids: Optional[List[int]] = None
    ignore_eos: bool = False
    logprobs: Optional[int] = None
    skip_special_tokens: bool = True

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        if not all(isinstance(s, str) for s in self.stop):
            raise TypeError("stop must be a string or a list of strings")
        self.stop_token_ids = [int(t) for t in (self.stop_token_ids or [])]

    def fill(self, c):
        """Writes these parameters into a C sl_sampling; returns the ctypes
        arrays it points to, which the caller keeps alive until submitted."""
        c.n = int(self.n)
        c.temperature = _float(self.temperature)
        c.top_p = _float(self.top_p)
        c.top_k = _int(self.top_k)
        c.min_p = _float(self.min_p)
        c.repetition_penalty = _float(self.repetition_penalty)
        c.presence_penalty = _float(self.presence_penalty)
        c.frequency_penalty = _float(self.frequency_penalty)
        c.seed = _int(self.seed)
        c.max_tokens = _int(self.max_tokens)
        c.min_tokens = int(self.min_tokens)
        c.ignore_eos = int(bool(self.ignore_eos))
        c.logprobs = -1 if self.logprobs is None else int(self.logprobs)
        c.skip_special_tokens = int(bool(self.skip_special_tokens))
        stops = (ctypes.c_char_p * max(1, len(self.stop)))(*[s.encode("utf-8") for s in self.stop])
        c.stop, c.n_stop = ctypes.cast(stops, ctypes.POINTER(ctypes.c_char_p)), len(self.stop)
        ids = (ctypes.c_int32 * max(1, len(self.stop_token_ids)))(*self.stop_token_ids)
        c.stop_token_ids, c.n_stop_token_ids = ctypes.cast(ids, _lib.c_int32_p), len(self.stop_token_ids)
        return stops, ids
