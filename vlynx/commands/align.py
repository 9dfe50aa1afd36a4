"""`vlynx align`: interface alignment of one new modality (trains its vision LoRA only)."""
from __future__ import annotations

import argparse
import functools
import json

from vlynx.config import add_config_arguments, add_option
from vlynx.stage_configs import AlignConfig


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "align",
        parents=[common],
        help="train a modality's vision LoRA by interface alignment",
        description="Interface alignment (V-LynX eq. 4-9): train only the new modality's vision-encoder LoRA on "
        "unpaired, unlabeled inputs so that its attention responses match those against the video reference "
        "keys/values, and its projected tokens have the video token statistics. Loads only the vision encoder "
        "and projector. Settings come from --config, then --set, then flags; the result is a PEFT adapter dir "
        "holding the resolved config and a run record. Multi-GPU: `accelerate launch -m vlynx align ...`.",
    )
    add_config_arguments(parser, AlignConfig)
    option = functools.partial(add_option, parser, AlignConfig)
    option("model", help="preset, hub id or checkpoint dir of the Video LLM")
    option("modality", help="modality name (audio, depth, hfr, egocentric or a plug-in)")
    option("data", help="unlabeled modality inputs: DIR | LIST.txt | ANNOT.json[l]")
    option("reference", help="reference statistics file from `vlynx reference` (must match --model)")
    option("out", help="output adapter directory (PEFT format)")
    option("media_root", help="folder that relative paths in --data resolve against")
    option("frames", help="frames per input (default: the reference's frames per video)")
    option("epochs", help="training epochs")
    option("max_steps", help="optimizer steps; overrides --epochs")
    option("lr", help="peak learning rate (3%% linear warm-up, cosine decay)")
    option("batch_size", help="inputs per device per step")
    option("grad_accum", help="gradient accumulation steps")
    option("lambda_dist", help="weight of the distribution loss, eq. (9)")
    option("attn_loss", choices=["l1", "mse"], help="attention distance: l1 (authors' code) or mse (paper's wording)")
    option("dist_loss", choices=["l2norm", "mse"], help="distribution distance: l2norm or mse")
    option("vision_rank", "--vision-rank", "--lora-rank", help="vision LoRA rank (alpha defaults to 2 x rank)")
    option("vision_alpha", "--vision-alpha", "--lora-alpha", help="vision LoRA alpha (default: 2 x rank)")
    option("vision_dropout", help="vision LoRA dropout")
    option("seed", help="random seed")
    option("workers", help="data loader worker processes")
    option("logging_steps", help="log losses every N steps")
    option("save_steps", help="checkpoint every N steps")
    option("checkpoint_dir", help="where checkpoints go (default: OUT.checkpoints)")
    option("deepspeed", help="DeepSpeed JSON config (run under `accelerate launch` or torchrun)")
    option("no_attn", help="ablation: drop the attention alignment loss")
    option("no_dist", help="ablation: drop the distribution regularization")
    option("stop_grad_reference", help="no gradient through the reference-response branch")
    option("all_queries", help="use every query position, not only those kept by 2x pooling")
    option("before_out_proj", help="compare attention outputs before the output projection")
    option("resume", help="continue from the checkpoints in the checkpoint directory (none: start afresh)")
    option("overwrite", help="remove an existing output directory and its checkpoints first")
    option("skip_bad_items", help="skip unreadable inputs (listed in the log) instead of stopping")
    option("trust_remote_code", help="allow the checkpoint's own code")
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
