"""Streaming statistics against direct torch computations on the whole data."""
from __future__ import annotations

import torch

from vlynx.stats import RunningMoments, RunningSum


def _rows(seed: int, n: int = 257, dim: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # a large common offset makes a naive sum-of-squares variance lose most of its digits
    return 1e4 + torch.randn(n, dim, generator=generator, dtype=torch.float64) * torch.arange(1, dim + 1)


def test_batches_give_the_mean_and_population_variance_of_all_rows():
    rows = _rows(0)
    moments = RunningMoments(rows.shape[1])
    for start, stop in ((0, 1), (1, 50), (50, 51), (51, 200), (200, 257)):  # uneven batches, single rows
        moments.update(rows[start:stop])
    assert moments.count == 257
    torch.testing.assert_close(moments.mean, rows.mean(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(moments.variance, rows.var(0, unbiased=False), rtol=1e-12, atol=1e-12)


def test_float32_rows_are_accumulated_in_float64():
    rows = _rows(1, n=64).to(torch.float32)
    moments = RunningMoments(rows.shape[1])
    moments.update(rows[:30])
    moments.update(rows[30:])
    assert moments.mean.dtype == torch.float64
    expected = rows.double()
    torch.testing.assert_close(moments.variance, expected.var(0, unbiased=False), rtol=1e-12, atol=1e-12)


def test_merge_of_two_halves_equals_the_whole():
    rows = _rows(2)
    first, second, whole = RunningMoments(6), RunningMoments(6), RunningMoments(6)
    first.update(rows[:100])
    second.update(rows[100:170])
    second.update(rows[170:])
    whole.update(rows)
    first.merge(second)
    assert first.count == whole.count == 257
    torch.testing.assert_close(first.mean, whole.mean, rtol=0, atol=1e-10)
    torch.testing.assert_close(first.variance, whole.variance, rtol=1e-12, atol=1e-12)
    empty = RunningMoments(6)
    empty.merge(first)  # merging into / with nothing is the identity
    first.merge(RunningMoments(6))
    assert torch.equal(empty.mean, first.mean) and torch.equal(empty.m2, first.m2)


def test_state_round_trip_continues_exactly():
    rows = _rows(3)
    original = RunningMoments(6)
    original.update(rows[:90])
    restored = RunningMoments(6)
    restored.load_state(original.state("tokens_"), "tokens_")
    original.update(rows[90:])
    restored.update(rows[90:])
    assert restored.count == original.count
    assert torch.equal(restored.mean, original.mean) and torch.equal(restored.m2, original.m2)


def test_running_sum_mean_and_merge():
    generator = torch.Generator().manual_seed(4)
    frames = torch.randn(10, 2, 3, 4, generator=generator)
    first, second = RunningSum((2, 3, 4)), RunningSum((2, 3, 4))
    first.total += frames[:4].sum(0)
    first.count += 4
    second.total += frames[4:].sum(0)
    second.count += 6
    first.merge(second)
    assert first.total.dtype == torch.float32 and first.count == 10
    torch.testing.assert_close(first.mean, frames.double().mean(0).float(), rtol=0, atol=1e-6)
    restored = RunningSum((2, 3, 4))
    restored.load_state(first.state("k_"), "k_")
    assert torch.equal(restored.total, first.total) and restored.count == 10
