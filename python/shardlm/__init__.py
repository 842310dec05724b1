"""shardlm: Python binding of libshardlm, with vLLM's offline API.

    from shardlm import LLM, SamplingParams
    llm = LLM(model="models/SmolLM2-135M-Instruct")
    outputs = llm.generate(["The capital of France is"], SamplingParams(temperature=0.8, top_p=0.95))
    print(outputs[0].outputs[0].text)

The binding is pure ctypes over libshardlm.so (found through
$SHARDLM_LIBRARY, then beside this package, then the system loader path).
"""

from ._lib import lib as _lib_handle
from .llm import LLM, Tokenizer
from .outputs import CompletionOutput, Logprob, RequestOutput
from .sampling_params import GuidedDecodingParams, SamplingParams, StructuredOutputsParams

__all__ = ["LLM", "SamplingParams", "StructuredOutputsParams", "GuidedDecodingParams", "RequestOutput",
           "CompletionOutput", "Logprob", "Tokenizer", "lib_version"]
__version__ = "0.1.0"


def lib_version():
    """The version string of the loaded libshardlm."""
    return _lib_handle().sl_version().decode()
