"""The audio-visual benchmarks: AVSD (dialog captions), AVQA (4-way multiple choice) and MUSIC-AVQA."""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlynx.errors import VlynxError
from vlynx.inputs import read_json_records
from vlynx.metrics.benchmark import Benchmark, Metrics, References, entry_question, options_text
from vlynx.metrics.captions import caption_scores
from vlynx.metrics.choices import LETTERS, choice_letter
from vlynx.metrics.records import dstc7_last_answers, is_dstc7, require_field
from vlynx.metrics.report import percent

MULTIPLE_CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
MUSIC_AVQA_TYPES = {
    "Audio": ("Counting", "Comparative"),
    "Visual": ("Counting", "Location"),
    "Audio-Visual": ("Existential", "Counting", "Location", "Comparative", "Temporal"),
}


class AVSD(Benchmark):
    """AVSD (DSTC7): BLEU-1..4, METEOR, ROUGE-L, CIDEr of the last turn's answer, PTB-tokenized,
    against its reference(s); a missing answer scores as an empty string.

    References: the DSTC7 test file `{"dialogs": [{"image_id", "dialog": [{"question", "answer"}, ...]}]}`
    (the last turn's answer; a list there is taken as several references), or an annotation entry's
    `answers` (else its last gpt turn). The prompt carries an entry's earlier turns as "Q: ...\\nA: ..." lines.
    """

    name = "avsd"
    entry_answer_keys = ("answers",)
    alias_keys = ("image_id",)  # PAVE's and the authors' AVSD predictions: one per dialog, by video id

    def reference(self, record: dict[str, Any], answer: Any, question: str | None) -> dict[str, Any]:
        return {"answers": self._answer_list(answer)}

    def read_references(self, path: str | Path) -> References:
        data = read_json_records(path, "reference file")
        if not is_dstc7(data):
            raise VlynxError("expected a DSTC7-AVSD file: {\"dialogs\": [{\"image_id\", \"dialog\": [...]}]}", path)
        answers = dstc7_last_answers(path, data)
        return {item_id: self.reference({}, last, None) for item_id, last in answers.items()}

    def prompt(self, question: str, history: list[tuple[str, str]], reference: dict[str, Any]) -> str:
        return "\n".join([f"Q: {q}\nA: {a}" for q, a in history] + [question])

    def entry_prompt(self, entry: dict[str, Any]) -> str:
        history = entry.get("history") or []
        if not isinstance(history, list) or not all(isinstance(t, list) and len(t) == 2 for t in history):
            raise ValueError("has a 'history' that is not a list of [question, answer] pairs")
        return self.prompt(entry_question(entry), [(str(q), str(a)) for q, a in history], {})

    def compute_metrics(self, references: References, predictions: Mapping[str, str], meteor: bool) -> Metrics:
        refs = {item_id: reference["answers"] for item_id, reference in references.items()}
        hyps = {item_id: predictions.get(item_id, "") for item_id in references}
        metrics = {k: 100.0 * v for k, v in caption_scores(refs, hyps, meteor).items()}
        return metrics, dict.fromkeys(metrics, len(references)), []


class AVQA(Benchmark):
    """AVQA: 4-way multiple-choice accuracy; the chosen letter is read with `choice_letter`.

    References: the dataset's `val_qa.json` `[{"id", "video_name", "question_text", "multi_choice":
    [4 options], "answer": index 0-3}]`, or an annotation entry with `multi_choice` (or `choices`) and
    an `answer` (else its last gpt turn). The answer may be an option index, a letter, "B. violin" or
    one option's text. The prompt lists the options ("A. ...") unless the question does, then asks
    for the letter.
    """

    name = "avqa"
    id_keys = ("id", "question_id")
    answer_keys = ("answer",)
    entry_answer_keys = ("answer",)
    video_id_keys = ("image_id", "video_name", "video_id")

    def reference(self, record: dict[str, Any], answer: Any, question: str | None) -> dict[str, Any]:
        choices = [str(c) for c in require_field(record, ("multi_choice", "choices", "options"), "choices")]
        return {"answer": self.answer_letter(self._answer(answer), choices), "choices": choices}

    @staticmethod
    def answer_letter(label: Any, choices: list[str]) -> str:
        """The option letter a reference answer names: an option index (0-based, or its digit string), a
        letter ("B", "(b)"), "B. violin", or exactly one option's text."""
        letters = LETTERS[:len(choices)]
        if isinstance(label, int) or (isinstance(label, str) and label.strip().isdigit()):
            if 0 <= int(label) < len(letters):
                return letters[int(label)]
        elif (letter := choice_letter(str(label), len(choices), choices)) is not None:
            return letter
        raise ValueError(f"has answer {label!r}, which names none of its {len(choices)} options "
                         "(give an option index, letter or text)")

    def prompt(self, question: str, history: list[tuple[str, str]], reference: dict[str, Any]) -> str:
        choices = reference["choices"]
        options = options_text(choices)
        if all(f"{LETTERS[i]}." in question for i in range(len(choices))):
            options = ""  # the annotation already lists the options
        return "\n".join(part for part in (question, options, MULTIPLE_CHOICE_INSTRUCTION) if part)

    def option_labels(self, reference: dict[str, Any]) -> list[str] | None:
        return list(LETTERS[:len(reference["choices"])])

    def entry_prompt(self, entry: dict[str, Any]) -> str:
        choices = entry.get("multi_choice")
        if not isinstance(choices, list) or not choices:
            raise ValueError("has no 'multi_choice' list of options")
        return "\n".join((entry_question(entry), options_text([str(c) for c in choices]),
                          MULTIPLE_CHOICE_INSTRUCTION))

    def compute_metrics(self, references: References, predictions: Mapping[str, str], meteor: bool) -> Metrics:
        correct, unparsed = 0, []
        for item_id, reference in references.items():
            if item_id not in predictions:
                continue
            letter = choice_letter(predictions[item_id], len(reference["choices"]), reference["choices"])
            if letter is None:
                unparsed.append(item_id)
            correct += letter == reference["answer"]
        n = len(references)
        return {"Accuracy": percent(correct, n)}, {"Accuracy": n}, unparsed


def music_avqa_type(value: Any) -> tuple[str, str]:
    """(modality group, question type) from MUSIC-AVQA's `type` field, e.g. '["Audio", "Counting"]'."""
    if isinstance(value, str):
        value = json.loads(value)
    group, kind = value
    if group not in MUSIC_AVQA_TYPES or kind not in MUSIC_AVQA_TYPES[group]:
        raise ValueError(f"unknown MUSIC-AVQA question type {group}/{kind}")
    return group, kind


TEMPLATE_PLACEHOLDER = re.compile(r"<[^<>]*>")  # MUSIC-AVQA's <Object>, <LR>, <FL>, ... in question_content


def fill_template(question_content: str, templ_values: list[str] | str) -> str:
    """A MUSIC-AVQA question with its placeholders (`<Object>`, `<LR>`, `<FL>`, ...) filled in order
    from `templ_values` (a list, or its JSON string as the release stores it), as the dataset's own
    code does: the i-th placeholder gets the i-th value. ValueError when the counts differ."""
    values = templ_values
    if isinstance(values, str):
        try:
            values = json.loads(values)
        except json.JSONDecodeError:
            try:  # the dataset's own code reads it as a Python literal (e.g. single quotes)
                values = ast.literal_eval(values)
            except (ValueError, SyntaxError) as error:
                raise ValueError(f"has 'templ_values' {templ_values!r}, not a list") from error
    if not isinstance(values, list):
        raise ValueError(f"has 'templ_values' {templ_values!r}, not a list")
    placeholders = TEMPLATE_PLACEHOLDER.findall(question_content)
    if len(placeholders) != len(values):
        raise ValueError(f"has {len(placeholders)} placeholders in {question_content!r} "
                         f"but {len(values)} 'templ_values' {values!r}")
    remaining = iter(values)
    return TEMPLATE_PLACEHOLDER.sub(lambda _: str(next(remaining)), question_content)


def require_filled(prompt: str) -> str:
    """`prompt`, or a ValueError when a MUSIC-AVQA template placeholder is left in it."""
    left = TEMPLATE_PLACEHOLDER.findall(prompt.replace("<image>", ""))
    if left:
        raise ValueError(f"has unfilled template placeholder(s) {', '.join(left)} in {prompt!r} "
                         "(fill them from 'templ_values', e.g. with `vlynx prepare music-avqa`)")
    return prompt


class MusicAVQA(Benchmark):
    """MUSIC-AVQA: accuracy per question type, per modality group (Audio, Visual, Audio-Visual,
    pooled over its questions) and overall. A prediction is right when the reference answer,
    lower-cased, is a substring of the lower-cased prediction (docs/method.md §7).

    References: the dataset's `avqa-test.json` `[{"question_id", "video_id", "type": "[\\"Audio\\",
    \\"Counting\\"]", "question_content", "anser"}]` (`answer` accepted for `anser`), or an annotation
    entry with that `type` and an `anser` (else its last gpt turn). The prompt is the entry's `question`,
    else its `question_content` filled from `templ_values` (`fill_template`); a placeholder left unfilled
    is an error. Predictions named by a video (`image_id`, `video_id`) are refused: several questions
    share a video.
    """

    name = "music-avqa"
    answer_keys = ("anser", "answer")
    entry_answer_keys = ("anser",)
    video_id_keys = ("image_id", "video_id")

    def reference(self, record: dict[str, Any], answer: Any, question: str | None) -> dict[str, Any]:
        value = record.get("type")
        if value is None:
            raise ValueError("has no 'type' (e.g. '[\"Audio\", \"Counting\"]')")
        try:
            group, kind = music_avqa_type(value)
        except (ValueError, TypeError) as error:
            raise ValueError(f"has a bad 'type' {value!r}: {error}") from error
        return {"answer": str(self._answer(answer)), "group": group, "type": kind}

    def prompt(self, question: str, history: list[tuple[str, str]], reference: dict[str, Any]) -> str:
        return require_filled(question)

    def has_own_question(self, entry: dict[str, Any]) -> bool:
        return entry.get("question") is not None or entry.get("question_content") is not None

    def entry_prompt(self, entry: dict[str, Any]) -> str:
        if entry.get("question") is None and entry.get("question_content") is not None:
            return require_filled(fill_template(str(entry["question_content"]), entry.get("templ_values", [])))
        return require_filled(entry_question(entry))

    def compute_metrics(self, references: References, predictions: Mapping[str, str], meteor: bool) -> Metrics:
        tallies: dict[tuple[str, str], list[int]] = {}
        for item_id, reference in references.items():
            prediction = predictions.get(item_id)
            right = prediction is not None and reference["answer"].lower() in prediction.lower()
            tally = tallies.setdefault((reference["group"], reference["type"]), [0, 0])
            tally[0] += right
            tally[1] += 1
        metrics: dict[str, float] = {}
        counts: dict[str, int] = {}
        for group, kinds in MUSIC_AVQA_TYPES.items():
            group_right = group_count = 0
            for kind in kinds:
                right, count = tallies.get((group, kind), (0, 0))
                if count:
                    metrics[f"{group} {kind}"], counts[f"{group} {kind}"] = percent(right, count), count
                group_right, group_count = group_right + right, group_count + count
            if group_count:
                metrics[f"{group}"], counts[f"{group}"] = percent(group_right, group_count), group_count
        total_right = sum(t[0] for t in tallies.values())
        metrics["Overall"], counts["Overall"] = percent(total_right, len(references)), len(references)
        return metrics, counts, []


