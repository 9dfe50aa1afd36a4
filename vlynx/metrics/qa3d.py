"""The 3D question-answering benchmarks: ScanQA and SQA3D (ScanNet scenes)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlynx.metrics.benchmark import Benchmark, Metrics, References, entry_question
from vlynx.metrics.captions import caption_scores
from vlynx.metrics.cleaning import answer_match, clean_answer
from vlynx.metrics.report import percent

SQA3D_TYPES = ("What", "Is", "How", "Can", "Which", "Other")  # LLaVA-3D's type codes 0..5, in order


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
    (0 What, 1 Is, 2 How, 3 Can, 4 Which, 5 Other; a digit string or a type name works too), or a prepared
    entry's `answers` (a one-string list; else its last gpt turn) and `type`. Without a `type`, the type
    comes from the record's `question` field; never from the prompt, which starts with the situation.
    The release's own answer objects (`[{"answer", "answer_id"}]`) are refused: `vlynx prepare sqa3d`
    turns them into strings. The prompt is the situation, then the question.
    """

    name = "sqa3d"
    answer_keys = ("text", "answer", "answers")
    entry_answer_keys = ("answers",)

    def reference(self, record: dict[str, Any], answer: Any, question: str | None) -> dict[str, Any]:
        answer = self._answer(answer)
        if isinstance(answer, list):
            if len(answer) != 1:
                raise ValueError(f"has {len(answer)} answers; SQA3D has a single reference answer")
            answer = answer[0]
        if isinstance(answer, dict | list):
            raise ValueError(f"has an answer that is not a string ({answer!r}, the release's own answer "
                             "format): run `vlynx prepare sqa3d` to write entries with string answers")
        # Not the last question: an SQA3D prompt puts the situation first.
        kind = self.question_type(record.get("type"), record.get("question"))
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
                raise ValueError("has neither 'type' nor 'question' to tell its question type (the prompt "
                                 "starts with the situation); run `vlynx prepare sqa3d` to write both")
            return sqa3d_question_type(str(question))
        if isinstance(code, int) or (isinstance(code, str) and code.strip().isdigit()):
            if not 0 <= int(code) < len(SQA3D_TYPES):
                raise ValueError(f"has question type {code}, not 0..{len(SQA3D_TYPES) - 1}")
            return SQA3D_TYPES[int(code)]
        names = {name.lower(): name for name in SQA3D_TYPES}
        if str(code).strip().lower() not in names:
            raise ValueError(f"has question type {code!r}, not one of {', '.join(SQA3D_TYPES)} or 0..5")
        return names[str(code).strip().lower()]

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


