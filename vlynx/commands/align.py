"""`vlynx align`: interface alignment of one new modality (trains its vision LoRA only)."""
from __future__ import annotations

import argparse
import json

from vlynx.config import add_stage_arguments
from vlynx.stage_configs import AlignConfig


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "align",
        parents=[common],
        help="train a modality's vision LoRA by interface alignment",
        description="Interface alignment (V-LynX eq. 4-9): train only the new modality's vision-encoder LoRA on "
        "unpaired, unlabeled inputs so that its attention responses match those against the video reference "
        "keys/values, and its projected tokens have the video token statistics. Loads only the vision encoder "
        "and projector; writes a PEFT adapter dir. Multi-GPU: `accelerate launch -m vlynx align ...`.",
    )
    add_stage_arguments(parser, AlignConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.align import run_align
    from vlynx.config import config_from_args
    from vlynx.distributed import rank

    result = run_align(config_from_args(AlignConfig, args))
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.final_losses.items())
    if rank() == 0:
        print(f"wrote {result.out} ({result.steps} steps; final {losses or 'n/a'})")
        if args.debug:
            print(json.dumps(result.final_losses))
    return 0
