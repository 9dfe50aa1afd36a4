"""`vlynx diagnose`: does a modality land in the token interface? (docs/diagnostics.md)"""
from __future__ import annotations

import argparse
import json

# Flags for each built-in modality's input in attention-map mode (--audio clip.wav ...).
MODALITY_INPUTS = ("audio", "depth", "hfr", "egocentric")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from vlynx.config import add_stage_arguments
    from vlynx.diagnose.config import DiagnoseConfig

    parser = subparsers.add_parser(
        "diagnose",
        parents=[common],
        help="token-interface statistics, a modality's interface gap, attention maps",
        description="With --model and --videos: the geometry of the token interface (paper Table B1): mean "
        "pairwise cosine distances vocabulary-vocabulary, frame-frame and vocabulary-frame, the norms of each "
        "group's mean embedding and the modality gap, exact over every row. With --modality and --data (and "
        "--adapter): the modality's interface gap before and after its adapter (eq. 6 per layer, eq. 8, an MMD, "
        "distances to the video tokens) and a picture. With --bundle, --video, the modalities' inputs and "
        "--question: the LLM's attention from the question to each stream's frames (Figure 4). Writes "
        "OUT/diagnose.json and the pictures.",
    )
    add_stage_arguments(parser, DiagnoseConfig)
    for name in MODALITY_INPUTS:
        parser.add_argument(f"--{name}", dest=f"input_{name}", metavar="PATH", default=argparse.SUPPRESS,
                            help=f"the {name} input of the question (with --bundle; default: read from the video)")
    parser.add_argument("--json", action="store_true", help="print diagnose.json (Table B1 keys at the top level)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.config import config_from_args
    from vlynx.diagnose import run_diagnose
    from vlynx.diagnose.config import DiagnoseConfig

    config = config_from_args(DiagnoseConfig, args)
    inputs = {name: getattr(args, f"input_{name}") for name in MODALITY_INPUTS if hasattr(args, f"input_{name}")}
    if inputs:
        config = config.updated({"inputs": {**config.inputs, **inputs}})
    report = run_diagnose(config)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def format_report(report: dict) -> str:
    """The headline numbers as a few lines of text."""
    if "attention" in report:
        lines = [f"attention of the question to each stream ({report['aggregation']}):"]
        lines += [f"  {name}: {100 * entry['share']:.1f}%" for name, entry in report["attention"].items()]
        return "\n".join(lines + [f"picture: {report['pictures'][0]}"])
    lines = ["token interface (mean cosine distance = 1 - cos):",
             f"  vocab-vocab {report['vocab_vocab_cosine']:.4f}   frame-frame {report['frame_frame_cosine']:.4f}   "
             f"vocab-frame {report['vocab_frame_cosine']:.4f}",
             f"  |mean vocab| {report['vocab_mean_norm']:.4f}   |mean frame| {report['frame_mean_norm']:.4f}   "
             f"modality gap {report['modality_gap']:.4f}"]
    gap = report.get("interface_gap")
    if gap:
        lines.append(f"interface gap of '{gap['modality']}' ({gap['inputs']} inputs):")
        for name in ("before", "after"):
            numbers = gap.get(name)
            if numbers:
                lines.append(f"  {name:6s} eq.6 {numbers['attention_term']:.4g}   eq.8 {numbers['distribution_term']:.4g}"
                             f"   MMD {numbers['mmd']:.4f}   gap to video {numbers['modality_gap_to_video']:.4f}"
                             f"   frame-{gap['modality']} cosine {numbers['frame_modality_cosine']:.4f}")
        lines.append(f"picture: {report['pictures'][0]}")
    return "\n".join(lines)
