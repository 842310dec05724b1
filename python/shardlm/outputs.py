"""Results of LLM.generate / LLM.chat, shaped like vLLM's RequestOutput.

`outputs[i].outputs[0].text` is the generated text of prompt i; token_ids
include a final stop token (EOS or one of stop_token_ids) while the text
never does, as in vLLM. logprobs (when requested) is a list with one dict
per generated token, {token_id: Logprob}, holding the top-k alternatives and
the chosen token; rank is 1-based among the model's raw distribution, None
for a chosen token outside the top k.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union


@dataclass
class Logprob:
    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: List[int]
    cumulative_logprob: Optional[float]
    logprobs: Optional[List[Dict[int, Logprob]]]
    finish_reason: Optional[str] = None
    stop_reason: Union[int, str, None] = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: Optional[str]
    prompt_token_ids: List[int]
    outputs: List[CompletionOutput] = field(default_factory=list)
    finished: bool = False
    num_cached_tokens: int = 0
