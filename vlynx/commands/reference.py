"""`vlynx reference`: compute the video reference statistics (eq. 2-3), or report their stability."""
from __future__ import annotations

import argparse
from pathlib import Path

from vlynx.config import add_stage_arguments, config_from_args
from vlynx.stage_configs import ReferenceConfig

REPORT_HELP = (
    "print the stability diagnostics of a reference file (paper Table B2) and exit. Per encoder layer l, with "
    "K the reference keys (mean over all frames) and K_s the mean keys of source s (S sources): "
    "|K| = mean over heads, positions and channels of |K[l]|; var K = (1/S) sum_s mean((K_s[l] - K[l])^2); "
    "dom K = |K| / var K (much greater than 1: the reference is stable across sources). Values likewise. "
    "Variance and dominance need a file computed from at least two sources"
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "reference",
        parents=[common],
        help="compute reference K/V and token statistics from unlabeled videos",
        description="Run reference videos through the frozen base encoder once and save, per encoder layer, "
        "head and patch position, the mean key and value over all frames (eq. 2), and the mean and population "
        "variance of all projected video tokens (eq. 3), with a fingerprint of the model. Unreadable videos "
        "are skipped and listed. Resumable (checkpoints every N videos, continued with --resume) and "
        "distributed: under `torchrun --nproc_per_node K -m vlynx reference ...` each rank takes a shard.",
    )
    add_stage_arguments(parser, ReferenceConfig)
    parser.add_argument("--report", type=Path, metavar="REF.safetensors", help=REPORT_HELP)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.distributed import rank
    from vlynx.reference import format_report, load_reference, run_reference

    if args.report is not None:
        print(format_report(load_reference(args.report)))
        return 0
    config = config_from_args(ReferenceConfig, args)
    reference = run_reference(config)
    if rank() == 0:
        counts = reference.counts
        print(f"{config.out}: {counts['videos']} videos, {counts['frames']} frames, {counts['tokens']} tokens"
              f"{f', {len(reference.skipped)} skipped' if reference.skipped else ''}")
        for entry in reference.skipped:
            print(f"  skipped {entry['path']}: {entry['reason']}")
    return 0
