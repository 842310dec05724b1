"""llamacpp_peer.py -- what the llama.cpp peer scripts share: opening a GGUF
with llama-cpp-python (bench/requirements-peers.txt, in build/venv-peers) and
one greedy step on the last logits."""

import numpy as np

import llama_cpp


def open_model(path, threads, n_ctx):
    """A llama.cpp context on the CPU with `threads` threads for prefill and decode."""
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                           n_threads=threads, n_threads_batch=threads, n_gpu_layers=0,
                           logits_all=False, verbose=False)


def last_logits(llm):
    return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))


def greedy_next(llm):
    """The argmax of the logits of the last evaluated token."""
    return int(np.argmax(last_logits(llm)))
