"""What every benchmark has: the `Benchmark` base class, and the fields of a prepared entry it reads.

A `Benchmark` turns a record into its reference fields by one rule (`reference`), whether the
record comes from the benchmark's community reference file (`read_references`) or is an entry
of a LLaVA/PAVE annotation file (`reference_from_entry`); it phrases a question for the model
(`entry_prompt` for a prepared entry, `prompt` for a hand-made conversation) and scores
generated answers (`score`). References are id -> reference fields, predictions id -> generated
text, paired by id (see `pair_by_id`: missing predictions count as wrong and are listed, extra
ones are listed and ignored); metrics are in percent.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from vlynx.errors import VlynxError
from vlynx.inputs import read_annotations
from vlynx.metrics.choices import LETTERS
from vlynx.metrics.records import add_unique, first_field, require_field
from vlynx.metrics.report import ScoreReport, pair_by_id

References = dict[str, dict[str, Any]]
Metrics = tuple[dict[str, float], dict[str, int], list[str]]  # metrics, how many each averages, unparsed ids


class Benchmark(abc.ABC):
    """One benchmark's rules: reading its references, prompting for it, scoring it."""

    name: ClassVar[str]
    id_keys: ClassVar[tuple[str, ...]] = ("question_id", "id")  # a reference-file record's id
    answer_keys: ClassVar[tuple[str, ...]] = ()  # a reference-file record's answer
    # An annotation entry's own answer field, preferred to its conversation's last answer.
    entry_answer_keys: ClassVar[tuple[str, ...]] = ()
    # Fields of an entry that other tools' prediction files name it by (used when unique).
    alias_keys: ClassVar[tuple[str, ...]] = ("question_id",)
    # Prediction-file id fields that name a video, not a question, for this benchmark: refused.
    video_id_keys: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def reference(self, record: dict[str, Any], answer: Any, question: str | None) -> dict[str, Any]:
        """The reference fields of a record (of a reference file, or an annotation entry), given its
        `answer` (None when it has none) and, for an annotation entry, its last question.
        Raises ValueError saying what is wrong; the caller names the record and the file."""

    @abc.abstractmethod
    def compute_metrics(self, references: References, predictions: Mapping[str, str], meteor: bool) -> Metrics:
        """(metrics in percent, the number of references each averages over, ids whose answer could not be read)."""

    def prompt(self, question: str, history: list[tuple[str, str]], reference: dict[str, Any]) -> str:
        """The user text sent to the model for the last `question` of an entry (after `history` turns)."""
        return question

    def has_own_question(self, entry: dict[str, Any]) -> bool:
        """Whether `entry_prompt` builds the entry's prompt (a prepared entry), rather than its last human turn."""
        return entry.get("question") is not None

    def option_labels(self, reference: dict[str, Any]) -> list[str] | None:
        """The labels a forced-choice answer picks among (e.g. AVQA's letters), None when it has no options."""
        return None

    def entry_prompt(self, entry: dict[str, Any]) -> str:
        """The user text (without `<image>`) for a prepared entry, built from its own fields: the text
        `vlynx prepare` writes into the entry's human turn and `vlynx eval` sends the model.
        Raises ValueError saying which field is missing or wrong."""
        return entry_question(entry)

    def read_references(self, path: str | Path) -> References:
        """id -> reference fields from the benchmark's reference file (formats: the class docstring)."""
        references: References = {}
        for index, record in enumerate(read_annotations(path, "reference")):
            try:
                item_id = require_field(record, self.id_keys, "id")
                reference = self.reference(record, first_field(record, self.answer_keys), None)
            except (ValueError, TypeError) as error:
                raise VlynxError(f"record {index} {error}", path) from error
            add_unique(references, item_id, reference, path)
        return references

    def reference_from_entry(self, entry: dict[str, Any], question: str, answer: str | None) -> dict[str, Any]:
        """The reference of an annotation entry: its own answer field (`entry_answer_keys`) if it has one,
        else `answer`, its conversation's last answer; `question` is its last question."""
        own = first_field(entry, self.entry_answer_keys)
        if own is None and answer is None:
            raise ValueError(f"has no answer (looked for {', '.join((*self.entry_answer_keys, 'a gpt turn'))})")
        return self.reference(entry, answer if own is None else own, question)

    def score(self, references: References, predictions: Mapping[str, str], meteor: bool = True) -> ScoreReport:
        """Score `predictions` against `references`, paired by id; `meteor=False` skips METEOR (caption metrics)."""
        if not references:
            raise VlynxError(f"{self.name}: no references to score against")
        metrics, counts, unparsed = self.compute_metrics(references, predictions, meteor)
        pairing = pair_by_id(references, predictions)
        return ScoreReport(benchmark=self.name, metrics=metrics, counts=counts, num_references=len(references),
                           num_predictions=len(predictions), missing=pairing.missing, extra=pairing.extra,
                           unparsed=sorted(unparsed))

    def _answer(self, answer: Any) -> Any:
        if answer is None:
            raise ValueError(f"has no answer (looked for {', '.join(self.answer_keys)})")
        return answer

    def _answer_list(self, answer: Any) -> list[str]:
        """One reference answer, or a list of them, as a non-empty list of strings."""
        answer = self._answer(answer)
        answers = [str(a) for a in answer] if isinstance(answer, list) else [str(answer)]
        if not answers:
            raise ValueError("has an empty answer list")
        return answers


def entry_question(entry: dict[str, Any]) -> str:
    """A prepared entry's `question` field, as a string; ValueError when it has none."""
    question = entry.get("question")
    if question is None:
        raise ValueError("has no 'question'")
    return str(question).strip()


def options_text(choices: list[str]) -> str:
    """Multiple-choice options as "A. ..." lines."""
    return "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(choices))


