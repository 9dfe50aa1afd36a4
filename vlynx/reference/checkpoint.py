"""Resumable progress of a reference run: one safetensors file per rank in the checkpoint folder.

A checkpoint holds a rank's per-source sums, its skipped videos and how many of its videos
it has done. It records a digest of the job (model, frames, video lists, sharding) and is
continued only by the same job, so a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlynx.errors import VlynxError
from vlynx.outputs import IDENTITY_FILE
from vlynx.reference.accumulate import SourceAccumulator
from vlynx.reference.file import read_safetensors, write_safetensors
from vlynx.reference.sources import VideoSource

CHECKPOINT_FORMAT = "vlynx-reference-checkpoint"
_RANK_FILE = re.compile(r"rank(\d+)-of-(\d+)\.safetensors")


def rank_checkpoint(directory: str | Path, rank: int, world: int) -> Path:
    """The checkpoint file of `rank` (of `world` ranks) inside `directory`."""
    return Path(directory) / f"rank{rank}-of-{world}.safetensors"


def job_digest(fingerprint: dict[str, Any], frames: int, sources: Sequence[VideoSource], rank: int,
               world: int) -> str:
    """What a checkpoint must match to be resumed: model, frames, the exact video lists, the sharding."""
    job = {"fingerprint": fingerprint, "frames": frames, "rank": rank, "world": world,
           "sources": [[s.name, [str(p) for p in s.videos]] for s in sources]}
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: Path, job: str, cursor: int, accumulators: Sequence[SourceAccumulator],
                    skipped: list) -> None:
    """Write a rank's state after its first `cursor` videos, atomically."""
    tensors = {}
    for index, accumulator in enumerate(accumulators):
        tensors.update(accumulator.state(f"source{index}."))
    metadata = {"format": CHECKPOINT_FORMAT, "job": job, "cursor": str(cursor), "skipped": json.dumps(skipped)}
    write_safetensors(path, tensors, metadata)


def load_checkpoint(directory: str | Path, job: str, rank: int, world: int,
                    accumulators: Sequence[SourceAccumulator], skipped: list) -> int:
    """Restore this rank's state from `directory` into `accumulators` and `skipped`; the videos it covers.

    Returns 0 when this rank has no checkpoint yet. Raises `VlynxError` for a checkpoint of
    another job, including one written by a different number of ranks.
    """
    path = rank_checkpoint(directory, rank, world)
    if not path.exists():
        others = [p for p in Path(directory).glob("rank*-of-*.safetensors") if _RANK_FILE.fullmatch(p.name)]
        if any(int(_RANK_FILE.fullmatch(p.name)[2]) != world for p in others):
            raise VlynxError(f"{_DIFFERENT_RUN} (they were written by another number of ranks)", directory)
        return 0
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise VlynxError("is not a vlynx reference checkpoint; delete it or choose another --out", path)
    if metadata.get("job") != job:
        raise VlynxError(_DIFFERENT_RUN, path)
    for index, accumulator in enumerate(accumulators):
        accumulator.load_state(tensors, f"source{index}.")
    skipped.extend(tuple(entry) for entry in json.loads(metadata["skipped"]))
    return int(metadata["cursor"])


_DIFFERENT_RUN = ("checkpoint of a different run (model, frames, video lists or number of ranks differ); "
                  "delete it or pass --overwrite to start over")


def discard_checkpoint(directory: str | Path) -> None:
    """Remove the rank checkpoints in `directory`, then the folder if that leaves it empty.

    Call on one rank once the output is written and every rank is done (after a barrier).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if _RANK_FILE.fullmatch(path.name) or path.name == IDENTITY_FILE:
            path.unlink(missing_ok=True)
    if not any(directory.iterdir()):
        directory.rmdir()
