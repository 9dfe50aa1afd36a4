"""Held-out video accuracy of a miniworld Video LLM, per question kind (docs/method.md §10).

    python benchmarks/miniworld_accuracy.py                      # the shipped checkpoint, 200 + 200 scenes
    python benchmarks/miniworld_accuracy.py --model DIR --scenes 100

Two held-out sets, both from random streams the pretraining never draws from:

- `test` split (seed `--seed`): the video questions the demo's "video" column scores
  (colour-of-shape, shape-of-colour, motion-of-shape about one object per scene);
- `pretrain`-style scenes (seed `--seed` + 10,000, the stream of the pretraining's own
  held-out check): every video question about every object, size and count included.

Accuracy is the greedy first answer token against the one-word answer
(`vlynx.miniworld.pretraining.answer_accuracy`), on silent frames only (the test clips'
sound track is never read). Chance: colour 1/4 (1/2 between the two colours of a
two-object scene), shape 1/3, motion 1/5, size 1/2.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

VIDEO_KINDS = ("colour-of-shape", "shape-of-colour", "motion-of-shape", "size-of-shape", "object-count")


def held_out_accuracy(model: str, scenes: int, seed: int, num_frames: int = 8) -> dict[str, dict[str, float]]:
    """Per-kind and overall accuracy on both held-out sets: {"test": {...}, "pretrain-style": {...}}."""
    from vlynx.backbones import load_backbone
    from vlynx.miniworld import generate_split
    from vlynx.miniworld.pretraining import answer_accuracy, load_video_qa

    backbone = load_backbone(model)
    results = {}
    with tempfile.TemporaryDirectory(prefix="vlynx-miniworld-accuracy-") as scratch:
        for name, split, split_seed in (("test", "test", seed), ("pretrain-style", "pretrain", seed + 10_000)):
            annotations = generate_split(Path(scratch) / name, split, scenes, split_seed)
            data = load_video_qa(backbone, annotations, num_frames)
            results[name] = answer_accuracy(backbone, data, kinds=set(VIDEO_KINDS))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="miniworld", help="checkpoint folder or registered name (default: shipped)")
    parser.add_argument("--scenes", type=int, default=200, help="scenes per held-out set (default 200)")
    parser.add_argument("--seed", type=int, default=77, help="seed of the test split (default 77)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = held_out_accuracy(args.model, args.scenes, args.seed)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for name, scores in results.items():
        print(f"{name} ({args.scenes} scenes): " + "  ".join(f"{k} {100 * v:.1f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
