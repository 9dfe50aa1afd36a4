"""Geometry of token groups in the LLM's input space, from streamed sums (paper Table B1; docs/diagnostics.md).

A group (the vocabulary's embeddings, the video tokens, a modality's tokens) is never held
whole: `DirectionSums` keeps the count, the sum of the rows and the sum of their unit
vectors u = x / ‖x‖, in float64. Every statistic follows exactly from those sums:

- mean cosine over the n(n−1) ordered pairs i ≠ j of one group:
  Σ_{i≠j} u_i·u_j = ‖Σu‖² − Σ‖u_i‖² = ‖Σu‖² − n, so mean cos = (‖Σu‖² − n) / (n(n−1));
- mean cosine over the n·m pairs of two groups: (Σu)·(Σw) / (n·m);
- the mean embedding: Σx / n;
- the modality gap (Liang et al. 2022): ‖Σu/n − Σw/m‖₂, the distance between the centroids of
  the L2-normalised rows. It depends only on directions, so scaling any row (or a whole group)
  by a positive factor leaves it unchanged.

Cosine *distance* is 1 − cos. Rows of zero norm have no direction: they are counted
(`zero_rows`) and left out of every statistic.

`TokenSample` keeps a seeded uniform sample of rows (for the MMD and the 2-D picture).
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch

# The keys of Table B1, as `vlynx diagnose --json` prints them.
TABLE_B1 = ("vocab_vocab_cosine", "frame_frame_cosine", "vocab_frame_cosine", "vocab_mean_norm", "frame_mean_norm",
            "modality_gap")


class DirectionSums:
    """Count, Σx and Σ x/‖x‖ (float64) of every non-zero row seen; `update` takes (n, D) batches."""

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.zero_rows = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)  # Σ x
        self.unit_sum = torch.zeros(dim, dtype=torch.float64)  # Σ x / ‖x‖

    def update(self, rows: torch.Tensor) -> None:
        rows = rows.detach().reshape(-1, rows.shape[-1]).to("cpu", torch.float64)
        norms = torch.linalg.vector_norm(rows, dim=1)
        nonzero = norms > 0
        self.zero_rows += int((~nonzero).sum())
        rows, norms = rows[nonzero], norms[nonzero]
        self.count += rows.shape[0]
        self.sum += rows.sum(0)
        self.unit_sum += (rows / norms[:, None]).sum(0)

    @property
    def centroid(self) -> torch.Tensor:
        """Mean of the unit vectors, (D,)."""
        return self.unit_sum / self._require_rows()

    @property
    def mean(self) -> torch.Tensor:
        """Mean row, (D,)."""
        return self.sum / self._require_rows()

    def _require_rows(self) -> int:
        if self.count == 0:
            raise ValueError("no non-zero rows seen: the statistics of nothing are undefined")
        return self.count


def within_cosine_distance(group: DirectionSums) -> float:
    """Mean of 1 − cos over all pairs of distinct rows of `group` (exact, from its sums)."""
    n = group.count
    if n < 2:
        return math.nan
    mean_cos = (float(group.unit_sum @ group.unit_sum) - n) / (n * (n - 1))
    return 1.0 - mean_cos


def between_cosine_distance(a: DirectionSums, b: DirectionSums) -> float:
    """Mean of 1 − cos over all pairs (row of `a`, row of `b`) (exact, from the sums)."""
    return 1.0 - float(a.unit_sum @ b.unit_sum) / (a._require_rows() * b._require_rows())


def mean_norm(group: DirectionSums) -> float:
    """‖mean row‖₂ of `group`."""
    return float(torch.linalg.vector_norm(group.mean))


def modality_gap(a: DirectionSums, b: DirectionSums) -> float:
    """‖centroid(a) − centroid(b)‖₂ of the L2-normalised rows (Liang et al. 2022); scale-invariant."""
    return float(torch.linalg.vector_norm(a.centroid - b.centroid))


def interface_table(vocab: DirectionSums, frames: DirectionSums) -> dict[str, float]:
    """Table B1: the vocabulary's and the video tokens' geometry, by the keys `vlynx diagnose --json` prints."""
    return {
        "vocab_vocab_cosine": within_cosine_distance(vocab),
        "frame_frame_cosine": within_cosine_distance(frames),
        "vocab_frame_cosine": between_cosine_distance(vocab, frames),
        "vocab_mean_norm": mean_norm(vocab),
        "frame_mean_norm": mean_norm(frames),
        "modality_gap": modality_gap(vocab, frames),
    }


def modality_geometry(tokens: DirectionSums, vocab: DirectionSums, frames: DirectionSums) -> dict[str, float]:
    """The same statistics for a new modality's tokens, against the vocabulary and the video tokens."""
    return {
        "modality_modality_cosine": within_cosine_distance(tokens),
        "vocab_modality_cosine": between_cosine_distance(vocab, tokens),
        "frame_modality_cosine": between_cosine_distance(frames, tokens),
        "modality_mean_norm": mean_norm(tokens),
        "modality_gap_to_vocab": modality_gap(vocab, tokens),
        "modality_gap_to_video": modality_gap(frames, tokens),
    }


def embedding_rows(weight: torch.Tensor, rows: int, chunk: int = 8192) -> Iterator[torch.Tensor]:
    """The first `rows` rows of an embedding matrix, `chunk` at a time (no float64 copy of the whole matrix)."""
    for start in range(0, rows, chunk):
        yield weight[start:min(start + chunk, rows)].detach()


class TokenSample:
    """A uniform sample of at most `size` rows of a stream, the same for the same seed and row order.

    Each row gets a random key from a seeded generator and the `size` rows with the smallest
    keys are kept (bottom-k sampling), so memory stays at `size` rows however long the stream.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.keys = torch.empty(0, dtype=torch.float64)
        self.rows: torch.Tensor | None = None

    def update(self, rows: torch.Tensor) -> None:
        rows = rows.detach().reshape(-1, rows.shape[-1]).to("cpu", torch.float32)
        keys = torch.rand(rows.shape[0], generator=self.generator, dtype=torch.float64)
        if self.rows is not None:
            rows, keys = torch.cat([self.rows, rows]), torch.cat([self.keys, keys])
        keep = torch.argsort(keys)[:self.size].sort().values  # stream order kept among the chosen
        self.rows, self.keys = rows[keep], keys[keep]

    @property
    def values(self) -> torch.Tensor:
        """The sampled rows (k, D), k = min(size, rows seen)."""
        if self.rows is None:
            raise ValueError("no rows seen")
        return self.rows
