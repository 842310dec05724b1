#!/usr/bin/env python3
"""Builds data/smollm2_like/tokenizer.json: a tiny tokenizer of the SmolLM2
shape (byte-level BPE, pre-tokenizer Sequence[Digits(individual_digits),
ByteLevel], no normalizer, 17 special added tokens, unk null), trained with
Hugging Face `tokenizers` on a small English/code corpus so that most byte
symbols are missing from the vocabulary (`tokenizers` then drops them).

usage: make_smollm2_like.py OUT_DIR   (run with build/venv/bin/python)
"""
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
            "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
            "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
            "<jupyter_script>", "<empty_output>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's a test, isn't it?",
    "def main():\n    print('hello world')\n    return 0\n",
    "Large language models need several GPUs; the server shards them.",
    "for i in range(10):\n\tx += i * 2  # accumulate\n",
    "Numbers like 1234 and 56.78 appear in text, and so do emails: a@b.com.",
] * 20


def main():
    out_dir = sys.argv[1]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))


if __name__ == "__main__":
    main()
