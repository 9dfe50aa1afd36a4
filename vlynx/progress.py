"""Logging and progress bars from one place, so library code never prints."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger("vlynx")
_bars_hidden = False


def hide_bars() -> None:
    """No progress bars from here on (a worker process beside others), whatever the log level."""
    global _bars_hidden
    _bars_hidden = True


def bars_shown() -> bool:
    """Whether progress bars are drawn: at INFO and below, unless hidden."""
    return log.isEnabledFor(logging.INFO) and not _bars_hidden


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate with a progress bar on stderr (hidden when logging is quieter than INFO)."""
    yield from tqdm(items, desc=desc, total=total, unit=unit, disable=not bars_shown(), dynamic_ncols=True)
