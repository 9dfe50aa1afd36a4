"""How stable the reference K/V are across sources: the paper's Table B2 diagnostics (App. B.1)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vlynx.reference.file import ReferenceStats


@dataclass(frozen=True)
class LayerStability:
    """Table B2 diagnostics of one encoder layer (see `stability_report`)."""

    layer: int  # 1-based, as in the paper
    key_magnitude: float
    key_variance: float | None
    key_dominance: float | None
    value_magnitude: float
    value_variance: float | None
    value_dominance: float | None


def stability_report(reference: ReferenceStats) -> list[LayerStability]:
    """Per layer l, how stable the reference K/V are across sources (paper App. B.1, Table B2).

    With K̄ the reference keys of eq. (2) and K̄_s the mean keys over the frames of source s
    (S sources), all (heads, positions, head_dim) at layer l:
      magnitude_K(l) = mean over elements of |K̄[l]|
      variance_K(l)  = (1/S) Σ_s mean over elements of (K̄_s[l] − K̄[l])²
      dominance_K(l) = magnitude_K(l) / variance_K(l)   (≫ 1: the reference is stable)
    Values likewise. Variance and dominance are None with fewer than two sources.
    """
    names = list(reference.source_keys)
    rows = []
    for layer in range(reference.keys.shape[0]):
        entries = []
        for mean, per_source in ((reference.keys, reference.source_keys),
                                 (reference.values, reference.source_values)):
            magnitude = mean[layer].double().abs().mean().item()
            variance = dominance = None
            if len(names) >= 2:
                variance = torch.stack(
                    [(per_source[n][layer].double() - mean[layer].double()).square().mean() for n in names]
                ).mean().item()
                dominance = magnitude / variance if variance > 0 else math.inf
            entries += [magnitude, variance, dominance]
        rows.append(LayerStability(layer + 1, *entries))
    return rows


def format_report(reference: ReferenceStats) -> str:
    """A plain-text Table B2 with the counts and sources of the file."""
    counts = reference.counts
    lines = [f"reference statistics: {counts['videos']} videos, {counts['frames']} frames "
             f"({reference.frames_per_video} per video), {counts['tokens']} tokens, "
             f"{len(reference.skipped)} skipped"]
    for name, source in reference.sources.items():
        lines.append(f"  source {name}: {source['videos']} videos, {source['frames']} frames")
    rows = stability_report(reference)
    if not reference.source_keys:
        lines.append("variance across sources needs at least two sources (run with several --videos/--source)")

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else "inf" if math.isinf(value) else f"{value:.{digits}f}"

    lines.append(f"{'layer':>5} | {'|K|':>8} {'var K':>10} {'dom K':>9} | {'|V|':>8} {'var V':>10} {'dom V':>9}")
    for row in rows:
        lines.append(f"{row.layer:>5} | {row.key_magnitude:8.3f} {number(row.key_variance, 6):>10} "
                     f"{number(row.key_dominance, 1):>9} | {row.value_magnitude:8.3f} "
                     f"{number(row.value_variance, 6):>10} {number(row.value_dominance, 1):>9}")

    def average(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else sum(values) / len(values)

    lines.append(
        f"{'mean':>5} | {average([r.key_magnitude for r in rows]):8.3f} "
        f"{number(average([r.key_variance for r in rows]), 6):>10} {number(average([r.key_dominance for r in rows]), 1):>9} | "
        f"{average([r.value_magnitude for r in rows]):8.3f} {number(average([r.value_variance for r in rows]), 6):>10} "
        f"{number(average([r.value_dominance for r in rows]), 1):>9}")
    return "\n".join(lines)
