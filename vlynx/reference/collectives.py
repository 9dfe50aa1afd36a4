"""What the reference stage needs from `torch.distributed`: ranks, one decision for all, combined statistics.

Every function here also works without a process group (one rank); statistics are
combined with collectives, never through files.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch

from vlynx.errors import VlynxError
from vlynx.reference.accumulate import SourceAccumulator
from vlynx.stats import RunningMoments, RunningSum

T = TypeVar("T")


def distributed() -> bool:
    """Whether a process group is initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(this rank, number of ranks); (0, 1) without a process group."""
    if not distributed():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


@contextlib.contextmanager
def process_group(world: int, device: str) -> Iterator[None]:
    """A process group for the block when launched with `world` > 1 ranks (nccl on CUDA, else gloo).

    One that is already initialised is used as it is and left open.
    """
    dist = torch.distributed
    if world <= 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if distributed():
        torch.distributed.barrier()


def same_on_all_ranks(fingerprint: dict[str, Any]) -> None:
    """Raise `VlynxError` unless every rank loaded the same model."""
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, fingerprint)
    if any(other != fingerprint for other in gathered):
        raise VlynxError("the ranks loaded different models (backbone fingerprints differ)")


def all_reduce_sources(accumulators: Sequence[SourceAccumulator], device: torch.device) -> None:
    """Replace every rank's per-source statistics by their combination over all ranks (same on all ranks)."""
    # nccl reduces on the GPU, gloo on the CPU
    reduce_device = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    for accumulator in accumulators:
        for part in (accumulator.keys, accumulator.values, accumulator.tokens):
            _move(part, reduce_device)
            part.all_reduce()
        videos = torch.tensor([accumulator.videos], dtype=torch.int64, device=reduce_device)
        torch.distributed.all_reduce(videos)
        accumulator.videos = int(videos.item())


def gather_lists(items: list[T]) -> list[T]:
    """Every rank's `items`, concatenated in rank order (on every rank)."""
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def _move(part: RunningSum | RunningMoments, device: torch.device) -> None:
    if isinstance(part, RunningSum):
        part.total = part.total.to(device)
    else:
        part.mean, part.m2 = part.mean.to(device), part.m2.to(device)
