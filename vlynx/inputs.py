"""Where a stage's inputs come from: a folder, a list file, or a LLaVA/PAVE annotation file.

Also the one reader of JSON / JSON Lines record files (annotations, benchmark references, predictions).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlynx.errors import VlynxError

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".m4a"}
RECORD_LISTS = ("annotations", "data", "questions")  # keys a JSON object may hold its list of records under


def read_json_records(path: str | Path, what: str = "file") -> Any:
    """A JSON document (a list, or a mapping such as DSTC7-AVSD's `{"dialogs": [...]}`), or the list of
    values of a JSON Lines file, whatever its suffix (LLaVA-3D writes JSONL into `.json` files).

    Raises `VlynxError` naming the file and the line when it is neither.
    """
    path = Path(path)
    if not path.is_file():
        raise VlynxError(f"{what} not found", path)
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        document_error = error
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if not records:  # not JSON Lines either: the document's own error is the useful one
                raise VlynxError(f"invalid JSON at line {document_error.lineno}: {document_error.msg}",
                                 path) from document_error
            raise VlynxError(f"line {number} is not a JSON Lines record: {error.msg}", path) from error
    return records


def as_records(data: Any, path: str | Path, what: str = "annotation") -> list[dict[str, Any]]:
    """`data` (as `read_json_records` returns it) as a list of objects: the list itself, the list a JSON
    object holds under one of RECORD_LISTS (Ego-Exo4D's files), or a lone object (a one-line JSONL file)."""
    if isinstance(data, dict):
        containers = [key for key in RECORD_LISTS if isinstance(data.get(key), list)]
        data = data[containers[0]] if containers else [data]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise VlynxError(f"expected a list of {what} objects (a JSON list, or JSONL: one object per line)", path)
    return data


def read_annotations(path: str | Path, what: str = "annotation") -> list[dict[str, Any]]:
    """Entries of a LLaVA/PAVE annotation file or a benchmark's reference file (see `read_json_records`
    and `as_records` for the accepted layouts)."""
    return as_records(read_json_records(path, f"{what} file"), path, what)


def list_media(spec: str | Path, field: str = "video", suffixes: set[str] | None = None,
               media_root: str | Path | None = None) -> list[Path]:
    """Media paths named by `spec`, in a stable order.

    - a directory: every file below it whose suffix is in `suffixes` (default: videos), sorted;
      when listing videos (the default), also every 3D scene folder below it (a folder with
      `color/`, read as video by `vlynx.media.video.read_video`), or the directory itself when
      it is one; for directory-valued media (depth scenes), pass `suffixes=set()` to list sub-directories;
    - a `.txt` list: one path per line (blank lines and `#` comments skipped);
    - a `.json`/`.jsonl` annotation file: the `field` of every entry that has one, each path once.
    Relative paths resolve against `media_root`, else the list/annotation file's folder.
    """
    spec = Path(spec)
    if spec.is_dir():
        if suffixes is None:
            return sorted(_videos_and_scenes(spec))
        if not suffixes:
            return sorted(p for p in spec.iterdir() if p.is_dir())
        return sorted(p for p in spec.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not spec.exists():
        raise VlynxError("no such file or directory", spec)
    root = Path(media_root) if media_root is not None else spec.parent
    if spec.suffix in (".json", ".jsonl"):
        # each file once, however many entries (questions) name it: statistics count videos, not questions
        names = list(dict.fromkeys(entry[field] for entry in read_annotations(spec) if entry.get(field)))
        if not names:
            raise VlynxError(f"no entry has a '{field}' field", spec)
    else:
        lines = spec.read_text(encoding="utf-8").splitlines()
        names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return [p if p.is_absolute() else root / p for p in map(Path, names)]


def _videos_and_scenes(folder: Path) -> list[Path]:
    """The video files and 3D scene folders at or below `folder`; a scene's own files are not searched."""
    from vlynx.media.scene import is_scene_folder

    if is_scene_folder(folder):
        return [folder]
    found = []
    for path in folder.iterdir():
        if path.is_dir():
            found.extend(_videos_and_scenes(path))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            found.append(path)
    return found


def require_existing(paths: list[Path], listed_in: str | Path) -> list[Path]:
    """`paths` when every one exists; else a `VlynxError` naming how many are missing and the first few.

    A path that does not exist is a typo or a wrong --media-root, not a bad video to skip.
    """
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise VlynxError(f"{len(missing)} of {len(paths)} listed files do not exist (check the list or "
                         f"--media-root), e.g. {', '.join(missing[:3])}", listed_in)
    return paths
