"""`vlynx prepare`: a benchmark's files, as its owners release them, into a vlynx annotation file.

Each benchmark is one module here that reads its release (its docstring is the layout it expects)
and yields an `Item` per question; `prepare` then does what every benchmark shares:

1. ids are unique (a duplicate is an error naming it);
2. every media path exists; the missing ones are listed (path and ids) and are an error, unless
   `allow_missing`, which drops those entries and counts them;
3. the human turn is `<image>\\n` + `get_benchmark(name).entry_prompt(entry)`, the very text
   `vlynx eval` sends the model (training data that eval does not score keeps its conversation);
4. media paths are written relative to the output file's folder when they lie under it, else
   absolute, so align/tune/eval find them without a media root;
5. the file is written atomically, and never over an existing one unless `overwrite`.

Adding a benchmark = one module with a `PREPARER` + one line in `PREPARERS`.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlynx.errors import VlynxError
from vlynx.files import write_text_atomic
from vlynx.prepare import avqa, avsd, avut, egoexo, llava_video, music_avqa, scanqa, sqa3d
from vlynx.prepare.base import Item, Preparer
from vlynx.progress import log

PREPARERS: dict[str, Preparer] = {module.PREPARER.name: module.PREPARER for module in (
    music_avqa, avqa, avsd, scanqa, sqa3d, egoexo, llava_video, avut)}

MISSING_SHOWN = 10  # missing media files listed by name; the rest are counted


@dataclass
class PrepareSummary:
    """What `prepare` wrote: counts, and the media that were missing (path -> ids of its entries)."""

    benchmark: str
    split: str
    out: Path
    written: int
    dropped: int
    missing: dict[str, list[str]] = field(default_factory=dict)

    def to_text(self) -> str:
        lines = [f"{self.benchmark} {self.split}: {self.written} entries written to {self.out}"]
        if self.dropped:
            lines.append(f"{self.dropped} entries dropped: {len(self.missing)} media files missing (--allow-missing)")
        return "\n".join(lines) + "\n"


def get_preparer(name: str, split: str) -> Preparer:
    """The registered preparer called `name`, after checking that it has `split`."""
    if name not in PREPARERS:
        raise VlynxError(f"unknown benchmark {name!r}; choose one of {', '.join(PREPARERS)}")
    preparer = PREPARERS[name]
    if split not in preparer.splits:
        raise VlynxError(f"{name} has no split {split!r}; choose one of {', '.join(preparer.splits)}")
    return preparer


def prepare(name: str, release: str | Path, split: str, out: str | Path, media_root: str | Path | None = None,
            allow_missing: bool = False, overwrite: bool = False) -> PrepareSummary:
    """Read split `split` of benchmark `name` from the release folder `release` (media under `media_root`,
    default the release folder) and write the annotation file `out` (a JSON list of entries)."""
    preparer = get_preparer(name, split)
    # abspath also normalises "..", so "lies under the output folder" is decided on the real layout
    release, out = Path(os.path.abspath(release)), Path(os.path.abspath(out))
    media_root = release if media_root is None else Path(os.path.abspath(media_root))
    if out.exists() and not overwrite:
        raise VlynxError("exists; pass --overwrite to replace it", out)
    for folder, what in ((release, "release"), (media_root, "media root")):
        if not folder.is_dir():
            raise VlynxError(f"{what} folder not found", folder)

    items = list(preparer.items(release, split, media_root))
    check_unique_ids(items, release)
    resolved, missing = resolve_media(items)
    if missing and not allow_missing:
        raise VlynxError(missing_report(missing) + "; check --media-root, or pass --allow-missing to drop "
                         "those entries", media_root)
    kept = [(item, media) for item, media in zip(items, resolved) if media is not None]
    if missing:
        log.warning("%s; dropped %d of %d entries (--allow-missing)", missing_report(missing),
                    len(items) - len(kept), len(items))
    if not kept:
        raise VlynxError(f"no entries to write for {name} {split}", release)
    entries = [build_entry(preparer, item, media, out.parent) for item, media in kept]
    write_text_atomic(out, json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
    return PrepareSummary(benchmark=name, split=split, out=out, written=len(entries),
                          dropped=len(items) - len(kept), missing=missing)


def check_unique_ids(items: list[Item], release: Path) -> None:
    """Every item's id is unique; else a VlynxError naming the repeated ids."""
    counts = Counter(item.id for item in items)
    repeated = sorted(item_id for item_id, count in counts.items() if count > 1)
    if repeated:
        raise VlynxError(f"{len(repeated)} ids appear more than once: {', '.join(repeated[:MISSING_SHOWN])}", release)


def resolve_media(items: list[Item]) -> tuple[list[dict[str, Path] | None], dict[str, list[str]]]:
    """Per item, field -> its first existing candidate path (None when a field has none), and
    missing path -> ids of the items that need it."""
    resolved: list[dict[str, Path] | None] = []
    missing: dict[str, list[str]] = {}
    for item in items:
        media: dict[str, Path] | None = {}
        for key, candidates in item.media.items():
            found = next((path for path in candidates if path.exists()), None)
            if found is None:
                missing.setdefault(str(candidates[0]), []).append(item.id)
                media = None
            elif media is not None:
                media[key] = found
        resolved.append(media)
    return resolved, missing


def missing_report(missing: dict[str, list[str]]) -> str:
    """'N media files do not exist: path (ids a, b), ... and K more'."""
    shown = [f"{path} (ids {', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
             for path, ids in list(missing.items())[:MISSING_SHOWN]]
    more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
    entries = sum(len(ids) for ids in missing.values())
    return f"{len(missing)} media files named by {entries} entries do not exist: {'; '.join(shown)}{more}"


def media_path(path: Path, folder: Path) -> str:
    """`path` relative to `folder` when it lies under it, else absolute."""
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return os.path.abspath(path)


def build_entry(preparer: Preparer, item: Item, media: dict[str, Path], folder: Path) -> dict[str, Any]:
    """The annotation entry: id, media, conversation, benchmark name, then the benchmark's fields."""
    entry: dict[str, Any] = {"id": item.id}
    entry.update({key: media_path(path, folder) for key, path in media.items()})
    fields = {key: value for key, value in item.fields.items() if key != "id"}
    conversations = item.conversations
    if conversations is None:
        conversations = [{"from": "human", "value": "<image>\n" + entry_prompt(preparer.name, item)}]
        if item.answer is not None:
            conversations.append({"from": "gpt", "value": item.answer})
    entry["conversations"] = conversations
    entry["benchmark"] = preparer.name
    entry.update(fields)
    return entry


def entry_prompt(name: str, item: Item) -> str:
    """The benchmark's prompt for an item (one place: `Benchmark.entry_prompt`)."""
    from vlynx.metrics.tasks import get_benchmark

    try:
        return get_benchmark(name).entry_prompt(item.fields)
    except ValueError as error:
        raise VlynxError(f"entry {item.id!r} {error}") from error


__all__ = ["PREPARERS", "Item", "PrepareSummary", "Preparer", "get_preparer", "prepare"]
