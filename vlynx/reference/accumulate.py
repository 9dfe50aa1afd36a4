"""The reference pass of one batch: one encoder forward whose K/V and tokens are folded into per-source sums.

Each source keeps a float32 K/V sum over frames (eq. 2) and float64 token moments (eq. 3);
the overall statistics are the merge of the per-source ones (`reference_stats`), so the
per-source means for the stability report come for free.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vlynx.backbones.base import Backbone
from vlynx.errors import VlynxError
from vlynx.reference.file import ReferenceStats
from vlynx.reference.sources import VideoSource
from vlynx.stats import RunningMoments, RunningSum


class SourceAccumulator:
    """Running K/V sums and token moments of one source."""

    def __init__(self, backbone: Backbone, device: torch.device | str = "cpu") -> None:
        layout = backbone.layout
        shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
        self.keys = RunningSum(shape, device)  # count = frames
        self.values = RunningSum(shape, device)
        self.tokens = RunningMoments(backbone.llm_hidden_size, device)  # count = tokens
        self.videos = 0

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors that restore this accumulator with `load_state` (for checkpoints)."""
        return {**self.keys.state(f"{prefix}keys_"), **self.values.state(f"{prefix}values_"),
                **self.tokens.state(f"{prefix}tokens_"), f"{prefix}videos": torch.tensor([self.videos])}

    def load_state(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        self.keys.load_state(tensors, f"{prefix}keys_")
        self.values.load_state(tensors, f"{prefix}values_")
        self.tokens.load_state(tensors, f"{prefix}tokens_")
        self.videos = int(tensors[f"{prefix}videos"].item())


def accumulate(backbone: Backbone, accumulators: Sequence[SourceAccumulator],
               videos: Sequence[tuple[int, torch.Tensor]]) -> None:
    """One encoder pass over `videos`, (source index, (F, 3, S, S) pixels) pairs of equal F.

    K/V are counted per encoder step (one frame, or `token_layout.frames_per_step` fused frames).

    Folds every video's per-layer K/V (eq. 2) and projected tokens (eq. 3) into the
    accumulator of its source.
    """
    pixels = torch.stack([p for _, p in videos])  # (B, F, 3, S, S)
    frames = backbone.encoder_steps(pixels.shape[1])  # captured K/V rows per video
    owners = torch.tensor([s for s, _ in videos])  # source index of each video
    groups = []  # (accumulator, its videos, their frame rows or None for the whole batch)
    for source in owners.unique().tolist():
        members = (owners == source).nonzero().flatten()
        # steps of video b are rows b*F .. b*F+F-1 of the captured (B*F, heads, positions, head_dim)
        frame_rows = (members[:, None] * frames + torch.arange(frames)).flatten().to(pixels.device)
        groups.append((accumulators[source], members, None if len(members) == len(videos) else frame_rows))

    def add_keys_values(layer: int, _queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        # eq. (2), summed as each layer computes them: no layer's K/V outlive the forward
        for accumulator, _, rows in groups:
            layer_keys, layer_values = (keys, values) if rows is None else (keys[rows], values[rows])
            accumulator.keys.total[layer] += layer_keys.float().sum(0)  # (heads, positions, head_dim)
            accumulator.values.total[layer] += layer_values.float().sum(0)

    with backbone.capture_attention(on_layer=add_keys_values):
        tokens = backbone.encode_frames(pixels)  # (B, T, D_llm)
    for accumulator, members, rows in groups:
        accumulator.keys.count += len(members) * frames
        accumulator.values.count += len(members) * frames
        source_tokens = tokens if rows is None else tokens[members.to(tokens.device)]
        accumulator.tokens.update(source_tokens.reshape(-1, tokens.shape[-1]))  # eq. (3), float64 inside
        accumulator.videos += len(members)


def reference_stats(backbone: Backbone, sources: Sequence[VideoSource], accumulators: Sequence[SourceAccumulator],
                    skipped: list[dict[str, str]], fingerprint: dict[str, Any],
                    frames_per_video: int) -> ReferenceStats:
    """The statistics of all sources (their merge, in source order) and of each; `VlynxError` if no video was used."""
    if sum(a.videos for a in accumulators) == 0:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
        raise VlynxError(f"no usable reference video ({len(skipped)} skipped; first: {reasons})")
    layout = backbone.layout
    shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
    keys, values = RunningSum(shape), RunningSum(shape)
    tokens = RunningMoments(backbone.llm_hidden_size)
    per_source: dict[str, dict[str, int]] = {}
    for source, accumulator in zip(sources, accumulators):
        keys.merge(accumulator.keys)
        values.merge(accumulator.values)
        tokens.merge(accumulator.tokens)
        per_source[source.name] = {"videos": accumulator.videos, "frames": accumulator.keys.count,
                                   "tokens": accumulator.tokens.count}
    used = [(s, a) for s, a in zip(sources, accumulators) if a.videos]
    keep_sources = len(used) >= 2
    return ReferenceStats(
        keys=keys.mean.cpu(),
        values=values.mean.cpu(),
        token_mean=tokens.mean.cpu(),
        token_var=tokens.variance.cpu(),
        fingerprint=fingerprint,
        frames_per_video=frames_per_video,
        counts={"videos": sum(a.videos for a in accumulators), "frames": keys.count, "tokens": tokens.count},
        sources=per_source,
        skipped=skipped,
        source_keys={s.name: a.keys.mean.cpu() for s, a in used} if keep_sources else {},
        source_values={s.name: a.values.mean.cpu() for s, a in used} if keep_sources else {},
    )
