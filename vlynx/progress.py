"""Logging and progress bars from one place, so library code never prints."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger("vlynx")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate with a progress bar on stderr (hidden when logging is quieter than INFO)."""
    disabled = not log.isEnabledFor(logging.INFO)
    yield from tqdm(items, desc=desc, total=total, unit=unit, disable=disabled, dynamic_ncols=True)
