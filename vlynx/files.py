"""Atomic writing: an interrupted run never leaves a half-written file or folder that looks complete."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """A fresh, empty folder beside `path` to fill; it replaces `path` whole only if the block completes.

    On success an existing `path` is moved aside, the staging folder renamed into place and the
    old one removed; on an exception the staging folder is removed and `path` is left untouched.
    """
    path = Path(os.path.abspath(path))  # "out/.." or "." get a real name to stage beside
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir()  # 0o777 less the umask, like any folder (tempfile.mkdtemp would give 0o700)
    try:
        yield staging
        if path.exists() or path.is_symlink():
            _swap_in(staging, path)
        else:
            os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, path: Path) -> None:
    """Move `path` aside, rename `staging` onto it, remove the old one (put back if the rename fails)."""
    aside = staging.with_name(f"{staging.name}.old")
    os.replace(path, aside)
    try:
        os.replace(staging, path)
    except BaseException:
        os.replace(aside, path)
        raise
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink()


def ordinary_permissions(path: str | Path) -> None:
    """Give the safetensors files at or below `path` the permissions of any new file (0o666 less the umask).

    safetensors writes through a private (0o600) temporary file, which others could not read.
    """
    path = Path(path)
    umask = os.umask(0)
    os.umask(umask)
    for file in [path] if path.is_file() else path.rglob("*.safetensors"):
        os.chmod(file, 0o666 & ~umask)
