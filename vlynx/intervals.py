"""95 % confidence intervals over a few runs: Student's t interval of a mean, and of paired differences.

With n runs a₁…aₙ, the interval is mean ± t₀.₉₇₅,ₙ₋₁ · s / √n, s the sample standard deviation
(n − 1 in the denominator). Paired differences are the same interval over dᵢ = aᵢ − bᵢ, runs i of
the two series sharing their seed (docs/demo.md, "Statistics"). scipy is not a dependency, so the
t quantiles come from a table (df ≤ 30) and the Cornish–Fisher expansion beyond.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# t quantile at 0.975 (two-sided 95 %) for 1..30 degrees of freedom, from the standard table.
T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError("a t interval needs at least 1 degree of freedom (2 runs)")
    if df <= len(T_975):
        return T_975[df - 1]
    # Cornish-Fisher: t = z + (z^3 + z) / 4df + (5z^5 + 16z^3 + 3z) / 96df^2, within 1e-4 beyond df = 30.
    z = statistics.NormalDist().inv_cdf(0.975)
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    """Mean of n values and its 95 % t interval [low, high]; with one value the interval is the point."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        return {k: round(v, digits) if isinstance(v, float) else v for k, v in asdict(self).items()}


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean and 95 % Student t interval of `values` (runs assumed independent)."""
    if not values:
        raise ValueError("no values: the mean of nothing is undefined")
    n, mean = len(values), statistics.fmean(values)
    if n == 1:
        return Interval(mean, mean, mean, 1)
    half = t_quantile_975(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> Interval:
    """Mean and 95 % paired t interval of values[i] - baseline[i] (the i-th runs share their seed)."""
    if len(values) != len(baseline):
        raise ValueError(f"paired series differ in length: {len(values)} and {len(baseline)}")
    return mean_interval([a - b for a, b in zip(values, baseline)])
