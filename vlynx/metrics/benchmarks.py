"""Per-benchmark scorers and the community file formats they read.

Every scorer takes `references` (id -> reference fields, as the matching `read_*_references`
returns them) and `predictions` (id -> generated text), pairs them by id (see `pair_by_id`:
missing predictions count as wrong and are listed, extra ones are listed and ignored) and
returns a `ScoreReport` with metrics in percent.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlynx.errors import VlynxError
from vlynx.metrics.captions import caption_scores
from vlynx.metrics.choices import LETTERS, choice_letter
from vlynx.metrics.cleaning import answer_match, clean_answer
from vlynx.metrics.report import ScoreReport, pair_by_id, percent

References = dict[str, dict[str, Any]]

PREDICTION_ID_KEYS = ("question_id", "id", "image_id", "take_uid")
PREDICTION_TEXT_KEYS = ("text", "pred", "prediction", "caption", "response")
SQA3D_TYPES = ("What", "Is", "How", "Can", "Which", "Other")
MUSIC_AVQA_TYPES = {
    "Audio": ("Counting", "Comparative"),
    "Visual": ("Counting", "Location"),
    "Audio-Visual": ("Existential", "Counting", "Location", "Comparative", "Temporal"),
}
PROFICIENCY_CLASSES = ("novice", "early expert", "intermediate expert", "late expert")


# ---------------------------------------------------------------- file reading

def load_json_records(path: str | Path) -> Any:
    """A JSON document, or the list of objects of a JSONL file (whatever its suffix)."""
    path = Path(path)
    if not path.is_file():
        raise VlynxError("file not found", path)
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise VlynxError(f"line {number} is neither part of a JSON document nor a JSONL record: {error.msg}",
                             path) from error
    return records


def _records(path: str | Path, data: Any, what: str) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        containers = [key for key in ("annotations", "data", "questions") if isinstance(data.get(key), list)]
        # A one-line JSONL file parses as a single object.
        data = data[containers[0]] if containers else [data]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise VlynxError(f"expected a list of {what} objects (JSON list or JSONL)", path)
    return data


def _field(record: dict[str, Any], keys: tuple[str, ...], path: str | Path, index: int, what: str) -> Any:
    for key in keys:
        if key in record and record[key] is not None:
            return record[key]
    raise VlynxError(f"record {index} has no {what} (looked for {', '.join(keys)})", path)


def _add_unique(table: dict[str, Any], item_id: Any, value: Any, path: str | Path) -> None:
    item_id = str(item_id)
    if item_id in table:
        raise VlynxError(f"id {item_id!r} appears more than once; ids must be unique", path)
    table[item_id] = value


def read_predictions(path: str | Path) -> dict[str, str]:
    """id -> generated text from a predictions file.

    Reads JSONL or a JSON list of objects with an id (`question_id`, `id`, `image_id` or
    `take_uid`) and a text (`text`, `pred`, `prediction`, `caption` or `response`) — the
    LLaVA-3D/LEO `{"question_id", "text"}` lines and PAVE's `{"image_id", "caption"}` lists —
    or a DSTC7-AVSD result file `{"dialogs": [{"image_id", "dialog": [..., {"answer"}]}]}`
    (the last turn's answer). Duplicate ids are an error.
    """
    data = load_json_records(path)
    if isinstance(data, dict) and isinstance(data.get("dialogs"), list):
        return {item_id: refs[0] for item_id, refs in _dstc7_last_answers(path, data).items()}
    predictions: dict[str, str] = {}
    for index, record in enumerate(_records(path, data, "prediction")):
        item_id = _field(record, PREDICTION_ID_KEYS, path, index, "id")
        text = _field(record, PREDICTION_TEXT_KEYS, path, index, "prediction text")
        _add_unique(predictions, item_id, str(text), path)
    return predictions


def read_scanqa_references(path: str | Path) -> References:
    """ScanQA references: LLaVA-3D `llava3d_scanqa_val_answer.json` `[{"question_id", "text": [answers]}]`,
    or the original `ScanQA_v1.0_val.json` `[{"question_id", "answers": [...]}]`."""
    references: References = {}
    for index, record in enumerate(_records(path, load_json_records(path), "reference")):
        answers = _field(record, ("text", "answers"), path, index, "answers")
        answers = [answers] if isinstance(answers, str) else [str(a) for a in answers]
        if not answers:
            raise VlynxError(f"record {index} has an empty answer list", path)
        _add_unique(references, _field(record, ("question_id", "id"), path, index, "question_id"),
                    {"answers": answers}, path)
    return references


def sqa3d_question_type(question: str) -> str:
    """SQA3D question type from the question's first characters, as the SQA3D/LEO evaluators
    decide it (a prefix test: "Isn't ..." is an "Is" question)."""
    head = question.lstrip().lower()
    for name in SQA3D_TYPES[:-1]:
        if head.startswith(name.lower()):
            return name
    return "Other"


def read_sqa3d_references(path: str | Path) -> References:
    """SQA3D references: LLaVA-3D `llava3d_sqa3d_test_answer.json` `[{"question_id", "text": answer,
    "type": 0..5}]` (0 What, 1 Is, 2 How, 3 Can, 4 Which, 5 Other); without `type`, the type
    comes from a `question` field. Single reference per question."""
    references: References = {}
    for index, record in enumerate(_records(path, load_json_records(path), "reference")):
        answer = _field(record, ("text", "answer", "answers"), path, index, "answer")
        if isinstance(answer, list):
            if len(answer) != 1:
                raise VlynxError(f"record {index}: SQA3D has a single reference answer, got {len(answer)}", path)
            answer = answer[0]
        if "type" in record:
            kind = record["type"]
            if isinstance(kind, int) or (isinstance(kind, str) and kind.isdigit()):
                if not 0 <= int(kind) < len(SQA3D_TYPES):
                    raise VlynxError(f"record {index}: question type {kind} is not 0..5", path)
                kind = SQA3D_TYPES[int(kind)]
            else:
                kind = sqa3d_question_type(str(kind))
        elif "question" in record:
            kind = sqa3d_question_type(str(record["question"]))
        else:
            raise VlynxError(f"record {index} has neither 'type' nor 'question' to tell its question type", path)
        _add_unique(references, _field(record, ("question_id", "id"), path, index, "question_id"),
                    {"answer": str(answer), "type": kind}, path)
    return references


def _dstc7_last_answers(path: str | Path, data: dict[str, Any]) -> dict[str, list[str]]:
    answers: dict[str, list[str]] = {}
    for index, dialog in enumerate(data["dialogs"]):
        turns = dialog.get("dialog") if isinstance(dialog, dict) else None
        if not turns or "image_id" not in dialog:
            raise VlynxError(f"dialog {index} needs an 'image_id' and a non-empty 'dialog' list", path)
        last = turns[-1].get("answer")
        if last is None:
            raise VlynxError(f"dialog {index}: the last turn has no 'answer'", path)
        _add_unique(answers, dialog["image_id"], [last] if isinstance(last, str) else [str(a) for a in last], path)
    return answers


def read_avsd_references(path: str | Path) -> References:
    """AVSD references: DSTC7 test format `{"dialogs": [{"image_id", "dialog": [{"question", "answer"}, ...]}]}`;
    the reference is the last turn's answer (a list there is taken as several references)."""
    data = load_json_records(path)
    if not (isinstance(data, dict) and isinstance(data.get("dialogs"), list)):
        raise VlynxError("expected a DSTC7-AVSD file: {\"dialogs\": [{\"image_id\", \"dialog\": [...]}]}", path)
    return {item_id: {"answers": refs} for item_id, refs in _dstc7_last_answers(path, data).items()}


def read_avqa_references(path: str | Path) -> References:
    """AVQA references: the dataset's `val_qa.json` `[{"id", "video_name", "question_text",
    "multi_choice": [4 options], "answer": index 0-3}]` (a letter "A"-"D" is accepted too)."""
    references: References = {}
    for index, record in enumerate(_records(path, load_json_records(path), "reference")):
        choices = [str(c) for c in _field(record, ("multi_choice", "choices", "options"), path, index, "choices")]
        answer = _field(record, ("answer",), path, index, "answer")
        _add_unique(references, _field(record, ("id", "question_id"), path, index, "id"),
                    {"answer": _letter(answer, len(choices), path, index), "choices": choices}, path)
    return references


def _letter(answer: Any, num_choices: int, path: str | Path, index: int) -> str:
    letters = LETTERS[:num_choices]
    if isinstance(answer, int) and 0 <= answer < num_choices:
        return letters[answer]
    if isinstance(answer, str) and answer.strip().upper() in letters and answer.strip():
        return answer.strip().upper()
    if isinstance(answer, str) and answer.strip().isdigit() and int(answer) < num_choices:
        return letters[int(answer)]
    raise VlynxError(f"record {index}: answer {answer!r} is not an option index or letter", path)


def music_avqa_type(value: Any) -> tuple[str, str]:
    """(modality group, question type) from MUSIC-AVQA's `type` field, e.g. '["Audio", "Counting"]'."""
    if isinstance(value, str):
        value = json.loads(value)
    group, kind = value
    if group not in MUSIC_AVQA_TYPES or kind not in MUSIC_AVQA_TYPES[group]:
        raise ValueError(f"unknown MUSIC-AVQA question type {group}/{kind}")
    return group, kind


def read_music_avqa_references(path: str | Path) -> References:
    """MUSIC-AVQA references: the dataset's `avqa-test.json` `[{"question_id", "video_id", "type":
    "[\\"Audio\\", \\"Counting\\"]", "question_content", "anser"}]` (`answer` accepted for `anser`)."""
    references: References = {}
    for index, record in enumerate(_records(path, load_json_records(path), "reference")):
        try:
            group, kind = music_avqa_type(_field(record, ("type",), path, index, "type"))
        except (ValueError, TypeError) as error:
            raise VlynxError(f"record {index}: bad 'type' {record.get('type')!r}: {error}", path) from error
        answer = _field(record, ("anser", "answer"), path, index, "answer")
        _add_unique(references, _field(record, ("question_id", "id"), path, index, "question_id"),
                    {"answer": str(answer), "group": group, "type": kind}, path)
    return references


def proficiency_class(text: str) -> str | None:
    """One of PROFICIENCY_CLASSES named in `text` (by novice/early/intermediate/late), or None
    when none or several are named."""
    words = set(clean_answer(text).replace("-", " ").replace("/", " ").split())
    named = [name for name in PROFICIENCY_CLASSES if name.split()[0] in words]
    return named[0] if len(named) == 1 else None


def read_egoexo_proficiency_references(path: str | Path) -> References:
    """Ego-Exo4D demonstrator proficiency references: `proficiency_demonstrator_{val,test}.json`
    `{"annotations": [{"take_uid", "proficiency_score": "Novice" | "Early Expert" |
    "Intermediate Expert" | "Late Expert"}]}` (a plain list, and `id`/`label`/`answer` keys, too)."""
    references: References = {}
    for index, record in enumerate(_records(path, load_json_records(path), "reference")):
        label = str(_field(record, ("proficiency_score", "label", "answer"), path, index, "proficiency label"))
        kind = proficiency_class(label)
        if kind is None:
            raise VlynxError(f"record {index}: {label!r} is not one of {', '.join(PROFICIENCY_CLASSES)}", path)
        _add_unique(references, _field(record, ("take_uid", "id", "question_id"), path, index, "take_uid"),
                    {"answer": kind}, path)
    return references


# ---------------------------------------------------------------- scorers

def _report(name: str, references: Mapping[str, Any], predictions: Mapping[str, str],
            metrics: dict[str, float], counts: dict[str, int], unparsed: list[str] | None = None) -> ScoreReport:
    pairing = pair_by_id(references, predictions)
    return ScoreReport(benchmark=name, metrics=metrics, counts=counts, num_references=len(references),
                       num_predictions=len(predictions), missing=pairing.missing, extra=pairing.extra,
                       unparsed=sorted(unparsed or []))


def _require(references: Mapping[str, Any], name: str) -> None:
    if not references:
        raise VlynxError(f"{name}: no references to score against")


def score_scanqa(references: References, predictions: Mapping[str, str], meteor: bool = True) -> ScoreReport:
    """ScanQA: EM@1 and refined EM@1 on LEO-cleaned answers (best over the references), and
    BLEU-1..4, METEOR, ROUGE-L, CIDEr on the cleaned strings (PTB-tokenized, all references)."""
    _require(references, "scanqa")
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
    metrics.update({k: 100.0 * v for k, v in caption_scores(cleaned_references, cleaned_predictions, meteor).items()})
    return _report("scanqa", references, predictions, metrics, dict.fromkeys(metrics, n))


def score_sqa3d(references: References, predictions: Mapping[str, str]) -> ScoreReport:
    """SQA3D: EM@1 and refined EM@1 (single LEO-cleaned reference), overall and per question type."""
    _require(references, "sqa3d")
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
    return _report("sqa3d", references, predictions, metrics, counts)


def score_avsd(references: References, predictions: Mapping[str, str], meteor: bool = True) -> ScoreReport:
    """AVSD (DSTC7): BLEU-1..4, METEOR, ROUGE-L, CIDEr of the last turn's answer, PTB-tokenized,
    against its reference(s); a missing answer scores as an empty string."""
    _require(references, "avsd")
    refs = {item_id: reference["answers"] for item_id, reference in references.items()}
    hyps = {item_id: predictions.get(item_id, "") for item_id in references}
    metrics = {k: 100.0 * v for k, v in caption_scores(refs, hyps, meteor).items()}
    return _report("avsd", references, predictions, metrics, dict.fromkeys(metrics, len(references)))


def score_avqa(references: References, predictions: Mapping[str, str]) -> ScoreReport:
    """AVQA: 4-way multiple-choice accuracy; the chosen letter is read with `choice_letter`."""
    _require(references, "avqa")
    correct, unparsed = 0, []
    for item_id, reference in references.items():
        if item_id not in predictions:
            continue
        letter = choice_letter(predictions[item_id], len(reference["choices"]), reference["choices"])
        if letter is None:
            unparsed.append(item_id)
        correct += letter == reference["answer"]
    n = len(references)
    return _report("avqa", references, predictions, {"Accuracy": percent(correct, n)}, {"Accuracy": n}, unparsed)


def score_music_avqa(references: References, predictions: Mapping[str, str]) -> ScoreReport:
    """MUSIC-AVQA: accuracy per question type, per modality group (Audio, Visual, Audio-Visual,
    pooled over its questions) and overall. A prediction is right when the reference answer,
    lower-cased, is a substring of the lower-cased prediction (DESIGN.md section 7)."""
    _require(references, "music-avqa")
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
    return _report("music-avqa", references, predictions, metrics, counts)


def score_egoexo_proficiency(references: References, predictions: Mapping[str, str]) -> ScoreReport:
    """Ego-Exo4D demonstrator proficiency: 4-class accuracy (novice, early/intermediate/late
    expert), overall and per reference class; the class is read with `proficiency_class`."""
    _require(references, "egoexo-proficiency")
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
    return _report("egoexo-proficiency", references, predictions, metrics, counts, unparsed)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark `vlynx score` and `vlynx eval` know: how to read its references and score them."""

    name: str
    read_references: Callable[[str | Path], References]
    score: Callable[..., ScoreReport]
    multiple_choice: bool = False
    caption_metrics: bool = False


BENCHMARKS: dict[str, Benchmark] = {
    "avsd": Benchmark("avsd", read_avsd_references, score_avsd, caption_metrics=True),
    "avqa": Benchmark("avqa", read_avqa_references, score_avqa, multiple_choice=True),
    "music-avqa": Benchmark("music-avqa", read_music_avqa_references, score_music_avqa),
    "scanqa": Benchmark("scanqa", read_scanqa_references, score_scanqa, caption_metrics=True),
    "sqa3d": Benchmark("sqa3d", read_sqa3d_references, score_sqa3d),
    "egoexo-proficiency": Benchmark("egoexo-proficiency", read_egoexo_proficiency_references,
                                    score_egoexo_proficiency),
}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called `name`."""
    if name not in BENCHMARKS:
        raise VlynxError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def score_files(benchmark: str, predictions_path: str | Path, references_path: str | Path,
                meteor: bool = True) -> ScoreReport:
    """Read a predictions file and a references file in the benchmark's community format and score them."""
    spec = get_benchmark(benchmark)
    references = spec.read_references(references_path)
    predictions = read_predictions(predictions_path)
    if spec.caption_metrics:
        return spec.score(references, predictions, meteor=meteor)
    return spec.score(references, predictions)
