"""The reference videos, grouped by source (one benchmark or dataset each).

A reference "video" is a video file or a 3D scene folder (its colour frames, `vlynx.media.scene`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlynx.errors import VlynxError


@dataclass(frozen=True)
class VideoSource:
    """A named set of reference videos (one benchmark or dataset)."""

    name: str
    videos: tuple[Path, ...]


def video_sources(specs: Sequence[str | Path], names: Sequence[str] | None = None) -> list[VideoSource]:
    """One `VideoSource` per spec (DIR | LIST.txt | ANNOT.json[l], see `vlynx.inputs.list_media`).

    `names` default to each spec's file or folder name (without suffix); they must be unique.
    A folder spec lists the video files and 3D scene folders below it. Raises `VlynxError` for
    a spec that is missing, lists no videos or lists files that do not exist.
    """
    from vlynx.inputs import list_media, require_existing

    names = list(names) if names else []
    if names and len(names) != len(specs):
        raise VlynxError(f"got {len(specs)} video sets but {len(names)} source names; give one name per set")
    result = []
    for index, spec in enumerate(specs):
        name = names[index] if names else (Path(spec).stem or Path(spec).name)
        videos = tuple(require_existing(list_media(spec), spec))
        if not videos:
            raise VlynxError("lists no videos (video files or 3D scene folders with color/*.jpg)", spec)
        result.append(VideoSource(name, videos))
    seen = [s.name for s in result]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise VlynxError(f"source names must be unique, repeated: {', '.join(duplicates)} (name them with --source)")
    return result
