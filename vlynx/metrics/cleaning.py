"""Answer normalisation and exact-match rules of the ScanQA / SQA3D community evaluators.

`clean_answer` reproduces, step for step, the answer cleaning that LEO (embodied-generalist,
`data/data_utils.py`) introduced and LLaVA-3D, PAVE and V-LynX reuse for ScanQA and SQA3D, so
EM@1 numbers are comparable with the papers. Its quirks are kept on purpose (they change
scores): only characters outside ``[a-zA-Z0-9,'\\s\\-:]`` are removed (commas, apostrophes,
hyphens and colons stay), ``let`` becomes ``left``, ``tv`` becomes ``TV`` after lower-casing,
and an article is dropped only before a word made of letters.
"""
from __future__ import annotations

import re

# Typos found in the ScanQA/SQA3D answers, fixed as whole words, in this order.
_TYPO_FIXES = (
    ("letf", "left"),
    ("let", "left"),
    ("tehre", "there"),
    ("rigth", "right"),
    ("rght", "right"),
    ("behine", "behind"),
    ("tv", "TV"),
    ("chai", "chair"),
    ("wasing", "washing"),
    ("waslked", "walked"),
    ("oclock", "o'clock"),
)
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()


def _whole_word(word: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(word)}\b")


_TYPO_PATTERNS = [(_whole_word(wrong), right) for wrong, right in _TYPO_FIXES]
_NUMBER_PATTERNS = [(_whole_word("0"), "zero"), (_whole_word("none"), "zero")]
_NUMBER_PATTERNS += [(_whole_word(str(n)), word) for n, word in enumerate(_NUMBER_WORDS) if n > 0]
_NUMBER_PATTERNS += [(_whole_word("23"), "twenty-three")]


def clean_answer(text: str) -> str:
    """Normalise one answer the LEO/ScanQA way (see the module docstring); returns the cleaned text."""
    text = text.lower()
    text = re.sub(r"[ ]+$", "", text)
    text = re.sub(r"^[ ]+", "", text)
    text = re.sub(r" {2,}", " ", text)
    text = re.sub(r"\.[ ]{2,}", ". ", text)
    # This also deletes non-ASCII characters, so the reference's later "ç"->"c" and "’"->"'"
    # replacements can never fire and are omitted.
    text = re.sub(r"[^a-zA-Z0-9,'\s\-:]+", "", text)
    for pattern, replacement in _TYPO_PATTERNS:
        text = pattern.sub(replacement, text)
    text = re.sub(r"\bo'[ ]+clock\b", "o'clock", text)
    for pattern, replacement in _NUMBER_PATTERNS:
        text = pattern.sub(replacement, text)
    # Object labels with an index ("no1", "mat2") lose the trailing digit.
    text = re.sub(r"\b([a-zA-Z]+)([0-9])\b", r"\g<1>", text)
    for article in ("a", "an", "the"):
        text = re.sub(rf"\b{article}\b ([a-zA-Z]+)", r"\g<1>", text)
    text = re.sub(r"\bbackwards\b", "backward", text)
    return text


def answer_match(prediction: str, references: list[str]) -> tuple[bool, bool]:
    """(exact, refined) match of a cleaned prediction against cleaned references.

    Exact: the prediction equals one reference. Refined: exact, or, after removing all
    whitespace, the prediction contains a reference or is contained in one. An empty
    string never matches: the community code lets "" be contained in every reference (an
    empty answer would count as refined-correct); this deviation only affects empty outputs.
    """
    squeezed = "".join(prediction.split())
    if not squeezed:
        return False, False
    if prediction in references:
        return True, True
    for reference in references:
        squeezed_reference = "".join(reference.split())
        if not squeezed_reference:
            continue
        if squeezed in squeezed_reference or squeezed_reference in squeezed:
            return False, True
    return False, False
