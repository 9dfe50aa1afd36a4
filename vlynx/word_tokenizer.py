"""A word-level tokenizer built offline, for tiny backbones (tests, the miniature world).

Its special-token ids match the `tiny` preset: 0 <pad>, 1 <unk>, 2 <|im_start|>,
3 <|im_end|>, 4 <image>, 5 <video>; words follow in sorted order.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from vlynx.backbones.shared import CHATML_TEMPLATE

SPECIAL_TOKENS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
_WORD = re.compile(r"\w+|[^\w\s]")


def build_word_tokenizer(texts: Iterable[str], extra_words: Iterable[str] = ()):
    """A `PreTrainedTokenizerFast` whose vocabulary is every word and punctuation mark in `texts`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = set(extra_words) | {"system", "user", "assistant", "You", "are", "a", "helpful", "."}
    for text in texts:
        words.update(_WORD.findall(text))
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for word in sorted(words - set(vocab)):
        vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[2:]})
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
