"""`vlynx eval`: run a V-LynX bundle on a benchmark, write its predictions and scores."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from vlynx.metrics.benchmarks import BENCHMARKS

    parser = subparsers.add_parser(
        "eval",
        parents=[common],
        help="generate answers for a benchmark and score them",
        description="Answer every question of a benchmark annotation file (LLaVA/PAVE conversation format plus "
        "the benchmark's fields, e.g. 'choices' for avqa, 'type' for music-avqa) with a V-LynX bundle, append "
        "the answers to OUT/predictions.jsonl (re-running resumes: answered ids are skipped), then score them "
        "and write OUT/results.json and OUT/results.md.",
    )
    parser.add_argument("--benchmark", required=True, choices=list(BENCHMARKS), help="which benchmark")
    parser.add_argument("--model", required=True, help="V-LynX bundle directory")
    parser.add_argument("--data", required=True, help="annotation file (JSON list or JSONL)")
    parser.add_argument("--media-root", default=None, help="folder the media paths are relative to "
                        "(default: the annotation file's folder)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=1, help="requests per generate call (default 1)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (saves a JVM start)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.errors import VlynxError
    from vlynx.evaluate import build_items, evaluate

    # Check the annotation and media before spending time on loading the model.
    build_items(args.benchmark, args.data, args.media_root)
    try:
        from vlynx.bundle import VLynx
    except ImportError as error:
        raise VlynxError(f"cannot load bundles in this installation: {error}") from error
    model = VLynx.from_pretrained(args.model)
    report = evaluate(model, args.benchmark, args.data, args.out, media_root=args.media_root,
                      batch_size=args.batch_size, meteor=not args.no_meteor)
    print(report.to_markdown(), end="")
    return 0
