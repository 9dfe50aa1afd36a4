"""The benchmarks `vlynx eval` and `vlynx score` know, by name; each is one `Benchmark` class
(`vlynx.metrics.benchmark`) holding all its rules, in the module of its kind."""
from __future__ import annotations

from pathlib import Path

from vlynx.errors import VlynxError
from vlynx.inputs import read_json_records
from vlynx.metrics.audio_visual import (
    AVQA,
    AVSD,
    MULTIPLE_CHOICE_INSTRUCTION,
    MUSIC_AVQA_TYPES,
    MusicAVQA,
    fill_template,
    music_avqa_type,
)
from vlynx.metrics.avut import AVUT
from vlynx.metrics.benchmark import Benchmark, Metrics, References
from vlynx.metrics.entries import is_annotation, predictions_by_entry_id, read_entry_references
from vlynx.metrics.proficiency import (
    PROFICIENCY_CLASSES,
    PROFICIENCY_QUESTION,
    EgoExoProficiency,
    proficiency_class,
)
from vlynx.metrics.qa3d import SQA3D, SQA3D_TYPES, ScanQA, sqa3d_question_type
from vlynx.metrics.records import read_predictions
from vlynx.metrics.report import ScoreReport

__all__ = [
    "AVQA", "AVSD", "BENCHMARKS", "MULTIPLE_CHOICE_INSTRUCTION", "MUSIC_AVQA_TYPES", "PROFICIENCY_CLASSES",
    "PROFICIENCY_QUESTION", "SQA3D", "SQA3D_TYPES", "Benchmark", "EgoExoProficiency", "Metrics", "MusicAVQA",
    "References", "ScanQA", "fill_template", "get_benchmark", "music_avqa_type", "proficiency_class",
    "score_files", "sqa3d_question_type",
]

BENCHMARKS: dict[str, Benchmark] = {benchmark.name: benchmark for benchmark in (
    AVSD(), AVQA(), MusicAVQA(), ScanQA(), SQA3D(), EgoExoProficiency(), AVUT())}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called `name`."""
    if name not in BENCHMARKS:
        raise VlynxError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def score_files(benchmark: str, predictions_path: str | Path, references_path: str | Path,
                meteor: bool = True) -> ScoreReport:
    """Read a predictions file and a references file and score them. The references are the benchmark's
    community reference file, or the annotation file `vlynx eval --data` reads (references by the same
    rule; predictions named by an entry's unique alias, e.g. AVSD's `image_id`, are paired with it)."""
    spec = get_benchmark(benchmark)
    predictions = read_predictions(predictions_path, spec.video_id_keys)
    data = read_json_records(references_path, "reference file")
    if isinstance(data, list) and all(isinstance(r, dict) for r in data) and is_annotation(data):
        entries = read_entry_references(spec, data, references_path)
        return spec.score(entries.references, predictions_by_entry_id(predictions, entries, predictions_path),
                          meteor=meteor)
    return spec.score(spec.read_references(references_path), predictions, meteor=meteor)
