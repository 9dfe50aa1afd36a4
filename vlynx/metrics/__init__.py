"""Benchmark metrics: answer cleaning, exact match, caption metrics, per-benchmark scorers."""
from __future__ import annotations

from vlynx.metrics.benchmarks import (
    BENCHMARKS,
    Benchmark,
    get_benchmark,
    read_predictions,
    score_files,
)
from vlynx.metrics.captions import caption_scores
from vlynx.metrics.choices import choice_letter
from vlynx.metrics.cleaning import answer_match, clean_answer
from vlynx.metrics.report import Pairing, ScoreReport, pair_by_id

__all__ = [
    "BENCHMARKS", "Benchmark", "Pairing", "ScoreReport", "answer_match", "caption_scores", "choice_letter",
    "clean_answer", "get_benchmark", "pair_by_id", "read_predictions", "score_files",
]
