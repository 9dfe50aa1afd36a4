"""Table B1 statistics from streamed sums, against hand-made embeddings and brute-force pairwise sums."""
from __future__ import annotations

import math

import pytest
import torch

from vlynx.diagnose.gap import VideoReference, distribution_terms, median_bandwidth, rbf_mmd
from vlynx.diagnose.geometry import (
    DirectionSums, TokenSample, between_cosine_distance, interface_table, mean_norm, modality_gap,
    within_cosine_distance,
)
from vlynx.stats import RunningMoments


def sums(rows, chunk=None):
    rows = torch.as_tensor(rows, dtype=torch.float64)
    group = DirectionSums(rows.shape[1])
    for start in range(0, len(rows), chunk or len(rows)):
        group.update(rows[start:start + (chunk or len(rows))])
    return group


# Hand-made: three orthogonal vocabulary rows of different lengths (plus a zero row, which has no
# direction) and two frame tokens at 45 degrees to each other, one of them at 45 degrees to vocab row 3.
VOCAB = [[2, 0, 0, 0], [0, 3, 0, 0], [0, 0, 0.5, 0], [0, 0, 0, 0]]
FRAMES = [[0, 0, 0, 7], [0, 0, 1, 1]]


def test_table_b1_of_hand_made_embeddings():
    vocab, frames = sums(VOCAB), sums(FRAMES)
    table = interface_table(vocab, frames)
    assert vocab.count == 3 and vocab.zero_rows == 1
    assert table["vocab_vocab_cosine"] == pytest.approx(1.0)  # orthogonal: cos 0 for every pair
    assert table["frame_frame_cosine"] == pytest.approx(1 - 1 / math.sqrt(2))
    # six pairs, only (vocab row 3, frame 2) has cos 1/sqrt(2)
    assert table["vocab_frame_cosine"] == pytest.approx(1 - (1 / math.sqrt(2)) / 6)
    assert table["vocab_mean_norm"] == pytest.approx(math.sqrt(2 ** 2 + 3 ** 2 + 0.5 ** 2) / 3)
    assert table["frame_mean_norm"] == pytest.approx(math.sqrt(0.5 ** 2 + 4 ** 2))  # mean (0, 0, 0.5, 4)
    s = 1 / math.sqrt(2)
    centroid_vocab = [1 / 3, 1 / 3, 1 / 3, 0]
    centroid_frames = [0, 0, s / 2, (1 + s) / 2]
    assert table["modality_gap"] == pytest.approx(math.dist(centroid_vocab, centroid_frames))


def test_statistics_equal_brute_force_pairs_and_streaming_changes_nothing():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(37, 6, generator=generator, dtype=torch.float64) + 0.5
    b = torch.randn(23, 6, generator=generator, dtype=torch.float64) * 3 - 1
    unit_a, unit_b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    cos_aa = unit_a @ unit_a.T
    pairs = ~torch.eye(len(a), dtype=torch.bool)
    expected_within = float((1 - cos_aa[pairs]).mean())
    expected_between = float((1 - unit_a @ unit_b.T).mean())
    for chunk in (None, 5):  # one batch, or streamed in pieces
        group_a, group_b = sums(a, chunk), sums(b, chunk)
        assert within_cosine_distance(group_a) == pytest.approx(expected_within, abs=1e-12)
        assert between_cosine_distance(group_a, group_b) == pytest.approx(expected_between, abs=1e-12)
        assert mean_norm(group_b) == pytest.approx(float(b.mean(0).norm()), abs=1e-12)
        assert modality_gap(group_a, group_b) == pytest.approx(float((unit_a.mean(0) - unit_b.mean(0)).norm()),
                                                               abs=1e-12)


def test_modality_gap_is_scale_invariant_and_mean_norm_is_not():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(10, 5, generator=generator, dtype=torch.float64)
    b = torch.randn(8, 5, generator=generator, dtype=torch.float64) + 1
    scales = torch.rand(10, 1, generator=generator, dtype=torch.float64) * 100 + 0.01  # every row its own positive factor
    assert modality_gap(sums(a * scales), sums(b * 7)) == pytest.approx(modality_gap(sums(a), sums(b)), abs=1e-12)
    assert mean_norm(sums(b * 7)) == pytest.approx(7 * mean_norm(sums(b)))


def test_token_sample_is_a_seeded_subset_of_bounded_size():
    rows = torch.arange(100, dtype=torch.float32).reshape(50, 2)
    first, second = TokenSample(8, seed=3), TokenSample(8, seed=3)
    for sample in (first, second):
        for start in range(0, 50, 7):
            sample.update(rows[start:start + 7])
    assert first.values.shape == (8, 2) and torch.equal(first.values, second.values)
    assert all(any(torch.equal(row, other) for other in rows) for row in first.values)
    small = TokenSample(80, seed=0)
    small.update(rows)
    assert torch.equal(small.values, rows)  # fewer rows than the size: all of them, in order


def test_rbf_mmd_by_hand():
    x, y = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    assert rbf_mmd(x, y, bandwidth=1.0) == pytest.approx(math.sqrt(2 - 2 * math.exp(-0.5)))
    z = torch.randn(6, 3)
    assert rbf_mmd(z, z.clone(), bandwidth=0.7) == pytest.approx(0.0, abs=1e-7)
    # median of the pairwise distances 1, 2, 3 of the points 0, 1, 3: 2
    assert median_bandwidth(torch.tensor([[0.0], [1.0], [3.0]])) == pytest.approx(2.0)


def test_distribution_terms_by_hand():
    tokens = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # mean (2, 2), population variance (1, 0)
    moments = RunningMoments(2)
    moments.update(tokens)
    reference = VideoReference(torch.zeros(1), torch.zeros(1), torch.tensor([2.0, 5.0]), torch.tensor([1.0, 4.0]))
    l2 = distribution_terms(moments, reference, "l2norm")
    assert l2["distribution_mean_distance"] == pytest.approx(3.0)
    assert l2["distribution_var_distance"] == pytest.approx(4.0)
    assert l2["distribution_term"] == pytest.approx(7.0)
    mse = distribution_terms(moments, reference, "mse")
    assert mse["distribution_term"] == pytest.approx(9 / 2 + 16 / 2)
