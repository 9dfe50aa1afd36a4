"""`vlynx eval`: run a V-LynX bundle on a benchmark, write its predictions and scores."""
from __future__ import annotations

import argparse

from vlynx.commands.score import benchmark_names


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from vlynx.config import add_stage_arguments
    from vlynx.stage_configs import EvalConfig

    parser = subparsers.add_parser(
        "eval",
        parents=[common],
        help="generate answers for a benchmark and score them",
        description="Answer every question of a benchmark annotation file (`vlynx prepare` output, or LLaVA/PAVE "
        "conversations plus the benchmark's fields, e.g. 'multi_choice' for avqa, 'type' for music-avqa) with a "
        "V-LynX bundle, append the answers to OUT/predictions.jsonl, then score them and write OUT/results.json "
        "and OUT/results.md. An entry with a 'question' field is asked the benchmark's prompt built from its "
        "fields (SQA3D: situation + question; MUSIC-AVQA: filled template; AVQA: the options); other entries "
        "their last human turn. --protocol likelihood (avqa) picks the option letter the model finds most "
        "likely instead of reading it from generated text. An OUT holding predictions needs --resume "
        "(answered ids are kept) or --overwrite (start over).",
    )
    add_stage_arguments(parser, EvalConfig, benchmark={"choices": benchmark_names()})
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.config import config_from_args
    from vlynx.evaluate import run_eval
    from vlynx.stage_configs import EvalConfig

    report = run_eval(config_from_args(EvalConfig, args))
    print(report.to_markdown(), end="")
    return 0
