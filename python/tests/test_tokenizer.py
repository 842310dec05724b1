"""LLM.get_tokenizer() encodes and decodes as the tokenizers library does
with the model's tokenizer.json."""

import os

import tokenizers

from conftest import DEFAULT_MODEL, FIXTURES, load_json


def test_encode_decode_match_tokenizers(smol):
    ref = tokenizers.Tokenizer.from_file(os.path.join(DEFAULT_MODEL, "tokenizer.json"))
    tok = smol.get_tokenizer()
    for case in load_json(FIXTURES, "smollm2", "tokenizer_cases.json")["cases"]:
        assert tok.encode(case["text"]) == ref.encode(case["text"]).ids == case["ids"]
        assert tok.decode(case["ids"]) == ref.decode(case["ids"])
    special = ref.encode("<|im_start|>user\nhi<|im_end|>").ids
    assert tok.decode(special, skip_special_tokens=False) == ref.decode(special, skip_special_tokens=False)
    assert tok.decode(special) == ref.decode(special, skip_special_tokens=True)
