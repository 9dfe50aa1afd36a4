"""vlynx.intervals against published t quantiles and intervals computed by hand."""
from __future__ import annotations

import math

import pytest

from vlynx.intervals import mean_interval, paired_difference, t_quantile_975


@pytest.mark.parametrize("df, published", [
    (1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423),
    # beyond the table (Cornish-Fisher): published 40, 60, 120 df values
    (40, 2.0211), (60, 2.0003), (120, 1.9799),
])
def test_t_quantiles_match_published_values(df, published):
    assert t_quantile_975(df) == pytest.approx(published, abs=2e-4)


def test_mean_interval_by_hand():
    # values 0.50, 0.60, 0.70: mean 0.60, sample sd 0.10, half width 4.3027 * 0.10 / sqrt(3) = 0.248416
    interval = mean_interval([0.5, 0.6, 0.7])
    assert interval.mean == pytest.approx(0.6)
    assert interval.half_width == pytest.approx(0.248416, abs=1e-6)
    assert (interval.low, interval.high) == pytest.approx((0.351584, 0.848416), abs=1e-6)
    assert interval.n == 3 and interval.excludes_zero()


def test_paired_difference_by_hand():
    # differences 0.1, 0.2, 0.3, 0.2: mean 0.2, sd sqrt(0.02/3), half width 3.1824 * sd / 2
    row, baseline = [0.6, 0.5, 0.9, 0.4], [0.5, 0.3, 0.6, 0.2]
    half = 3.1824 * math.sqrt(0.02 / 3) / 2
    interval = paired_difference(row, baseline)
    assert (interval.mean, interval.low, interval.high) == pytest.approx((0.2, 0.2 - half, 0.2 + half))
    assert interval.excludes_zero()
    # identical series: a zero-width interval at 0, which does not exclude 0
    assert not paired_difference(row, row).excludes_zero()


def test_one_run_has_no_interval_and_mismatched_pairs_are_refused():
    single = mean_interval([0.4])
    assert (single.low, single.mean, single.high) == (0.4, 0.4, 0.4) and not single.excludes_zero()
    with pytest.raises(ValueError):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        mean_interval([])
