"""`vlynx miniworld generate|pretrain`: the miniature world's data and its tiny Video LLM."""
from __future__ import annotations

import argparse
import json

from vlynx.errors import VlynxError


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "miniworld",
        parents=[common],
        help="generate the miniature world's data or pretrain its tiny Video LLM",
        description="The miniature world: synthetic scenes (objects with shape, colour, size, motion, depth; "
        "each shape with its own sound) rendered as small mp4 videos with sound, depth maps and one-word "
        "questions, and a tiny LLaVA-OneVision pretrained on its video-only data (shipped as `--model miniworld`).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    generate = actions.add_parser(
        "generate", parents=[common], help="write one split of the world",
        description="Write N scenes of a split to DIR. reference: videos + videos.txt; align: unlabeled wav "
        "files + audio.txt; train/test: mp4 (with sound), wav, depth PNGs and annotations.json "
        "(LLaVA conversation format with a category: audio | audio-visual | video); pretrain: silent videos "
        "with video-only questions and captions. Same seed, same files.",
    )
    generate.add_argument("--out", required=True, help="output folder (use one folder per split)")
    generate.add_argument("--split", required=True, choices=("reference", "align", "train", "test", "pretrain"))
    generate.add_argument("--n", type=int, required=True, help="number of scenes")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    generate.add_argument("--overwrite", action="store_true", help="replace a folder that is not empty")
    generate.set_defaults(handler=run_generate)

    pretrain = actions.add_parser(
        "pretrain", parents=[common], help="pretrain the tiny Video LLM on video-only data",
        description="Train the miniworld LLaVA-OneVision (encoder, projector and LLM) from random init on "
        "video questions and captions of silent clips, in three stages (single frames; clips with motion "
        "questions, LLM only; clips with every question), then save it with save_pretrained to DIR and report "
        "held-out video accuracy. Deterministic for a given seed and thread count. The shipped `miniworld` "
        "model is this command's output with the defaults.",
    )
    pretrain.add_argument("--out", required=True, help="checkpoint folder to write")
    pretrain.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    pretrain.add_argument("--stage-steps", default=None, metavar="N,N,...",
                          help="steps of each stage, comma-separated (default: 2000,4000,10000 for single frames; "
                          "motion questions on clips, LLM only; every question on clips)")
    pretrain.add_argument("--scenes", type=int, default=None, help="pretraining scenes (default 4000)")
    pretrain.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1: reproducible)")
    pretrain.set_defaults(handler=run_pretrain)


def run_generate(args: argparse.Namespace) -> int:
    from vlynx.miniworld import generate_split

    index = generate_split(args.out, args.split, args.n, args.seed, overwrite=args.overwrite)
    print(index)
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    from vlynx.miniworld import pretrain

    options = {key: value for key, value in (("scenes", args.scenes), ("threads", args.threads)) if value is not None}
    try:
        stage_steps = None if args.stage_steps is None else [int(n) for n in args.stage_steps.split(",")]
    except ValueError:
        raise VlynxError(f"--stage-steps takes whole numbers separated by commas, not {args.stage_steps!r}") from None
    out = pretrain(args.out, seed=args.seed, stage_steps=stage_steps, **options)
    metrics = json.loads((out / "pretrain.json").read_text())["metrics"]
    print(f"{out}  loss {metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f}")
    if "held_out_accuracy" in metrics:
        print("held-out video accuracy: " + "  ".join(f"{k} {v:.2f}" for k, v in metrics["held_out_accuracy"].items()))
    return 0
