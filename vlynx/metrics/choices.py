"""Reading the chosen option out of a generated multiple-choice answer."""
from __future__ import annotations

import re
from collections.abc import Sequence

from vlynx.metrics.cleaning import clean_answer

LETTERS = "ABCDEFGHIJ"


def choice_letter(text: str, num_choices: int = 4, choices: Sequence[str] | None = None) -> str | None:
    """The option letter ("A", "B", ...) a generated answer picks, or None when it names none.

    Accepted forms, tried in order: the bare letter ("B", "(b)", "B."), a stated answer
    ("Answer: b", "the answer is (C)", "option D"), a leading letter with a delimiter
    ("B. a violin", "(B) a violin"), a parenthesised letter anywhere ("... so (C)"), and, when
    `choices` is given, the text of exactly one option after ScanQA-style cleaning. A plain
    leading "A " is not read as a letter (it is usually the article).
    """
    letters = LETTERS[:num_choices]
    span = f"[{letters}{letters.lower()}]"
    stripped = text.strip()
    match = (
        re.fullmatch(rf"\(?({span})\)?[.):]?", stripped)
        # "the answer is a dog" must not read as A: a lower-case letter needs a delimiter.
        or re.search(rf"\b(?:answer|option|choice)\b(?:\s+is)?\s*[:\-]?\s*\(?({span})(?:\)|[.:,;]|\s*$)",
                     stripped, flags=re.IGNORECASE)
        or re.search(rf"\b(?i:answer|option|choice)\b(?:\s+is)?\s*[:\-]?\s*([{letters}])\s", stripped)
        or re.match(rf"\(?({span})[.):]", stripped)
        or re.search(rf"\(({span})\)", stripped)
    )
    if match:
        return match.group(1).upper()
    if choices:
        cleaned = clean_answer(stripped)
        hits = [letters[i] for i, choice in enumerate(choices[:num_choices]) if clean_answer(str(choice)) == cleaned]
        if len(hits) == 1:
            return hits[0]
    return None
