"""`vlynx tune`: instruction tuning of the LLM LoRA on video + new-modality conversations."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

# flag -> TuneConfig field, for flags whose value is stored as given
_FIELDS = {
    "model": "model", "data": "data", "media_root": "media_root", "out": "out", "frames": "frames",
    "epochs": "epochs", "max_steps": "max_steps", "lr": "lr", "batch_size": "batch_size",
    "grad_accum": "grad_accum", "warmup": "warmup", "llm_rank": "llm_rank", "llm_alpha": "llm_alpha",
    "vision_rank": "vision_rank", "vision_alpha": "vision_alpha", "save_steps": "save_steps",
    "logging_steps": "logging_steps", "seed": "seed", "workers": "dataloader_workers",
}


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "tune",
        parents=[common],
        help="instruction-tune the LLM LoRA on video + new-modality conversations",
        description="Train the LLM LoRA on LLaVA/PAVE conversations whose prompt carries the video tokens "
        "(base encoder) followed by one token block per new modality (encoder + that modality's aligned "
        "adapter, frozen). Writes a model bundle that `vlynx answer` and `VLynx.from_pretrained` load. "
        "Settings can come from a YAML/JSON --config; flags override it.",
    )
    parser.add_argument("--config", type=Path, help="YAML or JSON file of tuning settings (TuneConfig fields)")
    parser.add_argument("--model", help="base Video LLM: checkpoint dir, hub id or preset")
    parser.add_argument("--data", help="annotation file (JSON list or JSONL, LLaVA/PAVE conversations)")
    parser.add_argument("--media-root", help="folder that relative media paths resolve against "
                        "(default: the annotation file's folder)")
    parser.add_argument("--modality", help="new modalities in prompt order, comma-separated (e.g. audio,depth); "
                        "empty for the video-only -FT baseline")
    parser.add_argument("--vision-adapter", help="aligned vision adapters (`vlynx align` outputs): one dir per "
                        "modality, comma-separated, or one dir with a subfolder per modality")
    parser.add_argument("--modality-config", type=Path, help="YAML/JSON {modality: {setting: value}} for the "
                        "modality transforms (default: the settings recorded by `vlynx align`)")
    parser.add_argument("--out", help="bundle directory to write (checkpoints in OUT/checkpoints)")
    parser.add_argument("--frames", type=int, help="frames per video (default 32)")
    parser.add_argument("--epochs", type=float, help="training epochs (default 1)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (overrides --epochs)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default 1e-4, the paper's)")
    parser.add_argument("--batch-size", type=int, help="examples per device per step (default 1)")
    parser.add_argument("--grad-accum", type=int, help="gradient accumulation steps (default 1)")
    parser.add_argument("--warmup", type=float, help="warm-up fraction of the steps (default 0.03)")
    parser.add_argument("--llm-rank", type=int, help="LLM LoRA rank (default 64)")
    parser.add_argument("--llm-alpha", type=float, help="LLM LoRA alpha (default 16)")
    parser.add_argument("--train-vision-adapter", action="store_true", default=None,
                        help="train the vision adapters jointly; a modality without --vision-adapter gets a fresh "
                        "one (the no-interface-alignment ablation)")
    parser.add_argument("--vision-rank", type=int, help="rank of fresh vision adapters (default 64)")
    parser.add_argument("--vision-alpha", type=float, help="alpha of fresh vision adapters (default 128)")
    parser.add_argument("--save-steps", type=int, help="checkpoint every N steps (default 500)")
    parser.add_argument("--logging-steps", type=int, help="log the loss every N steps (default 10)")
    parser.add_argument("--resume", action="store_true", default=None, help="continue from the last checkpoint")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, help="data-loading worker processes (default 0)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.errors import VlynxError
    from vlynx.distributed import rank
    from vlynx.settings import read_settings_file
    from vlynx.tune import TuneConfig, tune

    values: dict[str, Any] = read_settings_file(args.config) if args.config else {}
    known = {f.name for f in dataclasses.fields(TuneConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise VlynxError(f"unknown settings {unknown} (known: {', '.join(sorted(known))})", args.config)
    for flag, name in _FIELDS.items():
        if getattr(args, flag) is not None:
            values[name] = getattr(args, flag)
    if args.modality is not None:
        values["modalities"] = _split(args.modality)
    if args.vision_adapter is not None:
        values["vision_adapters"] = _split(args.vision_adapter)
    if args.modality_config is not None:
        values["modality_settings"] = read_settings_file(args.modality_config)
    for flag in ("train_vision_adapter", "resume"):
        if getattr(args, flag):
            values[flag] = True
    missing = [name for name in ("model", "data", "out") if not values.get(name)]
    if missing:
        raise VlynxError(f"missing {', '.join('--' + m for m in missing)} (as flags or in --config)")
    result = tune(TuneConfig(**values))
    summary = f"final loss {result.losses[-1]:.4f}" if result.losses else "no loss logged"
    if rank() == 0:
        print(f"wrote bundle {result.bundle} ({result.steps} steps, {summary})")
    return 0


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
