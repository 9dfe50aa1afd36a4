"""`vlynx tune`: instruction tuning of the LLM LoRA on video + new-modality conversations."""
from __future__ import annotations

import argparse

from vlynx.config import add_stage_arguments
from vlynx.stage_configs import TuneConfig


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "tune",
        parents=[common],
        help="instruction-tune the LLM LoRA on video + new-modality conversations",
        description="Train the LLM LoRA on LLaVA/PAVE conversations whose prompt carries the video tokens "
        "(base encoder) followed by one token block per new modality (encoder + that modality's aligned "
        "adapter, frozen). Writes a model bundle that `vlynx answer` and `VLynx.from_pretrained` load.",
    )
    add_stage_arguments(parser, TuneConfig)
    parser.add_argument("--modality-config", metavar="FILE", help="YAML/JSON {modality: {setting: value}} for the "
                        "modality transforms (default: the settings recorded by `vlynx align`)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.config import config_from_args, read_settings_file
    from vlynx.distributed import rank
    from vlynx.tune import run_tune

    config = config_from_args(TuneConfig, args)
    if args.modality_config is not None:
        config = config.updated({"modality_settings": read_settings_file(args.modality_config)},
                                source=args.modality_config)
    result = run_tune(config)
    summary = f"final loss {result.losses[-1]:.4f}" if result.losses else "no loss logged"
    if rank() == 0:
        print(f"wrote bundle {result.bundle} ({result.steps} steps, {summary})")
    return 0
