"""AVUT (Yang et al., 2025), the audio-centric video understanding benchmark of the paper's Table B4:
4-way multiple choice, trained on AV-Gemini and evaluated on AV-Human."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlynx.metrics.audio_visual import AVQA, MULTIPLE_CHOICE_INSTRUCTION
from vlynx.metrics.benchmark import Benchmark, Metrics, References, entry_question, options_text
from vlynx.metrics.choices import LETTERS, choice_letter
from vlynx.metrics.report import percent

OPTION_KEYS = ("option_A", "option_B", "option_C", "option_D")


def avut_options(record: dict[str, Any]) -> list[str]:
    """The four options of an AVUT record (`option_A` .. `option_D`); ValueError when one is missing."""
    missing = [key for key in OPTION_KEYS if record.get(key) is None]
    if missing:
        raise ValueError(f"has no {', '.join(missing)}")
    return [str(record[key]) for key in OPTION_KEYS]


class AVUT(Benchmark):
    """AVUT: multiple-choice accuracy, overall and per `task_type`; the chosen letter is read with
    `choice_letter`.

    References: the release's `AV_Human_data.json` `[{"QA_id", "video_id", "task_type", "question",
    "option_A".."option_D", "answer": "A".."D", "video_path"}]`, or a prepared entry with the same fields
    (`vlynx prepare avut`). The prompt lists the options ("A. ...") and asks for the letter, as AVQA's.
    """

    name = "avut"
    id_keys = ("QA_id", "id", "question_id")
    answer_keys = ("answer",)
    entry_answer_keys = ("answer",)
    alias_keys = ("QA_id",)
    video_id_keys = ("image_id", "video_id")

    def reference(self, record: dict[str, Any], answer: Any, question: str | None) -> dict[str, Any]:
        choices = avut_options(record)
        return {"answer": AVQA.answer_letter(self._answer(answer), choices), "choices": choices,
                "task_type": str(record.get("task_type") or "unknown")}

    def option_labels(self, reference: dict[str, Any]) -> list[str] | None:
        return list(LETTERS[:len(reference["choices"])])

    def entry_prompt(self, entry: dict[str, Any]) -> str:
        return "\n".join((entry_question(entry), options_text(avut_options(entry)), MULTIPLE_CHOICE_INSTRUCTION))

    def compute_metrics(self, references: References, predictions: Mapping[str, str], meteor: bool) -> Metrics:
        tallies: dict[str, list[int]] = {}  # task type -> [right, count]
        unparsed = []
        for item_id, reference in references.items():
            letter = None
            if item_id in predictions:
                letter = choice_letter(predictions[item_id], len(reference["choices"]), reference["choices"])
                if letter is None:
                    unparsed.append(item_id)
            tally = tallies.setdefault(reference["task_type"], [0, 0])
            tally[0] += letter == reference["answer"]
            tally[1] += 1
        n = len(references)
        metrics = {"Accuracy": percent(sum(t[0] for t in tallies.values()), n)}
        counts = {"Accuracy": n}
        for task_type, (right, count) in sorted(tallies.items()):
            metrics[f"Accuracy {task_type}"], counts[f"Accuracy {task_type}"] = percent(right, count), count
        return metrics, counts, unparsed
