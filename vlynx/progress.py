"""Logging and progress bars from one place, so library code never prints."""
from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger("vlynx")
_bars_hidden = False


def configure_logging(level: int) -> None:
    """vlynx's messages on stderr at `level`; the Hugging Face libraries at WARNING or quieter;
    library deprecation chatter (for developers, not users) hidden above DEBUG."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    log.setLevel(level)  # also when logging was configured before (a host program, pytest)
    for noisy in ("transformers", "peft", "accelerate"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if level > logging.DEBUG:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


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
