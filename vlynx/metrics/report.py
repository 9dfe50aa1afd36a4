"""Pairing predictions with references by id, and the score report every benchmark returns."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

R = TypeVar("R")


@dataclass
class Pairing:
    """Which reference ids have a prediction (`ids`), which lack one, and which predictions are unknown."""

    ids: list[str]
    missing: list[str]
    extra: list[str]


def pair_by_id(references: Mapping[str, Any], predictions: Mapping[str, Any]) -> Pairing:
    """Match predictions to references by id, never by order.

    Policy: a reference without a prediction is *missing* and counts as wrong (the
    denominator is always the number of references); a prediction whose id is not among the
    references is *extra* and is ignored. Both lists are reported, in sorted order.
    """
    ids = [item_id for item_id in references if item_id in predictions]
    missing = sorted(item_id for item_id in references if item_id not in predictions)
    extra = sorted(item_id for item_id in predictions if item_id not in references)
    return Pairing(ids=ids, missing=missing, extra=extra)


@dataclass
class ScoreReport:
    """Scores of one benchmark run.

    `metrics` holds the headline numbers, in percent (CIDEr x 100 as papers print it);
    `counts` the number of references each metric averages over; `missing`/`extra` the ids
    that could not be paired (see `pair_by_id`); `unparsed` the ids whose answer named no
    valid option or class (counted wrong); `protocol` how the answers were obtained, when known
    (`vlynx eval`: "generate" or "likelihood").
    """

    benchmark: str
    metrics: dict[str, float]
    counts: dict[str, int]
    num_references: int
    num_predictions: int
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)
    protocol: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            **({"protocol": self.protocol} if self.protocol else {}),
            "metrics": self.metrics,
            "counts": self.counts,
            "num_references": self.num_references,
            "num_predictions": self.num_predictions,
            "missing": self.missing,
            "extra": self.extra,
            "unparsed": self.unparsed,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def to_markdown(self, max_ids: int = 10) -> str:
        """A markdown table of the metrics followed by the pairing summary."""
        lines = [f"## {self.benchmark}", ""]
        if self.protocol:
            lines += [f"Protocol: {self.protocol}.", ""]
        lines += ["| metric | value | n |", "|---|---:|---:|"]
        for name, value in self.metrics.items():
            lines.append(f"| {name} | {value:.2f} | {self.counts.get(name, self.num_references)} |")
        lines += ["", f"{self.num_references} references, {self.num_predictions} predictions."]
        for label, ids in (("missing predictions (counted wrong)", self.missing),
                           ("extra predictions (ignored)", self.extra),
                           ("answers naming no valid option (counted wrong)", self.unparsed)):
            if ids:
                shown = ", ".join(ids[:max_ids]) + (" ..." if len(ids) > max_ids else "")
                lines.append(f"{len(ids)} {label}: {shown}")
        return "\n".join(lines) + "\n"


def percent(numerator: float, denominator: int) -> float:
    """100 * numerator / denominator, 0 for an empty group."""
    return 100.0 * numerator / denominator if denominator else 0.0
