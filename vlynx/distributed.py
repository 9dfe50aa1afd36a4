"""Process-group facts the commands need under `torchrun` / `accelerate launch`."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def rank() -> int:
    """This process's global rank (0 when not launched distributed)."""
    return int(os.environ.get("RANK", "0"))


def close_process_group() -> None:
    """Tear down a process group a stage left open (HF Trainer does not), so ranks exit cleanly.

    Without this, gloo's threads can abort the interpreter at exit ("terminate called
    without an active exception") and the launcher reports the run as failed.
    """
    torch = sys.modules.get("torch")  # never import torch just to check
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def on_rank_zero(action: Callable[[], T]) -> T:
    """Run `action` on rank 0 only and return its result on every rank (once a process group exists).

    A `VlynxError` it raises is raised on every rank, so no rank is left waiting in a collective.
    """
    from vlynx.errors import VlynxError

    torch = sys.modules.get("torch")
    if torch is None or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return action()
    outcome: list[Any] = [None]
    if torch.distributed.get_rank() == 0:
        try:
            outcome = [("result", action())]
        except VlynxError as error:
            outcome = [("error", str(error))]
    torch.distributed.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "error":
        raise VlynxError(value)
    return value
