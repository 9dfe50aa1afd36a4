"""The one exception type that user-facing mistakes raise.

The CLI catches it once and prints a single line; library callers can catch it to
tell "your input is wrong" apart from bugs.
"""
from __future__ import annotations

from pathlib import Path


class VlynxError(Exception):
    """A problem with the user's input, files or settings (not a bug in vlynx)."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
