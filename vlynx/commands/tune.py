"""`vlynx tune`: instruction tuning of the LLM LoRA on video + new-modality conversations."""
from __future__ import annotations

import argparse
import functools

from vlynx.config import add_config_arguments, add_option
from vlynx.stage_configs import TuneConfig


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "tune",
        parents=[common],
        help="instruction-tune the LLM LoRA on video + new-modality conversations",
        description="Train the LLM LoRA on LLaVA/PAVE conversations whose prompt carries the video tokens "
        "(base encoder) followed by one token block per new modality (encoder + that modality's aligned "
        "adapter, frozen). Writes a model bundle that `vlynx answer` and `VLynx.from_pretrained` load, holding "
        "the resolved config and a run record. Settings come from --config, then --set, then flags.",
    )
    add_config_arguments(parser, TuneConfig)
    option = functools.partial(add_option, parser, TuneConfig)
    option("model", help="base Video LLM: checkpoint dir, hub id or preset")
    option("data", help="annotation file (JSON list or JSONL, LLaVA/PAVE conversations)")
    option("media_root", help="folder that relative media paths resolve against (default: the annotation "
           "file's folder)")
    option("modalities", "--modality", help="new modalities in prompt order, comma-separated (e.g. audio,depth); "
           "empty for the video-only -FT baseline")
    option("vision_adapters", "--vision-adapter", help="aligned vision adapters (`vlynx align` outputs): one dir "
           "per modality, comma-separated, or one dir with a subfolder per modality")
    option("out", help="bundle directory to write (checkpoints in OUT.checkpoints)")
    option("frames", help="frames per video")
    option("epochs", help="training epochs")
    option("max_steps", help="stop after this many optimizer steps (overrides --epochs)")
    option("lr", help="peak learning rate (the paper's; 3%% linear warm-up, cosine decay)")
    option("batch_size", help="examples per device per step")
    option("grad_accum", help="gradient accumulation steps")
    option("warmup_ratio", "--warmup-ratio", "--warmup", help="warm-up fraction of the steps")
    option("llm_rank", help="LLM LoRA rank (alpha defaults to rank / 4)")
    option("llm_alpha", help="LLM LoRA alpha (default: rank / 4)")
    option("llm_dropout", help="LLM LoRA dropout")
    option("train_vision_adapter", help="train the vision adapters jointly; a modality without --vision-adapter "
           "gets a fresh one (the no-interface-alignment ablation)")
    option("vision_rank", help="rank of fresh vision adapters (alpha defaults to 2 x rank)")
    option("vision_alpha", help="alpha of fresh vision adapters (default: 2 x rank)")
    option("vision_dropout", help="dropout of fresh vision adapters")
    option("seed", help="random seed")
    option("workers", help="data-loading worker processes")
    option("logging_steps", help="log the loss every N steps")
    option("save_steps", help="checkpoint every N steps")
    option("checkpoint_dir", help="where checkpoints go (default: OUT.checkpoints)")
    option("deepspeed", help="DeepSpeed JSON config (run under `accelerate launch` or torchrun)")
    option("resume", help="continue from the checkpoints in the checkpoint directory (none: start afresh)")
    option("overwrite", help="remove an existing bundle and its checkpoints first")
    option("trust_remote_code", help="allow the checkpoint's own code")
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
