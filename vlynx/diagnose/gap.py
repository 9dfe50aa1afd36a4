"""The interface gap of a new modality: how far its tokens are from the video tokens (docs/diagnostics.md).

One streamed pass over a set of inputs (`token_pass`) folds every batch's projected tokens
into direction sums (cosines, centroids), float64 moments (eq. 7) and a seeded sample, and,
given reference statistics, every encoder layer's attention-alignment distance (eq. 4-6).
Video passes can also sum each layer's keys and values (eq. 2), so the reference comes
from the same pass. `interface_gap` turns a modality pass into numbers:

- `attention_term_per_layer[l]`: dist(O_l(A_l(x))[S], O_l(Ā_l(x)[S])) over every frame of every
  input (mean |a − b| for `attn_loss: l1`, mean (a − b)² for `mse`), and `attention_term`, its
  mean over layers: eq. (6) on these data, with the settings alignment uses;
- `distribution_term`: eq. (8) between the moments of all the modality's tokens and the
  video statistics (`distribution_mean_distance` + `distribution_var_distance`);
- `mmd`: the maximum mean discrepancy between samples of modality and video tokens under a
  Gaussian kernel (`rbf_mmd`);
- the cosine geometry of `vlynx.diagnose.geometry.modality_geometry` when the vocabulary
  and the video tokens' sums are given.

The attention term reuses `vlynx.losses` (`recorded_layers`, `layer_distances`), so it is what
alignment minimises, only averaged over a whole data set instead of a batch.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlynx.adapters import as_encoder_videos, average_image_groups, route
from vlynx.backbones.base import Backbone
from vlynx.diagnose.geometry import DirectionSums, TokenSample, modality_geometry
from vlynx.errors import VlynxError
from vlynx.losses import AlignmentLossSettings, layer_distances, recorded_layers
from vlynx.stats import RunningMoments, RunningSum


@dataclass(frozen=True)
class VideoReference:
    """What the gap is measured against: K̄, V̄ (layers, heads, positions, head_dim), eq. (2); μ_v, σ²_v (D,), eq. (3)."""

    keys: torch.Tensor
    values: torch.Tensor
    token_mean: torch.Tensor
    token_var: torch.Tensor


@dataclass
class TokenStats:
    """Everything one pass keeps about its tokens; nothing grows with the number of inputs but `skipped`."""

    directions: DirectionSums
    moments: RunningMoments  # eq. (7) over every token
    sample: TokenSample
    inputs: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    attention_sums: torch.Tensor | None = None  # (layers,) float64 Σ of |a − b| or (a − b)² elements
    attention_elements: torch.Tensor | None = None  # (layers,) how many elements each sum holds
    keys: RunningSum | None = None  # video passes: eq. (2) sums over frames
    values: RunningSum | None = None

    def reference(self) -> VideoReference:
        """K̄, V̄, μ, σ² of a video pass made with `reference_sums=True`."""
        return VideoReference(self.keys.mean, self.values.mean, self.moments.mean, self.moments.variance)


# ----- inputs --------------------------------------------------------------------------------------
def pixel_batches(paths: Sequence[Path], read: Callable[[Path], np.ndarray], preprocess: Callable[..., torch.Tensor],
                  batch_size: int, skipped: list[dict[str, str]]) -> Iterator[torch.Tensor]:
    """Encoder inputs (B, F, 3, S, S) of `paths`, `batch_size` at a time.

    `read(path)` gives uint8 frames (F, H, W, 3); an input it cannot read (`VlynxError`) is
    left out and appended to `skipped` as {"path", "reason"}, never replaced by another.
    """
    batch: list[torch.Tensor] = []
    for path in paths:
        try:
            batch.append(preprocess(read(path)))
        except VlynxError as error:
            skipped.append({"path": str(path), "reason": str(error)})
            continue
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


# ----- one pass --------------------------------------------------------------------------------------
def token_pass(backbone: Backbone, batches: Iterable[torch.Tensor], *, modality: str | None = None,
               reference: VideoReference | None = None,
               settings: AlignmentLossSettings = AlignmentLossSettings(), images_per_frame: int = 1,
               reference_sums: bool = False, sample_size: int = 2000, seed: int = 0) -> TokenStats:
    """Stream `batches` (B, F*k, 3, S, S) through the encoder routed for `modality` (None: the base encoder).

    With `reference`, every layer's attention-alignment distance (eq. 6) is summed as well; with
    `reference_sums` (video), every layer's keys and values (eq. 2). Tokens of each k images are
    averaged first, as the LLM gets them. Runs without autograd, with the encoder in eval mode
    (no LoRA dropout), and restores its mode.
    """
    layout = backbone.layout
    stats = TokenStats(DirectionSums(backbone.llm_hidden_size), RunningMoments(backbone.llm_hidden_size),
                       TokenSample(sample_size, seed))
    if reference is not None:
        stats.attention_sums = torch.zeros(layout.num_layers, dtype=torch.float64)
        stats.attention_elements = torch.zeros(layout.num_layers, dtype=torch.float64)
    if reference_sums:
        shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
        stats.keys, stats.values = RunningSum(shape), RunningSum(shape)
    tower = backbone.vision_tower
    was_training = tower.training
    tower.eval()
    try:
        with torch.no_grad():
            for pixels in batches:
                images = _encode(backbone, as_encoder_videos(backbone, pixels, images_per_frame), modality,
                                 reference, settings, stats)  # (B, F*k*n + 1, D); fused frames: (B*k, T, D)
                tokens = average_image_groups(backbone, images, images_per_frame)  # (B, F*n + 1, D), as the LLM gets
                rows = tokens.reshape(-1, tokens.shape[-1])
                stats.directions.update(rows)
                stats.sample.update(rows)
                # eq. (7) over the same tokens as the alignment run's distribution loss
                moment_rows = images if settings.dist_per_image else tokens
                stats.moments.update(moment_rows.reshape(-1, moment_rows.shape[-1]))
                stats.inputs += pixels.shape[0]
    finally:
        tower.train(was_training)
    return stats


def _encode(backbone: Backbone, pixels: torch.Tensor, modality: str | None, reference: VideoReference | None,
            settings: AlignmentLossSettings, stats: TokenStats) -> torch.Tensor:
    """One encoder forward; folds eq. (6) distances and eq. (2) sums into `stats`; returns the tokens."""

    def add_keys_values(layer: int, _queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        if stats.keys is not None:
            stats.keys.total[layer] += keys.float().sum(0).cpu()  # (heads, positions, head_dim)
            stats.values.total[layer] += values.float().sum(0).cpu()

    keep = None if settings.all_queries else backbone.query_positions().to(backbone.device)
    with route(backbone, modality), recorded_layers(backbone, keep, on_layer=add_keys_values) as records:
        tokens = backbone.encode_frames(pixels)  # (B, F*k*n + 1, D)
        if reference is not None:
            keys, values = reference.keys.to(backbone.device), reference.values.to(backbone.device)
            distances = layer_distances(backbone, records, keys, values, settings)  # eq. (4)-(5), one per layer
            for layer, distance in enumerate(distances):  # each a mean over its elements: weight by their number
                elements = (records[layer].before if settings.before_out_proj else records[layer].after).numel()
                stats.attention_sums[layer] += float(distance) * elements
                stats.attention_elements[layer] += elements
    if stats.keys is not None:
        frames = pixels.shape[0] * pixels.shape[1]
        stats.keys.count += frames
        stats.values.count += frames
    return tokens


# ----- the numbers ---------------------------------------------------------------------------------
def distribution_terms(moments: RunningMoments, reference: VideoReference, kind: str = "l2norm") -> dict[str, float]:
    """Eq. (8) between the moments of a modality's tokens and the video statistics, with its two parts."""
    mean = moments.mean
    var = moments.variance
    mean_v = reference.token_mean.to(torch.float64)
    var_v = reference.token_var.to(torch.float64)
    if kind == "l2norm":
        mean_part = float(torch.linalg.vector_norm(mean - mean_v))
        var_part = float(torch.linalg.vector_norm(var - var_v))
    else:
        mean_part = float((mean - mean_v).square().mean())
        var_part = float((var - var_v).square().mean())
    return {"distribution_term": mean_part + var_part, "distribution_mean_distance": mean_part,
            "distribution_var_distance": var_part}


def median_bandwidth(sample: torch.Tensor) -> float:
    """The median Euclidean distance between distinct rows of `sample` (the median heuristic)."""
    sample = sample.to(torch.float64)
    distances = torch.cdist(sample, sample)
    upper = distances[torch.triu_indices(len(sample), len(sample), offset=1).unbind()]
    return float(upper.median()) if upper.numel() else math.nan


def rbf_mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> float:
    """‖mean φ(x) − mean φ(y)‖ in the RKHS of k(a, b) = exp(−‖a − b‖² / (2 h²)), h = `bandwidth`.

    The biased (V-statistic) estimate: sqrt(mean k(x, x') + mean k(y, y') − 2 mean k(x, y)),
    all pairs including a row with itself; it is ≥ 0 and 0 when the two samples are equal.
    """
    x, y = x.to(torch.float64), y.to(torch.float64)

    def mean_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.cdist(a, b).square() / (2 * bandwidth ** 2)).mean()

    squared = mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)
    return math.sqrt(max(float(squared), 0.0))


def interface_gap(stats: TokenStats, reference: VideoReference, settings: AlignmentLossSettings = AlignmentLossSettings(),
                  video: TokenStats | None = None, vocab: DirectionSums | None = None,
                  bandwidth: float | None = None) -> dict[str, Any]:
    """The gap numbers of one modality pass (made with `reference`); see the module docstring.

    `video` (a video pass) adds the cosine geometry (with `vocab`) and the MMD, whose kernel
    bandwidth defaults to the median distance within the video sample.
    """
    per_layer = (stats.attention_sums / stats.attention_elements).tolist()
    numbers: dict[str, Any] = {
        "attention_term": sum(per_layer) / len(per_layer),  # eq. (6): the mean over layers
        "attention_term_per_layer": per_layer,
        **distribution_terms(stats.moments, reference, settings.dist_loss),
    }
    if video is not None:
        if vocab is not None:
            numbers.update(modality_geometry(stats.directions, vocab, video.directions))
        bandwidth = bandwidth if bandwidth is not None else median_bandwidth(video.sample.values)
        numbers["mmd"] = rbf_mmd(stats.sample.values, video.sample.values, bandwidth)
        numbers["mmd_bandwidth"] = bandwidth
    numbers["counts"] = {"inputs": stats.inputs, "tokens": stats.directions.count,
                         "zero_tokens": stats.directions.zero_rows, "mmd_sample": len(stats.sample.values)}
    numbers["skipped"] = stats.skipped
    return numbers
