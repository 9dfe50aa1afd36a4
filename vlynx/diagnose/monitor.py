"""The interface gap logged while `vlynx align` trains (`--eval-data D --eval-steps N`).

At the start, every N optimiser steps and at the last step, the adapter being trained is run
(eval mode, no autograd) over held-out modality inputs and the terms of `vlynx diagnose`'s
interface gap that the reference statistics define are logged through the Trainer's own `log`:
`interface_gap/attention_term` (eq. 6), one `interface_gap/attention_term_layer_L` per encoder
layer, and `interface_gap/distribution_term` (eq. 8) with its mean and variance parts. The
curve is then in `trainer_state.json`, the run record and any tracker the user enables.
(The cosine geometry and the MMD also need the video tokens and the LLM's embeddings, which
alignment never loads: `vlynx diagnose` gives them.)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from vlynx.backbones.base import Backbone
from vlynx.diagnose.gap import VideoReference, interface_gap, pixel_batches, token_pass
from vlynx.losses import AlignmentLossSettings
from vlynx.progress import log

PREFIX = "interface_gap/"


class InterfaceGapMonitor(TrainerCallback):
    """Logs the held-out interface gap of `modality`'s adapter at step 0, every `every` steps and at the end."""

    def __init__(self, trainer: Any, backbone: Backbone, modality: str, transform: Any, paths: Sequence[Path],
                 frames: int, reference: VideoReference, settings: AlignmentLossSettings, every: int,
                 batch_size: int = 8) -> None:
        self.trainer, self.backbone, self.modality, self.transform = trainer, backbone, modality, transform
        self.paths, self.frames, self.reference, self.settings = list(paths), frames, reference, settings
        self.every, self.batch_size = every, batch_size

    def measure(self) -> dict[str, float]:
        """The gap of the adapter as it is now, as log entries."""
        skipped: list[dict[str, str]] = []
        batches = pixel_batches(self.paths, lambda path: self.transform.frames(path, self.frames),
                                self.backbone.preprocess_frames, self.batch_size, skipped)
        stats = token_pass(self.backbone, batches, modality=self.modality, reference=self.reference,
                           settings=self.settings, images_per_frame=self.transform.images_per_frame, sample_size=1)
        if skipped:
            log.warning("interface gap: %d held-out input(s) unreadable and left out (first: %s: %s)", len(skipped),
                        skipped[0]["path"], skipped[0]["reason"])
        gap = interface_gap(stats, self.reference, self.settings)
        entries = {f"{PREFIX}{key}": gap[key] for key in ("attention_term", "distribution_term",
                                                          "distribution_mean_distance", "distribution_var_distance")}
        for layer, value in enumerate(gap["attention_term_per_layer"]):
            entries[f"{PREFIX}attention_term_layer_{layer}"] = value
        return entries

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:  # a resumed run has its earlier points in its restored log history
            self.trainer.log(self.measure())

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.trainer.log(self.measure())


def attach_gap_monitor(trainer: Any, backbone: Backbone, config: Any, transform: Any, paths: Sequence[Path],
                       frames: int, reference: Any, settings: AlignmentLossSettings) -> InterfaceGapMonitor:
    """Add the monitor to an alignment `trainer` for `config` (an `AlignConfig` with `eval_data` set)."""
    video = VideoReference(reference.keys, reference.values, reference.token_mean, reference.token_var)
    monitor = InterfaceGapMonitor(trainer, backbone, config.modality, transform, paths, frames, video, settings,
                                  config.eval_steps, config.batch_size)
    trainer.add_callback(monitor)
    return monitor


def gap_curve(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The interface-gap entries of a Trainer log history: [{"step", name: value, ...}] (names without the prefix)."""
    return [{"step": entry["step"], **{key[len(PREFIX):]: value for key, value in entry.items()
                                       if key.startswith(PREFIX)}}
            for entry in history if any(key.startswith(PREFIX) for key in entry)]
