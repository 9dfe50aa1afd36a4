"""`vlynx demo`: the whole V-LynX pipeline on the miniature world, with the paper's baselines and ablations."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="run the end-to-end demo on the miniature world",
        description="Run the real pipeline on the shipped miniature world and its tiny Video LLM (trained on "
        "silent video only): reference statistics, interface alignment of an audio LoRA on unpaired audio, "
        "instruction tuning, and evaluation on held-out questions, for the paper's rows (zero-shot, FT, V-LynX "
        "and its ablations). Prints a table and writes results.json, results.md and results.png.",
    )
    parser.add_argument("--quick", action="store_true", help="a small, fast run (about 2 minutes on 2 CPU cores)")
    parser.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and of training (default 0)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.demo import format_table, run_demo, settings_for

    report = run_demo(args.out, settings_for(args.quick, args.seed))
    print(format_table(report))
    print(f"\nresults: {args.out}/results.json, {args.out}/results.md, {args.out}/results.png")
    return 0
