"""Reference statistics: the video-derived interface guidance that alignment is trained against.

Stage, top to bottom (DESIGN.md §2, eq. 2-3):

1. list the reference videos of each source (`video_sources`);
2. `compute_reference`: on the frozen base model, ONE encoder pass per batch records every
   layer's keys/values where the encoder computes them (`backbone.capture_attention`) and
   the projected video tokens; K/V are summed over all frames in float32 (eq. 2), tokens
   go into a float64 Chan/Welford accumulator (eq. 3). Videos are decoded in DataLoader
   worker processes; a checkpoint every N videos makes the run resumable; under
   `torch.distributed` each rank takes a shard and collectives combine the statistics;
3. `save_reference` / `load_reference`: one safetensors file with a backbone fingerprint
   that is checked on load;
4. `stability_report`: the paper's Table B2 diagnostics from the per-source means.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlynx.backbones.base import Backbone
from vlynx.errors import VlynxError
from vlynx.files import atomic_path
from vlynx.fingerprints import fingerprint_differences
from vlynx.media import read_video
from vlynx.progress import log, progress
from vlynx.stats import RunningMoments, RunningSum

FORMAT = "vlynx-reference"
FORMAT_VERSION = "1"
_CHECKPOINT_FORMAT = "vlynx-reference-checkpoint"


# ----- data --------------------------------------------------------------------------------
@dataclass
class ReferenceStats:
    """Reference statistics of one backbone over a set of videos.

    `keys`/`values`: float32 (layers, heads, positions, head_dim), mean over all frames (eq. 2).
    `token_mean`/`token_var`: float64 (D_llm,), mean and population variance of every projected
    video token, pooling and newline included (eq. 3).
    `counts`: {"videos", "frames", "tokens"}; `sources`: {name: same counts}, in input order;
    `skipped`: [{"path", "reason"}]; `source_keys`/`source_values`: per-source means (same shape
    as `keys`), kept when there are at least two sources (for `stability_report`).
    """

    keys: torch.Tensor  # (layers, heads, positions, head_dim) float32
    values: torch.Tensor  # (layers, heads, positions, head_dim) float32
    token_mean: torch.Tensor  # (D_llm,) float64
    token_var: torch.Tensor  # (D_llm,) float64
    fingerprint: dict[str, Any]
    frames_per_video: int
    counts: dict[str, int]
    sources: dict[str, dict[str, int]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    source_keys: dict[str, torch.Tensor] = field(default_factory=dict)
    source_values: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class VideoSource:
    """A named set of reference videos (one benchmark or dataset)."""

    name: str
    videos: tuple[Path, ...]


def video_sources(specs: Sequence[str | Path], names: Sequence[str] | None = None) -> list[VideoSource]:
    """One `VideoSource` per spec (DIR | LIST.txt | ANNOT.json[l], see `vlynx.inputs.list_media`).

    `names` default to each spec's file or folder name (without suffix); they must be unique.
    """
    from vlynx.inputs import list_media

    names = list(names) if names else []
    if names and len(names) != len(specs):
        raise VlynxError(f"got {len(specs)} video sets but {len(names)} source names; give one name per set")
    result = []
    for index, spec in enumerate(specs):
        name = names[index] if names else (Path(spec).stem or Path(spec).name)
        videos = tuple(list_media(spec))
        if not videos:
            raise VlynxError("lists no videos", spec)
        result.append(VideoSource(name, videos))
    seen = [s.name for s in result]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise VlynxError(f"source names must be unique, repeated: {', '.join(duplicates)} (name them with --source)")
    return result


# ----- accumulation ------------------------------------------------------------------------
class _SourceAccumulator:
    """Running K/V sums and token moments of one source."""

    def __init__(self, backbone: Backbone, device: torch.device) -> None:
        layout = backbone.layout
        shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
        self.keys = RunningSum(shape, device)  # count = frames
        self.values = RunningSum(shape, device)
        self.tokens = RunningMoments(backbone.llm_hidden_size, device)  # count = tokens
        self.videos = 0

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {**self.keys.state(f"{prefix}keys_"), **self.values.state(f"{prefix}values_"),
                **self.tokens.state(f"{prefix}tokens_"), f"{prefix}videos": torch.tensor([self.videos])}

    def load_state(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        self.keys.load_state(tensors, f"{prefix}keys_")
        self.values.load_state(tensors, f"{prefix}values_")
        self.tokens.load_state(tensors, f"{prefix}tokens_")
        self.videos = int(tensors[f"{prefix}videos"].item())

    def all_reduce(self, device: torch.device) -> None:
        for part in (self.keys, self.values, self.tokens):
            _move(part, device)
            part.all_reduce()
        videos = torch.tensor([self.videos], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(videos)
        self.videos = int(videos.item())


def _move(part: RunningSum | RunningMoments, device: torch.device) -> None:
    if isinstance(part, RunningSum):
        part.total = part.total.to(device)
    else:
        part.mean, part.m2 = part.mean.to(device), part.m2.to(device)


class _VideoFrames(torch.utils.data.Dataset):
    """Decodes and preprocesses one video per item (in DataLoader workers); errors become skip reasons."""

    def __init__(self, items: Sequence[tuple[Path, int]], frames_per_video: int, backbone: Backbone) -> None:
        self.items = items
        self.frames_per_video = frames_per_video
        self.preprocess = backbone.preprocess_frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        path = self.items[index][0]
        try:
            clip = read_video(path, self.frames_per_video)
            return index, self.preprocess(clip.frames), None  # (F, 3, S, S)
        except VlynxError as error:
            reason = str(error)
            return index, None, reason[len(error.path) + 2:] if error.path and reason.startswith(error.path) else reason
        except (OSError, ValueError, RuntimeError) as error:
            return index, None, f"{error.__class__.__name__}: {error}"


def _keep(item: Any) -> Any:
    return item


def compute_reference(
    backbone: Backbone,
    sources: Sequence[VideoSource],
    frames_per_video: int,
    *,
    batch_size: int = 4,
    workers: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
) -> ReferenceStats:
    """Reference K/V (eq. 2) and token statistics (eq. 3) of `sources` on the frozen base encoder.

    Reads `frames_per_video` frames of every video (in `workers` processes), `batch_size`
    videos per encoder pass. With `checkpoint`, the running state is saved there every
    `checkpoint_every` videos and at the end, and a matching checkpoint found at the start is
    resumed (same result as an uninterrupted run); the caller removes it with
    `discard_checkpoint` once the output is written. Under an initialised `torch.distributed`
    process group every rank takes the videos `rank::world_size` and all ranks return the
    combined statistics. Unreadable videos are skipped and listed; raises `VlynxError` when
    no video is usable.
    """
    import torch.distributed as dist

    if frames_per_video < 1 or batch_size < 1 or workers < 0 or checkpoint_every < 0:
        raise VlynxError("frames and batch size must be >= 1, workers and checkpoint interval >= 0")
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    fingerprint = backbone.fingerprint()
    if distributed:
        _same_on_all_ranks(fingerprint)

    items = [(path, s) for s, source in enumerate(sources) for path in source.videos]
    shard = items[rank::world]
    device = backbone.device
    accumulators = [_SourceAccumulator(backbone, device) for _ in sources]
    skipped: list[tuple[int, str, str]] = []  # (item index, path, reason)
    job = _job_digest(fingerprint, frames_per_video, sources, rank, world)
    rank_checkpoint = _rank_checkpoint(checkpoint, rank, world) if checkpoint is not None else None
    cursor = 0
    if rank_checkpoint is not None and rank_checkpoint.exists():
        cursor = _load_checkpoint(rank_checkpoint, job, accumulators, skipped)
        log.info("resuming from %s: %d of %d videos done on this rank", rank_checkpoint, cursor, len(shard))

    dataset = _VideoFrames(shard, frames_per_video, backbone)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(cursor, len(shard)), num_workers=workers, collate_fn=_keep,
        # fork: workers share the parent's memory instead of pickling the model into each of them
        multiprocessing_context=_fork_context() if workers > 0 else None,
    )
    pending: list[tuple[int, torch.Tensor | None, str | None]] = []
    with _base_encoder(backbone), torch.inference_mode():
        for item in progress(loader, desc="reference", total=len(shard) - cursor, unit="video"):
            pending.append(item)
            if len(pending) < batch_size and cursor + len(pending) < len(shard):
                continue
            _accumulate(backbone, pending, shard, accumulators, skipped, rank, world)
            before, cursor = cursor, cursor + len(pending)
            pending = []
            due = checkpoint_every and cursor // checkpoint_every > before // checkpoint_every
            if rank_checkpoint is not None and (due or cursor == len(shard)):
                _save_checkpoint(rank_checkpoint, job, cursor, accumulators, skipped)

    if distributed:
        reduce_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
        for accumulator in accumulators:
            accumulator.all_reduce(reduce_device)
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, skipped)
        skipped = [entry for part in gathered for entry in part]
    skipped.sort(key=lambda entry: entry[0])
    skip_list = [{"path": path, "reason": reason} for _, path, reason in skipped]
    if skipped:
        log.warning("skipped %d unreadable video(s); they are listed in the statistics' `skipped`", len(skipped))
    return _finish(backbone, sources, accumulators, skip_list, fingerprint, frames_per_video)


def _accumulate(backbone: Backbone, pending: list, shard: list, accumulators: list[_SourceAccumulator],
                skipped: list, rank: int, world: int) -> None:
    """One encoder pass over the usable videos of `pending`; folds K/V and tokens into their source."""
    usable = []
    for index, pixels, reason in pending:
        path, source = shard[index]
        if reason is None:
            usable.append((source, pixels))
        else:
            skipped.append((index * world + rank, str(path), reason))  # index in the unsharded list
    if not usable:
        return
    pixels = torch.stack([p for _, p in usable])  # (B, F, 3, S, S)
    frames = pixels.shape[1]
    owners = torch.tensor([s for s, _ in usable])  # source index of each video
    groups = []  # (accumulator, its videos, their frame rows or None for the whole batch)
    for source in owners.unique().tolist():
        videos = (owners == source).nonzero().flatten()
        # frames of video b are rows b*F .. b*F+F-1 of the captured (B*F, heads, positions, head_dim)
        frame_rows = (videos[:, None] * frames + torch.arange(frames)).flatten().to(pixels.device)
        groups.append((accumulators[source], videos, None if len(videos) == len(usable) else frame_rows))

    def add_keys_values(layer: int, _queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        # eq. (2), summed as each layer computes them: no layer's K/V outlive the forward
        for accumulator, _, rows in groups:
            layer_keys, layer_values = (keys, values) if rows is None else (keys[rows], values[rows])
            accumulator.keys.total[layer] += layer_keys.float().sum(0)  # (heads, positions, head_dim)
            accumulator.values.total[layer] += layer_values.float().sum(0)

    with backbone.capture_attention(on_layer=add_keys_values):
        tokens = backbone.encode_frames(pixels)  # (B, T, D_llm)
    for accumulator, videos, rows in groups:
        accumulator.keys.count += len(videos) * frames
        accumulator.values.count += len(videos) * frames
        source_tokens = tokens if rows is None else tokens[videos.to(tokens.device)]
        accumulator.tokens.update(source_tokens.reshape(-1, tokens.shape[-1]))  # eq. (3), float64 inside
        accumulator.videos += len(videos)


def _finish(backbone: Backbone, sources: Sequence[VideoSource], accumulators: list[_SourceAccumulator],
            skipped: list[dict[str, str]], fingerprint: dict[str, Any], frames_per_video: int) -> ReferenceStats:
    if sum(a.videos for a in accumulators) == 0:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
        raise VlynxError(f"no usable reference video ({len(skipped)} skipped; first: {reasons})")
    layout = backbone.layout
    shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
    keys, values = RunningSum(shape), RunningSum(shape)
    tokens = RunningMoments(backbone.llm_hidden_size)
    per_source: dict[str, dict[str, int]] = {}
    for source, accumulator in zip(sources, accumulators):
        # the overall statistics are the merge of the per-source ones, in source order
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


@contextlib.contextmanager
def _base_encoder(backbone: Backbone) -> Iterator[None]:
    """The frozen base encoder: vision adapters off if any are attached."""
    if backbone.peft_model is None:
        yield
        return
    from vlynx.adapters import route

    with route(backbone, None):
        yield


def _fork_context() -> Any:
    import multiprocessing

    return multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


def _same_on_all_ranks(fingerprint: dict[str, Any]) -> None:
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, fingerprint)
    if any(other != fingerprint for other in gathered):
        raise VlynxError("the ranks loaded different models (backbone fingerprints differ)")


# ----- checkpoints -------------------------------------------------------------------------
def _rank_checkpoint(checkpoint: str | Path, rank: int, world: int) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint if world == 1 else checkpoint.with_name(f"{checkpoint.name}.rank{rank}-of-{world}")


def _job_digest(fingerprint: dict[str, Any], frames: int, sources: Sequence[VideoSource], rank: int,
                world: int) -> str:
    """What a checkpoint must match to be resumed: model, frames, the exact video lists, the sharding."""
    job = {"fingerprint": fingerprint, "frames": frames, "rank": rank, "world": world,
           "sources": [[s.name, [str(p) for p in s.videos]] for s in sources]}
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()


def _save_checkpoint(path: Path, job: str, cursor: int, accumulators: list[_SourceAccumulator],
                     skipped: list) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for index, accumulator in enumerate(accumulators):
        tensors.update(accumulator.state(f"source{index}."))
    metadata = {"format": _CHECKPOINT_FORMAT, "job": job, "cursor": str(cursor), "skipped": json.dumps(skipped)}
    _atomic_save(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _load_checkpoint(path: Path, job: str, accumulators: list[_SourceAccumulator], skipped: list) -> int:
    tensors, metadata = _read_safetensors(path)
    if metadata.get("format") != _CHECKPOINT_FORMAT:
        raise VlynxError("is not a vlynx reference checkpoint; delete it or choose another --out", path)
    if metadata.get("job") != job:
        raise VlynxError("checkpoint of a different run (model, frames, video lists or number of ranks "
                         "differ); delete it to start over", path)
    for index, accumulator in enumerate(accumulators):
        accumulator.load_state(tensors, f"source{index}.")
    skipped.extend(tuple(entry) for entry in json.loads(metadata["skipped"]))
    return int(metadata["cursor"])


def discard_checkpoint(checkpoint: str | Path) -> None:
    """Remove this rank's checkpoint (call after the output file is safely written)."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    _rank_checkpoint(checkpoint, rank, world).unlink(missing_ok=True)


# ----- file --------------------------------------------------------------------------------
def save_reference(reference: ReferenceStats, path: str | Path) -> Path:
    """Write `reference` as safetensors (+ JSON metadata strings), atomically."""
    from safetensors.torch import save_file

    from vlynx import __version__

    path = Path(path)
    tensors = {
        "keys": reference.keys.to(torch.float32).contiguous(),
        "values": reference.values.to(torch.float32).contiguous(),
        "token_mean": reference.token_mean.to(torch.float64).contiguous(),
        "token_var": reference.token_var.to(torch.float64).contiguous(),
    }
    names = list(reference.source_keys)
    for index, name in enumerate(names):  # indices, not names, so any source name is a valid tensor key
        tensors[f"source.{index}.keys"] = reference.source_keys[name].to(torch.float32).contiguous()
        tensors[f"source.{index}.values"] = reference.source_values[name].to(torch.float32).contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vlynx_version": __version__,
        "fingerprint": json.dumps(reference.fingerprint, sort_keys=True),
        "frames_per_video": str(reference.frames_per_video),
        "counts": json.dumps(reference.counts),
        "sources": json.dumps(reference.sources),
        "source_tensors": json.dumps(names),
        "skipped": json.dumps(reference.skipped),
    }
    _atomic_save(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


def load_reference(path: str | Path, backbone: Backbone | None = None,
                   frames_per_video: int | None = None) -> ReferenceStats:
    """Read a reference file; with `backbone` (and `frames_per_video`), refuse one computed on another setup.

    Raises `VlynxError` if the file is missing or not a vlynx reference, if its fingerprint
    differs from `backbone.fingerprint()` (naming the differing fields), or if it was computed
    with a different number of frames per video.
    """
    path = Path(path)
    tensors, metadata = _read_safetensors(path)
    if metadata.get("format") != FORMAT:
        raise VlynxError("is not a vlynx reference statistics file (no vlynx-reference metadata)", path)
    missing = [n for n in ("keys", "values", "token_mean", "token_var") if n not in tensors]
    if missing:
        raise VlynxError(f"reference file lacks tensors {missing}", path)
    try:
        names = json.loads(metadata["source_tensors"])
        reference = ReferenceStats(
            keys=tensors["keys"],
            values=tensors["values"],
            token_mean=tensors["token_mean"],
            token_var=tensors["token_var"],
            fingerprint=json.loads(metadata["fingerprint"]),
            frames_per_video=int(metadata["frames_per_video"]),
            counts=json.loads(metadata["counts"]),
            sources=json.loads(metadata["sources"]),
            skipped=json.loads(metadata["skipped"]),
            source_keys={name: tensors[f"source.{i}.keys"] for i, name in enumerate(names)},
            source_values={name: tensors[f"source.{i}.values"] for i, name in enumerate(names)},
        )
    except (KeyError, ValueError) as error:
        raise VlynxError(f"damaged reference metadata ({error.__class__.__name__}: {error})", path) from error
    if backbone is not None:
        differences = fingerprint_differences(reference.fingerprint, backbone.fingerprint())
        if differences:
            raise VlynxError(
                "reference statistics were computed for a different model: " + "; ".join(differences)
                + ". Recompute them with `vlynx reference` for this model", path)
    if frames_per_video is not None and frames_per_video != reference.frames_per_video:
        raise VlynxError(f"reference statistics use {reference.frames_per_video} frames per video, this run "
                         f"uses {frames_per_video}; recompute them or match --frames", path)
    return reference


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise VlynxError("file not found", path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise VlynxError(f"not a readable safetensors file ({error})", path) from error
    return tensors, metadata


def _atomic_save(path: Path, write: Any) -> None:
    with atomic_path(path) as tmp:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors writes via a private (0600) temp file


# ----- report ------------------------------------------------------------------------------
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
