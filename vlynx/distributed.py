"""Process-group facts the commands need under `torchrun` / `accelerate launch`."""
from __future__ import annotations

import os
import sys


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
