"""SamplingParams: how one request is sampled, shaped like vLLM's.

A field left at None is "unset": the engine then takes the model's
generation_config.json value when it has one, else the OpenAI/vLLM default,
exactly as the C API's NaN / SL_UNSET do. Values are checked by the engine
at submission (a bad one raises ValueError with the engine's message); this
class only normalizes shapes: stop becomes a list (as vLLM does).

Structured output is vLLM's: SamplingParams(structured_outputs=
StructuredOutputsParams(json=schema)) with exactly one of json (a schema, as a
dict or JSON text), json_object, regex, choice or grammar (GBNF); the older
guided_decoding=GuidedDecodingParams(...) is the same thing.
"""

import ctypes
import json as _json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

from . import _lib


def _float(v):
    return _lib.NAN if v is None else float(v)


def _int(v):
    return _lib.SL_UNSET if v is None else int(v)


@dataclass
class StructuredOutputsParams:
    json: Optional[Union[str, Dict[str, Any]]] = None
    regex: Optional[str] = None
    choice: Optional[List[str]] = None
    grammar: Optional[str] = None
    json_object: Optional[bool] = None

    def __post_init__(self):
        given = [k for k in ("json", "regex", "choice", "grammar") if getattr(self, k) is not None]
        given += ["json_object"] if self.json_object else []
        if len(given) != 1:
            raise ValueError("You must use one kind of structured outputs constraint (json, json_object, regex, "
                             f"choice or grammar); got {', '.join(given) or 'none'}")
        if self.choice is not None and not all(isinstance(c, str) for c in self.choice):
            raise TypeError("choice must be a list of strings")

    def fill(self, g):
        """Writes the constraint into a C sl_guide; returns what it points to."""
        if self.json is not None:
            text = self.json if isinstance(self.json, str) else _json.dumps(self.json)
            g.kind, g.text = _lib.GUIDE_JSON, text.encode("utf-8")
        elif self.json_object:
            g.kind = _lib.GUIDE_JSON_OBJECT
        elif self.regex is not None:
            g.kind, g.text = _lib.GUIDE_REGEX, self.regex.encode("utf-8")
        elif self.grammar is not None:
            g.kind, g.text = _lib.GUIDE_GRAMMAR, self.grammar.encode("utf-8")
        else:
            choices = (ctypes.c_char_p * max(1, len(self.choice)))(*[c.encode("utf-8") for c in self.choice])
            g.kind, g.choices, g.n_choices = _lib.GUIDE_CHOICE, ctypes.cast(choices, ctypes.POINTER(ctypes.c_char_p)), len(self.choice)
            return choices
        return g.text


GuidedDecodingParams = StructuredOutputsParams


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
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: Optional[int] = None
    skip_special_tokens: bool = True
    structured_outputs: Optional[StructuredOutputsParams] = None
    guided_decoding: Optional[StructuredOutputsParams] = None

    def __post_init__(self):
        if self.structured_outputs is not None and self.guided_decoding is not None:
            raise ValueError("give structured_outputs or guided_decoding, not both")
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
        c.include_stop_str_in_output = int(bool(self.include_stop_str_in_output))
        ids = (ctypes.c_int32 * max(1, len(self.stop_token_ids)))(*self.stop_token_ids)
        c.stop_token_ids, c.n_stop_token_ids = ctypes.cast(ids, _lib.c_int32_p), len(self.stop_token_ids)
        guide = self.structured_outputs or self.guided_decoding
        kept = guide.fill(c.guide) if guide is not None else None
        return stops, ids, kept
