"""`vlynx params`: the trainable parameters V-LynX adds to a backbone."""
from __future__ import annotations

import argparse
import json

from vlynx.stage_configs import TuneConfig


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "params",
        parents=[common],
        help="count the trainable parameters V-LynX adds",
        description="Count the parameters of the vision-encoder LoRA (one modality) and the LLM LoRA that "
        "V-LynX trains, by attaching the real adapters to the architecture on the meta device "
        "(no weights are loaded or downloaded beyond the config).",
    )
    parser.add_argument("--model", required=True,
                        help="preset (see docs/method.md §3-§4, e.g. llava-onevision-0.5b, qwen2.5-vl-3b, "
                        "internvl2.5-4b), hub id or checkpoint dir")
    # the ranks' defaults are the stages' (alpha does not change a count)
    parser.add_argument("--vision-rank", type=int, default=TuneConfig.vision_rank,
                        help=f"vision LoRA rank (default {TuneConfig.vision_rank})")
    parser.add_argument("--llm-rank", type=int, default=TuneConfig.llm_rank,
                        help=f"LLM LoRA rank (default {TuneConfig.llm_rank})")
    parser.add_argument("--json", action="store_true", help="print {vision_lora, llm_lora, total} as JSON")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.errors import VlynxError
    from vlynx.params import count_added_parameters

    if args.vision_rank < 1 or args.llm_rank < 1:
        raise VlynxError("LoRA ranks must be positive integers")
    counts = count_added_parameters(args.model, args.vision_rank, args.llm_rank, args.trust_remote_code)
    if args.json:
        print(json.dumps(counts.as_dict()))
        return 0
    rows = [
        ("vision LoRA (one modality)", counts.vision_lora),
        ("LLM LoRA", counts.llm_lora),
        ("LLM LoRA only (-FT baseline)", counts.llm_lora),
        ("V-LynX (vision + LLM LoRA)", counts.total),
    ]
    print(f"{args.model}  (vision rank {args.vision_rank}, LLM rank {args.llm_rank})")
    for label, value in rows:
        print(f"  {label:<30} {value:>13,d}  ({value / 1e6:.1f}M)")
    print(f"  vision LoRA on: {counts.vision_layout}")
    for note in counts.notes:
        print(f"  note: {note}")
    return 0
