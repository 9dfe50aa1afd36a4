"""Benchmark metrics: answer cleaning, exact match, caption metrics, per-benchmark rules (`tasks`)."""
from __future__ import annotations

from vlynx.metrics.captions import caption_scores
from vlynx.metrics.choices import choice_letter
from vlynx.metrics.cleaning import answer_match, clean_answer
from vlynx.metrics.records import read_predictions
from vlynx.metrics.report import Pairing, ScoreReport, pair_by_id
from vlynx.metrics.tasks import BENCHMARKS, Benchmark, get_benchmark, score_files

__all__ = [
    "BENCHMARKS", "Benchmark", "Pairing", "ScoreReport", "answer_match", "caption_scores", "choice_letter",
    "clean_answer", "get_benchmark", "pair_by_id", "read_predictions", "score_files",
]
