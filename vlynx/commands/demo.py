"""`vlynx demo`: the whole V-LynX pipeline on the miniature world, with the paper's baselines and ablations."""
from __future__ import annotations

import argparse

from vlynx.config import add_stage_arguments
from vlynx.stage_configs import DemoConfig


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="run the end-to-end demo on the miniature world",
        description="Run the real pipeline on the shipped miniature world and its tiny Video LLM (trained on "
        "silent video only): reference statistics, interface alignment of an audio LoRA on unpaired audio, "
        "instruction tuning, and evaluation on held-out questions, for the paper's rows (zero-shot, FT, V-LynX "
        "and its ablations) and a control (an untrained vision LoRA), each on several seeds' worlds "
        "(docs/demo.md). Prints a table with 95% intervals and paired differences against V-LynX, and writes "
        "results.json, results.md and results.png (and curve.png with --curve).",
    )
    add_stage_arguments(parser, DemoConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.config import config_from_args
    from vlynx.demo import format_table, run_demo

    config = config_from_args(DemoConfig, args)
    report = run_demo(config)
    print(format_table(report))
    pictures = "results.png" + (", curve.png" if config.curve else "")
    print(f"\nresults: {config.out}/results.json, results.md, {pictures}")
    return 0
