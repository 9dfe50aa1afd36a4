"""Ego-Exo4D demonstrator proficiency: a 4-class question about a whole take."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlynx.metrics.benchmark import Benchmark, Metrics, References
from vlynx.metrics.cleaning import clean_answer
from vlynx.metrics.report import percent

PROFICIENCY_CLASSES = ("novice", "early expert", "intermediate expert", "late expert")
PROFICIENCY_QUESTION = ("What is the proficiency level of the person demonstrating this task? Answer with one of: "
                        "Novice, Early Expert, Intermediate Expert, Late Expert.")


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
    alias_keys = ("take_uid",)  # the authors' predictions name a take by `image_id` = its take_uid

    def has_own_question(self, entry: dict[str, Any]) -> bool:
        # A take carries no question of its own: without a conversation it is asked PROFICIENCY_QUESTION.
        return entry.get("question") is not None or not entry.get("conversations")

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


