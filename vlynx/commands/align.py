"""`vlynx align`: interface alignment of one new modality (trains its vision LoRA only)."""
from __future__ import annotations

import argparse
import json

# Flags that map one-to-one onto AlignConfig fields (dest = field name); None means "not given".
_VALUE_FLAGS = [
    ("--model", str, "preset, hub id or checkpoint dir of the Video LLM"),
    ("--modality", str, "modality name (audio, depth, hfr, egocentric or a plug-in)"),
    ("--data", str, "unlabeled modality inputs: DIR | LIST.txt | ANNOT.json[l]"),
    ("--reference", str, "reference statistics file from `vlynx reference` (must match --model)"),
    ("--out", str, "output adapter directory (PEFT format)"),
    ("--media-root", str, "folder that relative paths in --data resolve against"),
    ("--frames", int, "frames per input (default: the reference's frames per video)"),
    ("--epochs", float, "training epochs (default 1)"),
    ("--max-steps", int, "optimizer steps; overrides --epochs"),
    ("--lr", float, "peak learning rate (default 1e-4; 3%% linear warm-up, cosine decay)"),
    ("--batch-size", int, "inputs per device per step (default 1)"),
    ("--grad-accum", int, "gradient accumulation steps (default 1)"),
    ("--lambda-dist", float, "weight of the distribution loss, eq. (9) (default 0.01)"),
    ("--attn-loss", str, "attention distance: l1 (authors' code, default) or mse (paper's wording)"),
    ("--dist-loss", str, "distribution distance: l2norm (default) or mse"),
    ("--lora-rank", int, "vision LoRA rank (default 64; alpha defaults to 2 x rank)"),
    ("--lora-alpha", float, "vision LoRA alpha"),
    ("--seed", int, "random seed (default 0)"),
    ("--workers", int, "data loader worker processes (default 0)"),
    ("--logging-steps", int, "log losses every N steps (default 10)"),
    ("--save-steps", int, "checkpoint every N steps (default 500)"),
    ("--checkpoint-dir", str, "where checkpoints go (default OUT.checkpoints)"),
    ("--deepspeed", str, "DeepSpeed JSON config (run under `accelerate launch` or torchrun)"),
]
_SWITCHES = [
    ("--no-attn", "ablation: drop the attention alignment loss"),
    ("--no-dist", "ablation: drop the distribution regularization"),
    ("--stop-grad-reference", "no gradient through the reference-response branch"),
    ("--all-queries", "use every query position, not only those kept by 2x pooling"),
    ("--before-out-proj", "compare attention outputs before the output projection"),
    ("--resume", "continue from the last checkpoint in the checkpoint directory"),
    ("--overwrite", "replace an existing output directory / earlier checkpoints"),
    ("--skip-bad-items", "skip unreadable inputs (listed in the log) instead of stopping"),
    ("--trust-remote-code", "allow the checkpoint's own code"),
]


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "align",
        parents=[common],
        help="train a modality's vision LoRA by interface alignment",
        description="Interface alignment (V-LynX eq. 4-9): train only the new modality's vision-encoder LoRA on "
        "unpaired, unlabeled inputs so that its attention responses match those against the video reference "
        "keys/values, and its projected tokens have the video token statistics. Loads only the vision encoder "
        "and projector. Settings come from --config YAML, then flags; the result is a PEFT adapter dir with "
        "the config and a JSON run record. Multi-GPU: `accelerate launch -m vlynx align ...`.",
    )
    parser.add_argument("--config", help="YAML recipe of AlignConfig fields (flags override it)")
    for flag, kind, text in _VALUE_FLAGS:
        parser.add_argument(flag, type=kind, default=None, help=text)
    for flag, text in _SWITCHES:
        parser.add_argument(flag, action="store_true", default=None, help=text)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other config field, value parsed as YAML (e.g. --set modality_settings={n_mels: 32})")
    parser.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace):
    """AlignConfig from --config, then --set, then the explicit flags."""
    from vlynx.align import AlignConfig
    from vlynx.settings import parse_assignments

    config = AlignConfig.from_yaml(args.config) if args.config else AlignConfig()
    overrides = {key.replace("-", "_"): value for key, value in parse_assignments(args.set).items()}
    for flag, *_ in [*_VALUE_FLAGS, *_SWITCHES]:
        name = flag[2:].replace("-", "_")
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if "lora_rank" in overrides and "lora_alpha" not in overrides:
        overrides["lora_alpha"] = 2.0 * overrides["lora_rank"]
    return config.updated(overrides)


def run(args: argparse.Namespace) -> int:
    from vlynx.align import run_alignment
    from vlynx.distributed import rank

    result = run_alignment(config_from_args(args))
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.final_losses.items())
    if rank() == 0:
        print(f"wrote {result.out} ({result.steps} steps; final {losses or 'n/a'})")
        if args.debug:
            print(json.dumps(result.final_losses))
    return 0
