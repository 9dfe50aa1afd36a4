"""`vlynx score`: score a predictions file against a benchmark's references (no model needed)."""
from __future__ import annotations

import argparse


def benchmark_names() -> list[str]:
    """The `--benchmark` choices of `vlynx eval` and `vlynx score`."""
    from vlynx.metrics.tasks import BENCHMARKS

    return list(BENCHMARKS)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "score",
        parents=[common],
        help="score predictions against a benchmark's references",
        description="Score a predictions file (JSONL/JSON {question_id|id|image_id|take_uid, text|pred|caption}, "
        "e.g. `vlynx eval`'s predictions.jsonl or PAVE's and the authors' eval outputs) against the benchmark's "
        "reference file in its community format, or against the annotation file `vlynx eval --data` reads. "
        "Predictions are paired with references by id: missing predictions count as wrong and are listed, extra "
        "ones are listed and ignored; files whose ids name videos rather than questions are refused. "
        "Metrics are in percent. Caption metrics (scanqa, avsd) need Java.",
    )
    parser.add_argument("--benchmark", required=True, choices=benchmark_names(), help="which benchmark")
    parser.add_argument("--predictions", required=True, help="predictions file (JSONL or JSON)")
    parser.add_argument("--references", required=True, help="the benchmark's reference file, or the annotation file eval reads")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (saves a JVM start)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.metrics.tasks import score_files
    from vlynx.progress import log

    report = score_files(args.benchmark, args.predictions, args.references, meteor=not args.no_meteor)
    if report.missing or report.extra:
        log.warning("%d references without a prediction (counted wrong), %d predictions with unknown ids "
                    "(ignored)", len(report.missing), len(report.extra))
    print(report.to_json() if args.json else report.to_markdown(), end="" if not args.json else "\n")
    return 0
