"""`compute_reference`: every reference video through the frozen base encoder once (eq. 2-3).

Videos are decoded in DataLoader worker processes, `batch_size` of them per encoder pass;
each rank takes its shard, can checkpoint and resume, and the ranks' statistics are
combined with collectives at the end.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from vlynx.backbones.base import Backbone
from vlynx.errors import VlynxError
from vlynx.media import read_video
from vlynx.progress import log, progress
from vlynx.reference import collectives
from vlynx.reference.accumulate import SourceAccumulator, accumulate, reference_stats
from vlynx.reference.checkpoint import job_digest, load_checkpoint, rank_checkpoint, save_checkpoint
from vlynx.reference.file import ReferenceStats
from vlynx.reference.sources import VideoSource


def compute_reference(
    backbone: Backbone,
    sources: Sequence[VideoSource],
    frames_per_video: int,
    *,
    batch_size: int = 4,
    workers: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> ReferenceStats:
    """Reference K/V (eq. 2) and token statistics (eq. 3) of `sources` on the frozen base encoder.

    Reads `frames_per_video` frames of every video (in `workers` processes), `batch_size`
    videos per encoder pass. With `checkpoint_dir`, each rank saves its running state there
    every `checkpoint_every` videos and at the end; with `resume` it first continues from its
    checkpoint there if it has one (same result as an uninterrupted run; a checkpoint of another
    job raises `VlynxError`). The caller removes them with `discard_checkpoint` once the output
    is written. Under an initialised `torch.distributed` process group every rank takes the
    videos `rank::world_size` and all ranks return the combined statistics. Unreadable videos
    are skipped and listed; raises `VlynxError` when no video is usable.
    """
    if frames_per_video < 1 or batch_size < 1 or workers < 0 or checkpoint_every < 0:
        raise VlynxError("frames and batch size must be >= 1, workers and checkpoint interval >= 0")
    rank, world = collectives.rank_and_world()
    fingerprint = backbone.fingerprint()
    if world > 1:
        collectives.same_on_all_ranks(fingerprint)

    items = [(path, s) for s, source in enumerate(sources) for path in source.videos]
    shard = items[rank::world]
    accumulators = [SourceAccumulator(backbone, backbone.device) for _ in sources]
    skipped: list[tuple[int, str, str]] = []  # (index in the unsharded list, path, reason)
    job = job_digest(fingerprint, frames_per_video, sources, rank, world)
    cursor = 0
    if checkpoint_dir is not None and resume:
        cursor = load_checkpoint(checkpoint_dir, job, rank, world, accumulators, skipped)
        if cursor:
            log.info("resuming from %s: %d of %d videos done on this rank", checkpoint_dir, cursor, len(shard))

    loader = torch.utils.data.DataLoader(
        _VideoFrames(shard, frames_per_video, backbone), batch_size=None, sampler=range(cursor, len(shard)),
        num_workers=workers, collate_fn=_keep,
        # fork: workers share the parent's memory instead of pickling the model into each of them
        multiprocessing_context=_fork_context() if workers > 0 else None,
    )
    pending: list[tuple[int, torch.Tensor | None, str | None]] = []  # decoded, not yet encoded
    with _base_encoder(backbone), torch.inference_mode():
        for item in progress(loader, desc="reference", total=len(shard) - cursor, unit="video"):
            pending.append(item)
            if len(pending) < batch_size and cursor + len(pending) < len(shard):
                continue
            usable = []
            for index, pixels, reason in pending:
                path, source = shard[index]
                if reason is None:
                    usable.append((source, pixels))
                else:
                    skipped.append((index * world + rank, str(path), reason))
            if usable:
                accumulate(backbone, accumulators, usable)
            before, cursor = cursor, cursor + len(pending)
            pending = []
            due = checkpoint_every and cursor // checkpoint_every > before // checkpoint_every
            if checkpoint_dir is not None and (due or cursor == len(shard)):
                save_checkpoint(rank_checkpoint(checkpoint_dir, rank, world), job, cursor, accumulators, skipped)

    if world > 1:
        collectives.all_reduce_sources(accumulators, backbone.device)
        skipped = collectives.gather_lists(skipped)
    skipped.sort(key=lambda entry: entry[0])
    skip_list = [{"path": path, "reason": reason} for _, path, reason in skipped]
    if skipped:
        log.warning("skipped %d unreadable video(s); they are listed in the statistics' `skipped`", len(skipped))
    return reference_stats(backbone, sources, accumulators, skip_list, fingerprint, frames_per_video)


class _VideoFrames(torch.utils.data.Dataset):
    """Decodes and preprocesses one video (file or 3D scene folder, uniform frames) per item (in DataLoader
    workers); errors become skip reasons."""

    def __init__(self, items: Sequence[tuple[Path, int]], frames_per_video: int, backbone: Backbone) -> None:
        self.items = items
        self.frames_per_video = frames_per_video
        self.preprocess = backbone.preprocess_frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        path = self.items[index][0]
        try:
            clip = read_video(path, self.frames_per_video)
            return index, self.preprocess(clip.frames), None  # (F, 3, S, S)
        except VlynxError as error:
            reason = str(error)
            return index, None, reason[len(error.path) + 2:] if error.path and reason.startswith(error.path) else reason
        except (OSError, ValueError, RuntimeError) as error:
            return index, None, f"{error.__class__.__name__}: {error}"


def _keep(item: Any) -> Any:
    return item


def _fork_context() -> Any:
    import multiprocessing

    return multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


@contextlib.contextmanager
def _base_encoder(backbone: Backbone) -> Iterator[None]:
    """The frozen base encoder: vision adapters off if any are attached."""
    if backbone.peft_model is None:
        yield
        return
    from vlynx.adapters import route

    with route(backbone, None):
        yield
