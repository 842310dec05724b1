"""LLM: offline batched generation over one engine, shaped like vLLM's LLM.

An LLM owns one sl_engine (opened in __init__, closed by close(), the
context manager or, as a last resort, __del__). generate() submits every
prompt before it waits for any, so the engine's continuous batching runs
them together; it then polls each request's queue (sl_engine_poll) with a
short timeout. ctypes releases the GIL for the duration of every C call and
no Python code runs on the engine thread, so there is no callback to
deadlock against and Ctrl-C is seen within one poll timeout: an interrupted
or failed generate() aborts what it submitted and drains it before raising.
"""

import ctypes
import difflib
import json
import numbers
import os
import re

from . import _lib
from .outputs import CompletionOutput, Logprob, RequestOutput
from .sampling_params import SamplingParams

POLL_MS = 100
_BYTES_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:([KMGTkmgt])([iI])?[bB]?|[bB])?\s*$")


def parse_bytes(value):
    """A size in bytes: an int, or a string like "2G" (10^9) or "2GiB" (2^30), as the CLI reads it."""
    if isinstance(value, bool):
        raise TypeError("a memory size is a number of bytes or a string like \"2G\"")
    if isinstance(value, (int, float)):
        return int(value)
    m = _BYTES_RE.match(str(value))
    if not m:
        raise ValueError(f"cannot read \"{value}\" as a memory size (examples: 2G, 512MiB, 1073741824)")
    number, unit, binary = m.groups()
    base = 1024 if binary else 1000
    power = "KMGT".index(unit.upper()) + 1 if unit else 0
    return int(float(number) * base**power)


def _set_device(opts, value, keep):
    if value not in ("cpu", "cuda"):
        raise ValueError(f"device must be \"cpu\" or \"cuda\", got {value!r}")
    opts.backend = keep(value)


def _dtype_name(value):
    """vLLM's dtype: a name ("auto", "bfloat16", "half"...) or a torch.dtype (torch.float16 -> "float16")."""
    if isinstance(value, str):
        return value
    name = str(value)
    if name.startswith("torch."):
        return name[len("torch."):]
    raise TypeError(f"dtype is a name like \"bfloat16\" or a torch.dtype, got {value!r}")


def _seed(value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"seed is an int, got {value!r}")
    if not -2**63 <= value < 2**63 or value == _lib.SL_UNSET:
        raise ValueError(f"seed {value} is out of range (a 64-bit integer other than {_lib.SL_UNSET})")
    return value


def _count(name):
    """An engine count (max_model_len, block_size...): an int of at least 1; leave it out (or None) for the
    default, as 0 means the default inside the engine."""
    def convert(value, keep):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
        return int(value)

    return convert


def _setter(field, convert):
    def set_field(opts, value, keep):
        setattr(opts, field, convert(value, keep))

    return set_field


_ENGINE_ARGS = {
    "max_model_len": _setter("max_model_len", _count("max_model_len")),
    "max_num_seqs": _setter("max_num_seqs", _count("max_num_seqs")),
    "max_num_batched_tokens": _setter("max_num_batched_tokens", _count("max_num_batched_tokens")),
    "block_size": _setter("block_size", _count("block_size")),
    "gpu_memory_utilization": _setter("gpu_memory_utilization", lambda v, k: float(v)),
    "kv_cache_memory": _setter("kv_cache_memory", lambda v, k: parse_bytes(v)),
    "device_memory": _setter("device_memory", lambda v, k: parse_bytes(v)),
    "enable_prefix_caching": _setter("enable_prefix_caching", lambda v, k: int(bool(v))),
    "n_threads": _setter("n_threads", _count("n_threads")),
    "threads": _setter("n_threads", _count("threads")),
    "chat_template": _setter("chat_template", lambda v, k: k(v)),
    "generation_config": _setter("generation_config", lambda v, k: k(v)),
    "revision": _setter("revision", lambda v, k: k(v)),
    "download_dir": _setter("download_dir", lambda v, k: k(v)),
    "matmul_precision": _setter("matmul_precision", lambda v, k: k(v)),
    "kv_cache_dtype": _setter("kv_cache_dtype", lambda v, k: k(v)),
    "dtype": _setter("dtype", lambda v, k: k(_dtype_name(v))),
    "seed": _setter("seed", lambda v, k: _seed(v)),
    "enforce_eager": _setter("enforce_eager", lambda v, k: int(bool(v))),
    "device": _set_device,
    "quiet": _setter("quiet", lambda v, k: int(bool(v))),
    # vLLM's, accepted so its scripts run unchanged; nothing to allow: shardlm runs no code from a model
    # repository (its architectures are built in, and others are refused either way)
    "trust_remote_code": lambda opts, v, k: None,
}


def _unknown_arg(name):
    valid = ["model", "tensor_parallel_size", "pipeline_parallel_size", *_ENGINE_ARGS]
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid engine arguments: {', '.join(sorted(_ENGINE_ARGS))}"
    return TypeError(f"LLM() got an unexpected keyword argument {name!r}{hint}")


WORKER_EXE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "shardlm")


def _find_worker_exe():
    """Ranks other than this process run the `shardlm` executable (this process is python, which cannot
    serve as one). SHARDLM_WORKER_EXE names it when set; else an installed package uses the one it carries
    (bin/shardlm, built with its libshardlm.so); else the library looks for it (the shardlm built beside it,
    then PATH) and fails the open, saying where it looked, when there is none."""
    if os.environ.get("SHARDLM_WORKER_EXE"):
        return
    if _lib.loaded_from_package() and os.access(WORKER_EXE, os.X_OK):
        os.environ["SHARDLM_WORKER_EXE"] = WORKER_EXE


def _normalize_prompts(prompts):
    """A str, a dict, or a list of those -> list of (text, ids)."""
    items = prompts if isinstance(prompts, (list, tuple)) else [prompts]
    out = []
    for p in items:
        if isinstance(p, str):
            out.append((p, None))
        elif isinstance(p, dict) and "prompt_token_ids" in p:
            out.append((None, [int(t) for t in p["prompt_token_ids"]]))
        elif isinstance(p, dict) and "prompt" in p:
            out.append((p["prompt"], None))
        else:
            raise TypeError("a prompt is a str, {\"prompt\": str} or {\"prompt_token_ids\": [int, ...]}, got "
                            f"{type(p).__name__}")
    return out


def _normalize_params(sampling_params, n):
    if sampling_params is None:
        return [SamplingParams()] * n
    if isinstance(sampling_params, SamplingParams):
        return [sampling_params] * n
    params = list(sampling_params)
    if len(params) != n:
        raise ValueError(f"got {len(params)} sampling_params for {n} prompts: pass one, or one per prompt")
    return params


class _Pending:
    """One submitted request and what has arrived of each of its choices."""

    def __init__(self, request_id, text, ids, params):
        self.id = request_id
        self.prompt = text
        self.prompt_token_ids = ids
        self.params = params
        self.text = [bytearray() for _ in range(params.n)]
        self.tokens = [[] for _ in range(params.n)]
        self.logprobs = [[] if params.logprobs is not None else None for _ in range(params.n)]
        self.finished = [None] * params.n  # (finish_reason, stop_reason) once done
        self.num_cached_tokens = 0
        self.error = None

    def done(self):
        return all(f is not None for f in self.finished)


class Tokenizer:
    """The engine's tokenizer (tokenizer.json), for encode/decode."""

    def __init__(self, llm):
        self._llm = llm

    def encode(self, text, add_special_tokens=True):
        return self._llm._tokenize(text, add_special_tokens)

    def decode(self, token_ids, skip_special_tokens=True):
        return self._llm._detokenize(token_ids, skip_special_tokens)


class LLM:
    def __init__(self, model=None, tensor_parallel_size=1, pipeline_parallel_size=1, **engine_args):
        self._engine = None
        self._keep = []
        self._pieces = {}
        lib = _lib.lib()
        opts = _lib.EngineOptions()
        lib.sl_engine_options_init(ctypes.byref(opts))
        opts.model = self._hold(model)
        opts.tensor_parallel_size = int(tensor_parallel_size)
        opts.pipeline_parallel_size = int(pipeline_parallel_size)
        if opts.tensor_parallel_size * opts.pipeline_parallel_size > 1:
            _find_worker_exe()
        for name, value in engine_args.items():
            if name not in _ENGINE_ARGS:
                raise _unknown_arg(name)
            if value is not None:
                _ENGINE_ARGS[name](opts, value, self._hold)
        engine = ctypes.c_void_p()
        err = _lib.err_buffer()
        _lib.check(lib.sl_engine_open(ctypes.byref(opts), ctypes.byref(engine), err, _lib.ERR_SIZE), err,
                   "opening the engine")
        self._engine = engine
        info = _lib.EngineInfo()
        lib.sl_engine_get_info(engine, ctypes.byref(info))
        self.model = (info.model_path or b"").decode("utf-8", "replace")
        self.max_model_len = info.max_model_len
        self.vocab_size = info.vocab_size

    def _hold(self, s):
        """Encodes a string option and keeps the bytes alive as long as the engine."""
        b = _lib.encode(os.fspath(s) if isinstance(s, os.PathLike) else s)
        self._keep.append(b)
        return b

    # ---------------- lifetime ----------------

    def close(self):
        """Aborts what is still running and frees the engine; idempotent."""
        engine, self._engine = getattr(self, "_engine", None), None
        if engine:
            _lib.lib().sl_engine_close(engine)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn down ctypes already
            pass

    def _handle(self):
        if not self._engine:
            raise RuntimeError("this LLM is closed")
        return self._engine

    # ---------------- generation ----------------

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        """Generates for every prompt (batched by the engine); one RequestOutput per prompt, in order."""
        items = _normalize_prompts(prompts)
        return self._run(items, _normalize_params(sampling_params, len(items)), True, use_tqdm)

    def chat(self, messages, sampling_params=None, use_tqdm=True, chat_template_kwargs=None,
             add_generation_prompt=True):
        """Renders each conversation with the model's chat template, then generates (no extra BOS)."""
        if not isinstance(messages, (list, tuple)):
            raise TypeError("messages is a conversation (a list of {role, content} dicts) or a list of them")
        conversations = [messages] if not messages or isinstance(messages[0], dict) else list(messages)
        kwargs = {"add_generation_prompt": bool(add_generation_prompt), **(chat_template_kwargs or {})}
        prompts = [(self._render(conv, kwargs), None) for conv in conversations]
        return self._run(prompts, _normalize_params(sampling_params, len(prompts)), False, use_tqdm)

    def get_tokenizer(self):
        return Tokenizer(self)

    def _render(self, conversation, kwargs):
        out = ctypes.c_void_p()
        err = _lib.err_buffer()
        rc = _lib.lib().sl_engine_apply_chat_template(self._handle(), json.dumps(list(conversation)).encode(),
                                                      json.dumps(kwargs).encode(), ctypes.byref(out), err,
                                                      _lib.ERR_SIZE)
        _lib.check(rc, err, "applying the chat template")
        return _lib.take_string(out)

    def _run(self, items, params, add_special_tokens, use_tqdm):
        pending = []
        try:
            for (text, ids), sp in zip(items, params):
                pending.append(self._submit(text, ids, sp, add_special_tokens))
            with _progress(use_tqdm, len(pending)) as bar:
                for p in pending:
                    self._collect(p)
                    bar.update(1)
        except BaseException:
            self._abort(pending)
            raise
        failed = [p.error for p in pending if p.error]
        if failed:
            raise RuntimeError(f"the engine aborted a request: {failed[0]}")
        return [self._result(p) for p in pending]

    def _submit(self, text, ids, sp, add_special_tokens):
        lib = _lib.lib()
        req = _lib.Request()
        lib.sl_request_init(ctypes.byref(req))
        keep = sp.fill(req.params)
        if text is not None:
            req.prompt = text.encode("utf-8")
        else:
            arr = (ctypes.c_int32 * max(1, len(ids)))(*ids)
            req.prompt_ids, req.n_prompt_ids = ctypes.cast(arr, _lib.c_int32_p), len(ids)
            keep += (arr,)
        req.add_special_tokens = int(add_special_tokens)
        rid = ctypes.c_uint64()
        err = _lib.err_buffer()
        rc = lib.sl_engine_submit(self._handle(), ctypes.byref(req), None, None, ctypes.byref(rid), err, _lib.ERR_SIZE)
        _lib.check(rc, err, "submitting a request")
        pending = _Pending(rid.value, text, ids, sp)
        if text is not None:
            try:
                pending.prompt_token_ids = self._tokenize(text, add_special_tokens)
            except BaseException:
                self._abort([pending])
                raise
        return pending

    def _poll(self, p):
        """Takes one queued output of p (or none after POLL_MS); False when p has no stream left."""
        out = ctypes.POINTER(_lib.Output)()
        lib = _lib.lib()
        rc = lib.sl_engine_poll(self._handle(), p.id, POLL_MS, ctypes.byref(out))
        if rc != 0:
            return rc == _lib.SL_ETIMEDOUT
        try:
            self._absorb(p, out.contents)
        finally:
            lib.sl_output_free(out)
        return True

    def _collect(self, p):
        while not p.done():
            if not self._poll(p):
                raise RuntimeError(f"request {p.id} lost its output stream before finishing")

    def _abort(self, pending):
        """Aborts unfinished requests and drains their queues so the engine frees them."""
        lib = _lib.lib()
        live = [p for p in pending if not p.done()]
        if not live or not self._engine:
            return
        for p in live:
            lib.sl_engine_abort(self._engine, p.id)
        for p in live:
            while not p.done() and self._poll(p):
                pass

    def _absorb(self, p, o):
        i = o.index
        if o.text_len:
            p.text[i] += ctypes.string_at(o.text, o.text_len)
        tokens = o.token_ids[:o.n_tokens]
        p.tokens[i] += tokens
        if p.logprobs[i] is not None and o.logprobs:
            for t, tok in enumerate(tokens):
                p.logprobs[i].append(self._logprob_entry(o, t, tok))
        if o.finished:
            reason = _lib.FINISH_REASONS.get(o.finish_reason)
            stop = o.stop_reason.decode("utf-8", "replace") if o.stop_reason else None
            if stop is None and o.stop_token in p.params.stop_token_ids:
                stop = o.stop_token
            p.finished[i] = (reason, stop)
            p.num_cached_tokens = o.n_cached_tokens
            if o.error:
                p.error = o.error.decode("utf-8", "replace")

    def _logprob_entry(self, o, t, chosen):
        k = o.n_top
        tops = [(o.top_ids[t * k + j], o.top_logprobs[t * k + j]) for j in range(k)] if k else []
        ranks = {tok: j + 1 for j, (tok, _) in enumerate(tops)}
        entry = {chosen: Logprob(o.logprobs[t], ranks.get(chosen), self._piece(chosen))}
        for tok, lp in tops:
            entry.setdefault(tok, Logprob(lp, ranks[tok], self._piece(tok)))
        return entry

    def _piece(self, token):
        """The text of one token (special tokens included), or None without a tokenizer."""
        if token not in self._pieces:
            try:
                self._pieces[token] = self._detokenize([token], False)
            except ValueError:
                self._pieces[token] = None
        return self._pieces[token]

    def _result(self, p):
        outputs = []
        for i in range(p.params.n):
            lps = p.logprobs[i]
            cumulative = sum(e[tok].logprob for e, tok in zip(lps, p.tokens[i])) if lps is not None else None
            reason, stop = p.finished[i]
            outputs.append(CompletionOutput(i, p.text[i].decode("utf-8", "replace"), p.tokens[i], cumulative, lps,
                                            reason, stop))
        return RequestOutput(str(p.id), p.prompt, p.prompt_token_ids, outputs, True, p.num_cached_tokens)

    # ---------------- tokenizer ----------------

    def _tokenize(self, text, add_special_tokens):
        ids = _lib.c_int32_p()
        n = ctypes.c_int()
        err = _lib.err_buffer()
        rc = _lib.lib().sl_engine_tokenize(self._handle(), text.encode("utf-8"), int(add_special_tokens),
                                           ctypes.byref(ids), ctypes.byref(n), err, _lib.ERR_SIZE)
        _lib.check(rc, err, "tokenizing")
        try:
            return ids[:n.value]
        finally:
            _lib.lib().sl_free(ids)

    def _detokenize(self, token_ids, skip_special_tokens):
        ids = list(token_ids)
        arr = (ctypes.c_int32 * max(1, len(ids)))(*ids)
        text = ctypes.c_void_p()
        err = _lib.err_buffer()
        rc = _lib.lib().sl_engine_detokenize(self._handle(), arr, len(ids), int(skip_special_tokens),
                                             ctypes.byref(text), err, _lib.ERR_SIZE)
        _lib.check(rc, err, "detokenizing")
        return _lib.take_string(text)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        pass


def _progress(use_tqdm, total):
    """A tqdm bar when asked for and installed (tqdm is optional), else nothing."""
    if callable(use_tqdm):
        return use_tqdm(total=total, desc="Processed prompts")
    if not use_tqdm:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="Processed prompts")
