"""What every benchmark module of `vlynx.prepare` builds on: the `Item` a module yields per question,
the `Preparer` that names a module in the registry, and small readers for released files.

A module only reads its release and says which media each question needs (as candidate paths, the
first that exists wins); the shared steps in `vlynx.prepare` check ids and media, phrase the prompt
and write the file.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlynx.errors import VlynxError
from vlynx.inputs import read_json_records
from vlynx.progress import log


@dataclass
class Item:
    """One question of a release, before the shared checks.

    `fields`: the entry's own fields, `id` first, then the benchmark's fields (`question`, ...).
    `media`: entry field ("video", "audio", "egocentric") -> candidate paths; the first that exists
    is used, and when none does the first is reported missing.
    `answer`: the reference answer for the gpt turn (None for a split released without answers).
    `conversations`: the released conversation kept as it is (training data that eval does not score);
    None to phrase one from `fields` with the benchmark's `entry_prompt`.
    """

    fields: dict[str, Any]
    media: dict[str, list[Path]]
    answer: str | None = None
    conversations: list[dict[str, str]] | None = None

    @property
    def id(self) -> str:
        return str(self.fields["id"])


@dataclass(frozen=True)
class Preparer:
    """A benchmark `vlynx prepare` knows: its splits, one line on what it reads, and its reader
    `items(release, split, media_root)`."""

    name: str
    splits: tuple[str, ...]
    reads: str
    items: Callable[[Path, str, Path], Iterable[Item]]


def release_file(release: Path, names: Iterable[str], subfolders: Iterable[str] = ("",)) -> Path:
    """The first of `names` found in `release` or one of its `subfolders` (the release's own layout);
    a VlynxError listing where it looked when none is there."""
    looked = []
    for name in names:
        for sub in subfolders:
            path = release / sub / name
            if path.is_file():
                log.info("reading %s", path)
                return path
            looked.append(str(path.relative_to(release)))
    raise VlynxError(f"release file not found (looked for {', '.join(looked)})", release)


def read_release_json(path: Path) -> Any:
    """A released JSON document (see `vlynx.inputs.read_json_records`)."""
    return read_json_records(path, "release file")


def record_list(data: Any, path: Path, key: str | None = None) -> list[dict[str, Any]]:
    """The list of records of a released document: `data` itself, or `data[key]`."""
    records = data.get(key) if key is not None and isinstance(data, dict) else data
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        where = f"a JSON object with a '{key}' list" if key else "a JSON list"
        raise VlynxError(f"expected {where} of records", path)
    return records


def need(record: dict[str, Any], key: str, index: int, path: Path) -> Any:
    """record[key], or a VlynxError naming the record and the missing field."""
    value = record.get(key)
    if value is None:
        raise VlynxError(f"record {index} has no '{key}'", path)
    return value
