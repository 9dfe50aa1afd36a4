"""Streaming statistics that merge exactly: across batches, checkpoints and distributed ranks.

- `RunningMoments`: float64 mean and *population* variance of row vectors, updated one
  batch at a time and merged with Chan et al.'s pairwise formula (the parallel form of
  Welford's algorithm), so the order of merging changes results only by float64 rounding.
- `RunningSum`: a float32 running sum plus an exact integer count (the reference K/V means
  of eq. (2) are sums over frames divided by the number of frames).

Both can be turned into plain tensors (`state`) for safetensors checkpoints and combined
across `torch.distributed` ranks with collectives (`all_reduce`), never through files.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch


class RunningMoments:
    """Mean and population variance (float64) of all rows seen so far.

    `update(rows)` takes a (n, D) batch; `merge(other)` folds in another accumulator.
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.count = 0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)  # (D,)
        self.m2 = torch.zeros(dim, dtype=torch.float64, device=device)  # (D,) sum of squared deviations

    @property
    def variance(self) -> torch.Tensor:
        """Population variance (divides by the count, not count - 1), shape (D,)."""
        if self.count == 0:
            raise ValueError("no rows seen: the variance of nothing is undefined")
        return self.m2 / self.count

    def update(self, rows: torch.Tensor) -> None:
        """Fold a batch of rows (n, D) into the running state (batch moments in float64, then Chan merge)."""
        if rows.ndim != 2 or rows.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected rows shaped (n, {self.mean.shape[0]}), got {tuple(rows.shape)}")
        if rows.shape[0] == 0:
            return
        rows = rows.to(device=self.mean.device, dtype=torch.float64)
        batch_mean = rows.mean(0)
        batch_m2 = (rows - batch_mean).square().sum(0)
        self._merge(rows.shape[0], batch_mean, batch_m2)

    def merge(self, other: RunningMoments) -> None:
        """Fold another accumulator into this one (as if its rows had been seen here)."""
        self._merge(other.count, other.mean.to(self.mean.device), other.m2.to(self.m2.device))

    def _merge(self, count: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        if count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = count, mean.clone(), m2.clone()
            return
        total = self.count + count
        delta = mean - self.mean
        # Chan et al. (1979): exact pairwise combination of (count, mean, M2).
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * count / total)
        self.count = total

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors that restore this accumulator with `load_state` (for safetensors)."""
        return {
            f"{prefix}count": torch.tensor([self.count], dtype=torch.int64),
            f"{prefix}mean": self.mean.detach().cpu().contiguous(),
            f"{prefix}m2": self.m2.detach().cpu().contiguous(),
        }

    def load_state(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        self.count = int(tensors[f"{prefix}count"].item())
        self.mean = tensors[f"{prefix}mean"].to(self.mean.device, torch.float64).clone()
        self.m2 = tensors[f"{prefix}m2"].to(self.m2.device, torch.float64).clone()

    def all_reduce(self) -> None:
        """Replace the state by the merge of every rank's state, merged in rank order (same on all ranks)."""
        import torch.distributed as dist

        packed = torch.cat([torch.tensor([float(self.count)], dtype=torch.float64, device=self.mean.device),
                            self.mean, self.m2])
        gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, packed)
        dim = self.mean.shape[0]
        self.count, self.mean, self.m2 = 0, torch.zeros_like(self.mean), torch.zeros_like(self.m2)
        for part in gathered:
            self._merge(int(part[0].item()), part[1:1 + dim], part[1 + dim:])


class RunningSum:
    """A float32 running sum of tensors of a fixed shape and an exact count of what was summed."""

    def __init__(self, shape: Iterable[int], device: torch.device | str = "cpu") -> None:
        self.total = torch.zeros(tuple(shape), dtype=torch.float32, device=device)
        self.count = 0

    @property
    def mean(self) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("nothing summed: the mean of nothing is undefined")
        return self.total / self.count

    def merge(self, other: RunningSum) -> None:
        self.total += other.total.to(self.total.device)
        self.count += other.count

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}sum": self.total.detach().cpu().contiguous(),
                f"{prefix}count": torch.tensor([self.count], dtype=torch.int64)}

    def load_state(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        self.total = tensors[f"{prefix}sum"].to(self.total.device, torch.float32).clone()
        self.count = int(tensors[f"{prefix}count"].item())

    def all_reduce(self) -> None:
        """Sum the totals and counts of every rank (all ranks end with the same state)."""
        import torch.distributed as dist

        dist.all_reduce(self.total)
        count = torch.tensor([self.count], dtype=torch.int64, device=self.total.device)
        dist.all_reduce(count)
        self.count = int(count.item())
