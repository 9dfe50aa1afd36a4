"""The reference statistics file: one safetensors file, tensors plus JSON metadata with a model fingerprint."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlynx.backbones.base import Backbone
from vlynx.errors import VlynxError
from vlynx.files import atomic_path, ordinary_permissions
from vlynx.fingerprints import fingerprint_differences

FORMAT = "vlynx-reference"
FORMAT_VERSION = "1"


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


def save_reference(reference: ReferenceStats, path: str | Path) -> Path:
    """Write `reference` as safetensors (+ JSON metadata strings), atomically; returns the path."""
    from vlynx import __version__

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
    return write_safetensors(path, tensors, metadata)


def load_reference(path: str | Path, backbone: Backbone | None = None,
                   frames_per_video: int | None = None) -> ReferenceStats:
    """Read a reference file; with `backbone` (and `frames_per_video`), refuse one computed on another setup.

    Raises `VlynxError` if the file is missing or not a vlynx reference, if its fingerprint
    differs from `backbone.fingerprint()` (naming the differing fields), or if it was computed
    with a different number of frames per video.
    """
    path = Path(path)
    tensors, metadata = read_safetensors(path)
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


# ----- safetensors with metadata (also the checkpoints' format) ----------------------------------
def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; `VlynxError` naming the file if it is missing or unreadable."""
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


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write `tensors` and string `metadata` to `path` atomically, with the usual file permissions."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        ordinary_permissions(tmp)
    return path
