"""The miniature world: a synthetic audio-visual-depth world and a tiny Video LLM pretrained on it.

No pretrained Video LLM can be downloaded everywhere, so vlynx ships a small but real
instance of the problem: scenes whose answers need video, audio or both, and a
LLaVA-OneVision of tiny size that has only ever seen the video.

- `generate_split(out_dir, split, n, seed)` writes a split (see `vlynx.miniworld.generate`);
- `pretrain(out_dir, seed, stage_steps)` trains the tiny Video LLM from random init on video-only data;
- `checkpoint_dir()` is the shipped result (`load_backbone("miniworld")` loads it);
- `WORLD` holds the media format and the audio-transform settings that suit it.
"""
from __future__ import annotations

from pathlib import Path

from vlynx.miniworld.generate import SPLITS, generate_split, read_scenes
from vlynx.miniworld.questions import CATEGORIES, all_texts, build_tokenizer
from vlynx.miniworld.world import WORLD, Scene, WorldSettings

__all__ = [
    "CATEGORIES", "SPLITS", "WORLD", "Scene", "WorldSettings", "all_texts", "build_tokenizer",
    "checkpoint_dir", "generate_split", "pretrain", "read_scenes",
]


def checkpoint_dir() -> Path:
    """Folder of the shipped pretrained miniworld Video LLM (config, safetensors, tokenizer)."""
    return Path(__file__).resolve().parent / "checkpoint"


def pretrain(out_dir: str | Path, seed: int = 0, stage_steps: list[int] | None = None, **options) -> Path:
    """Pretrain the miniworld Video LLM on video-only data; returns the saved checkpoint folder.

    `stage_steps` replaces the steps of each stage of the schedule (`pretraining.STAGES`, in order);
    see `vlynx.miniworld.pretraining.PretrainConfig` for `options`.
    """
    from dataclasses import replace

    from vlynx.errors import VlynxError
    from vlynx.miniworld.pretraining import PretrainConfig, run_pretraining

    config = PretrainConfig(seed=seed, **options)
    if stage_steps is not None:
        if len(stage_steps) != len(config.stages):
            raise VlynxError(f"{len(stage_steps)} stage steps given for {len(config.stages)} stages: "
                             + ", ".join(repr(stage.name) for stage in config.stages))
        config = replace(config, stages=tuple(replace(stage, steps=steps)
                                              for stage, steps in zip(config.stages, stage_steps)))
    return run_pretraining(out_dir, config)
