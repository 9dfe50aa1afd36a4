"""The benchmarks `vlynx eval` and `vlynx score` know, each with all its rules in one class.

A `Benchmark` turns a record into its reference fields by one rule (`reference`), whether the
record comes from the benchmark's community reference file (`read_references`) or is an entry
of a LLaVA/PAVE annotation file (`reference_from_entry`); it phrases a question for the model
(`prompt`) and scores generated answers (`score`). References are id -> reference fields,
predictions id -> generated text, paired by id (see `pair_by_id`: missing predictions count as
wrong and are listed, extra ones are listed and ignored); metrics are in percent.
"""
from __future__ import annotations

import abc
import ast
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from vlynx.errors import VlynxError
from vlynx.inputs import read_annotations, read_json_records
from vlynx.metrics.captions import caption_scores
from vlynx.metrics.choices import LETTERS, choice_letter
from vlynx.metrics.cleaning import answer_match, clean_answer
from vlynx.metrics.records import (
    add_unique,
    dstc7_last_answers,
    first_field,
    is_dstc7,
    read_predictions,
    require_field,
)
from vlynx.metrics.report import ScoreReport, pair_by_id, percent

References = dict[str, dict[str, Any]]
Metrics = tuple[dict[str, float], dict[str, int], list[str]]  # metrics, how many each averages, unparsed ids

SQA3D_TYPES = ("What", "Is", "How", "Can", "Which", "Other")  # LLaVA-3D's type codes 0..5, in order
MUSIC_AVQA_TYPES = {
    "Audio": ("Counting", "Comparative"),
    "Visual": ("Counting", "Location"),
    "Audio-Visual": ("Existential", "Counting", "Location", "Comparative", "Temporal"),
}
PROFICIENCY_CLASSES = ("novice", "early expert", "intermediate expert", "late expert")
MULTIPLE_CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
PROFICIENCY_QUESTION = ("What is the proficiency level of the person demonstrating this task? Answer with one of: "
                        "Novice, Early Expert, Intermediate Expert, Late Expert.")


class Benchmark(abc.ABC):
    """One benchmark's rules: reading its references, prompting for it, scoring it."""

    name: ClassVar[str]
    id_keys: ClassVar[tuple[str, ...]] = ("question_id", "id")  # a reference-file record's id
    answer_keys: ClassVar[tuple[str, ...]] = ()  # a reference-file record's answer
    # An annotation entry's own answer field, preferred to its conversation's last answer.
    entry_answer_keys: ClassVar[tuple[str, ...]] = ()

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


class ScanQA(Benchmark):
    """ScanQA: EM@1 and refined EM@1 on LEO-cleaned answers (best over the references), and
    BLEU-1..4, METEOR, ROUGE-L, CIDEr on the cleaned strings (PTB-tokenized, all references).

    References: LLaVA-3D `llava3d_scanqa_val_answer.json` `[{"question_id", "text": [answers]}]`,
    the original `ScanQA_v1.0_val.json` `[{"question_id", "answers": [...]}]`, or an annotation
    entry's `answers` list (else its last gpt turn).
    """

    name = "scanqa"
    answer_keys = ("text", "answers")
    entry_answer_keys = ("answers",)

    def reference(self, record: dict[str, Any], answer: Any, question: str | None) -> dict[str, Any]:
        return {"answers": self._answer_list(answer)}

    def compute_metrics(self, references: References, predictions: Mapping[str, str], meteor: bool) -> Metrics:
        exact = refined = 0
        cleaned_predictions: dict[str, str] = {}
        cleaned_references: dict[str, list[str]] = {}
        for item_id, reference in references.items():
            answers = [clean_answer(a) for a in reference["answers"]]
            # A missing prediction scores as an empty answer: wrong, and zero in the caption metrics.
            prediction = clean_answer(predictions[item_id]) if item_id in predictions else ""
            is_exact, is_refined = answer_match(prediction, answers)
            exact += is_exact
            refined += is_refined
            cleaned_predictions[item_id] = prediction
            cleaned_references[item_id] = [a.replace("\n", " ").strip() for a in answers]
        n = len(references)
        metrics = {"EM@1": percent(exact, n), "EM@1 refined": percent(refined, n)}
        captions = caption_scores(cleaned_references, cleaned_predictions, meteor)
        metrics.update({name: 100.0 * value for name, value in captions.items()})
        return metrics, dict.fromkeys(metrics, n), []


def sqa3d_question_type(question: str) -> str:
    """SQA3D question type from the question's first characters, as the SQA3D/LEO evaluators
    decide it (a prefix test: "Isn't ..." is an "Is" question)."""
    head = question.lstrip().lower()
    for name in SQA3D_TYPES[:-1]:
        if head.startswith(name.lower()):
            return name
    return "Other"


class SQA3D(Benchmark):
    """SQA3D: EM@1 and refined EM@1 (single LEO-cleaned reference), overall and per question type.

    References: LLaVA-3D `llava3d_sqa3d_test_answer.json` `[{"question_id", "text": answer, "type": 0..5}]`
    (0 What, 1 Is, 2 How, 3 Can, 4 Which, 5 Other; a digit string or a type name works too), or an
    annotation entry's last gpt turn. Without a `type`, the type comes from the `question` field, else
    (annotations) from the last question.
    """

    name = "sqa3d"
    answer_keys = ("text", "answer", "answers")

    def reference(self, record: dict[str, Any], answer: Any, question: str | None) -> dict[str, Any]:
        answer = self._answer(answer)
        if isinstance(answer, list):
            if len(answer) != 1:
                raise ValueError(f"has {len(answer)} answers; SQA3D has a single reference answer")
            answer = answer[0]
        # SQA3D prompts put the situation first, so a separate 'question' field tells the type better.
        kind = self.question_type(record.get("type"), record.get("question", question))
        return {"answer": str(answer), "type": kind}

    def entry_prompt(self, entry: dict[str, Any]) -> str:
        situation = entry.get("situation")
        if situation is None:
            raise ValueError("has no 'situation' (SQA3D asks a question in a situation)")
        return f"{str(situation).strip()} {entry_question(entry)}"

    @staticmethod
    def question_type(code: Any, question: str | None) -> str:
        """One of SQA3D_TYPES: from a type code (0..5 or its digit string, or a type name), else from `question`."""
        if code is None:
            if question is None:
                raise ValueError("has neither 'type' nor 'question' to tell its question type")
            return sqa3d_question_type(str(question))
        if isinstance(code, int) or (isinstance(code, str) and code.strip().isdigit()):
            if not 0 <= int(code) < len(SQA3D_TYPES):
                raise ValueError(f"has question type {code}, not 0..{len(SQA3D_TYPES) - 1}")
            return SQA3D_TYPES[int(code)]
        return sqa3d_question_type(str(code))

    def compute_metrics(self, references: References, predictions: Mapping[str, str], meteor: bool) -> Metrics:
        hits = {kind: [0, 0, 0] for kind in SQA3D_TYPES}  # exact, refined, count
        for item_id, reference in references.items():
            prediction = clean_answer(predictions[item_id]) if item_id in predictions else ""
            is_exact, is_refined = answer_match(prediction, [clean_answer(reference["answer"])])
            tally = hits[reference["type"]]
            tally[0] += is_exact
            tally[1] += is_refined
            tally[2] += 1
        n = len(references)
        metrics = {"EM@1": percent(sum(t[0] for t in hits.values()), n),
                   "EM@1 refined": percent(sum(t[1] for t in hits.values()), n)}
        counts = dict.fromkeys(metrics, n)
        for kind, (exact, refined, count) in hits.items():
            if count:
                metrics[f"EM@1 {kind}"] = percent(exact, count)
                metrics[f"EM@1 refined {kind}"] = percent(refined, count)
                counts[f"EM@1 {kind}"] = counts[f"EM@1 refined {kind}"] = count
        return metrics, counts, []


class AVSD(Benchmark):
    """AVSD (DSTC7): BLEU-1..4, METEOR, ROUGE-L, CIDEr of the last turn's answer, PTB-tokenized,
    against its reference(s); a missing answer scores as an empty string.

    References: the DSTC7 test file `{"dialogs": [{"image_id", "dialog": [{"question", "answer"}, ...]}]}`
    (the last turn's answer; a list there is taken as several references), or an annotation entry's
    last gpt turn. The prompt carries an entry's earlier turns as "Q: ...\\nA: ..." lines.
    """

    name = "avsd"

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
    entry with that `type` and an `anser` (else its last gpt turn).
    """

    name = "music-avqa"
    answer_keys = ("anser", "answer")
    entry_answer_keys = ("anser",)

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


def proficiency_class(text: str) -> str | None:
    """One of PROFICIENCY_CLASSES named in `text` (by novice/early/intermediate/late), or None
    when none or several are named."""
    words = set(clean_answer(text).replace("-", " ").replace("/", " ").split())
    named = [name for name in PROFICIENCY_CLASSES if name.split()[0] in words]
    return named[0] if len(named) == 1 else None


class EgoExoProficiency(Benchmark):
    """Ego-Exo4D demonstrator proficiency: 4-class accuracy (novice, early/intermediate/late expert),
    overall and per reference class; the class is read with `proficiency_class`.

    References: `proficiency_demonstrator_{val,test}.json` `{"annotations": [{"take_uid",
    "proficiency_score": "Novice" | "Early Expert" | "Intermediate Expert" | "Late Expert"}]}` (a plain
    list, and `id`/`label`/`answer` keys, too), or an annotation entry's `proficiency_score` (else its
    last gpt turn). An entry without a question is asked PROFICIENCY_QUESTION.
    """

    name = "egoexo-proficiency"
    id_keys = ("take_uid", "id", "question_id")
    answer_keys = ("proficiency_score", "label", "answer")
    entry_answer_keys = ("proficiency_score",)

    def reference(self, record: dict[str, Any], answer: Any, question: str | None) -> dict[str, Any]:
        label = str(self._answer(answer))
        kind = proficiency_class(label)
        if kind is None:
            raise ValueError(f"has label {label!r}, not one of {', '.join(PROFICIENCY_CLASSES)}")
        return {"answer": kind}

    def prompt(self, question: str, history: list[tuple[str, str]], reference: dict[str, Any]) -> str:
        return question or PROFICIENCY_QUESTION

    def entry_prompt(self, entry: dict[str, Any]) -> str:
        return str(entry.get("question") or "").strip() or PROFICIENCY_QUESTION

    def compute_metrics(self, references: References, predictions: Mapping[str, str], meteor: bool) -> Metrics:
        per_class = {name: [0, 0] for name in PROFICIENCY_CLASSES}
        unparsed = []
        for item_id, reference in references.items():
            predicted = None
            if item_id in predictions:
                predicted = proficiency_class(predictions[item_id])
                if predicted is None:
                    unparsed.append(item_id)
            per_class[reference["answer"]][0] += predicted == reference["answer"]
            per_class[reference["answer"]][1] += 1
        n = len(references)
        metrics = {"Accuracy": percent(sum(t[0] for t in per_class.values()), n)}
        counts = {"Accuracy": n}
        for name, (right, count) in per_class.items():
            if count:
                metrics[f"Accuracy {name}"], counts[f"Accuracy {name}"] = percent(right, count), count
        return metrics, counts, unparsed


BENCHMARKS: dict[str, Benchmark] = {benchmark.name: benchmark for benchmark in (
    AVSD(), AVQA(), MusicAVQA(), ScanQA(), SQA3D(), EgoExoProficiency())}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called `name`."""
    if name not in BENCHMARKS:
        raise VlynxError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def score_files(benchmark: str, predictions_path: str | Path, references_path: str | Path,
                meteor: bool = True) -> ScoreReport:
    """Read a predictions file and a references file in the benchmark's community format and score them."""
    spec = get_benchmark(benchmark)
    return spec.score(spec.read_references(references_path), read_predictions(predictions_path), meteor=meteor)
