"""Where a stage's inputs come from: a folder, a list file, or a LLaVA/PAVE annotation file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlynx.errors import VlynxError

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".m4a"}


def read_annotations(path: str | Path) -> list[dict[str, Any]]:
    """Entries of a JSON list or JSONL annotation file (LLaVA/PAVE conversation format)."""
    path = Path(path)
    if not path.is_file():
        raise VlynxError("annotation file not found", path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise VlynxError(f"invalid JSON at line {error.lineno}: {error.msg}", path) from error
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise VlynxError("expected a JSON list of objects (or JSONL, one object per line)", path)
    return entries


def list_media(spec: str | Path, field: str = "video", suffixes: set[str] | None = None,
               media_root: str | Path | None = None) -> list[Path]:
    """Media paths named by `spec`, in a stable order.

    - a directory: every file below it whose suffix is in `suffixes` (default: videos), sorted;
      for directory-valued media (depth scenes), pass `suffixes=set()` to list sub-directories;
    - a `.txt` list: one path per line (blank lines and `#` comments skipped);
    - a `.json`/`.jsonl` annotation file: the `field` of every entry that has one.
    Relative paths resolve against `media_root`, else the list/annotation file's folder.
    """
    spec = Path(spec)
    suffixes = VIDEO_SUFFIXES if suffixes is None else suffixes
    if spec.is_dir():
        if not suffixes:
            return sorted(p for p in spec.iterdir() if p.is_dir())
        return sorted(p for p in spec.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not spec.exists():
        raise VlynxError("no such file or directory", spec)
    root = Path(media_root) if media_root is not None else spec.parent
    if spec.suffix in (".json", ".jsonl"):
        names = [entry[field] for entry in read_annotations(spec) if entry.get(field)]
        if not names:
            raise VlynxError(f"no entry has a '{field}' field", spec)
    else:
        lines = spec.read_text(encoding="utf-8").splitlines()
        names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return [p if p.is_absolute() else root / p for p in map(Path, names)]
