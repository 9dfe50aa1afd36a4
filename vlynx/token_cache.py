"""The frozen-token cache of instruction tuning (`vlynx tune --token-cache DIR`).

In tuning, the video block (base encoder) and the block of a modality whose aligned adapter is
frozen are fixed functions of the inputs. This cache keeps each example's block once computed,
so later epochs, rows and runs read it instead of decoding the media and running the encoder.

A cache folder holds:

- `manifest.json`: the fingerprint every entry was made under: cache format version, the base
  model (architecture and a digest of every encoder/projector weight), dtype, device type,
  frames, and per cached stream its adapter (weights and config digests) and transform
  settings. A run whose fingerprint differs in any field they share is refused, naming the
  first differing field; a run caching a stream the folder does not have yet adds it.
- `*.safetensors` shards: each holds some entries, one (T, D) tensor per (example, stream),
  stored exactly as the encoder returned it (dtype kept), named by the entry's key.

An entry's key hashes the stream's fingerprint, the frames, and what identifies its media:
each file's absolute path, size and modification time (every file below a folder input).
Not a content digest: the cache exists to spare reading the media, and hashing them would read
every byte of every clip on every run (terabytes for LLaVA-Video-178K); a rewritten file gets a
new size or mtime. A file changed in place with its mtime restored is not noticed: `touch` it,
or give another folder.

Writers never change a shard: each batch of new entries is a new shard, written atomically
under a unique name, so concurrent runs and ranks may fill one folder; the manifest is
merged under a file lock.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vlynx.errors import VlynxError
from vlynx.files import atomic_path, ordinary_permissions, write_text_atomic
from vlynx.fingerprints import first_difference

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_LOCK = ".manifest.lock"


class TokenCache:
    """A token-cache folder opened for one run: `get` and `put` entries by key."""

    def __init__(self, directory: Path, fingerprint: Mapping[str, Any], index: dict[str, Path]) -> None:
        self.directory = directory
        self.fingerprint = dict(fingerprint)
        self._index = index  # entry key -> shard holding it

    @classmethod
    def open(cls, directory: str | Path, fingerprint: Mapping[str, Any]) -> TokenCache:
        """Open (or create) the cache in `directory` for a run with `fingerprint` (see `run_fingerprint`).

        Raises `VlynxError` naming the first field where the folder's manifest differs.
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise VlynxError("the token cache must be a folder", directory)
        directory.mkdir(parents=True, exist_ok=True)
        current = json.loads(json.dumps(fingerprint, default=str))  # as stored
        with _locked(directory / _LOCK):
            stored = _read_manifest(directory / MANIFEST)
            if stored is None:
                merged = current
            else:
                shared = set(stored.get("streams", {})) & set(current["streams"])
                difference = first_difference(_with_streams(stored, shared), _with_streams(current, shared))
                if difference is not None:
                    raise VlynxError(f"this token cache was made for other inputs ({difference}); give another "
                                     "--token-cache folder (or delete this one)", directory)
                merged = {**stored, "streams": {**current["streams"], **stored.get("streams", {})}}
            if merged != stored:
                write_text_atomic(directory / MANIFEST, json.dumps(merged, indent=2, sort_keys=True) + "\n")
        return cls(directory, current, _scan_shards(directory))

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str) -> torch.Tensor:
        """The stored tokens of entry `key`, bit for bit and in their dtype, on the CPU."""
        from safetensors import SafetensorError, safe_open

        shard = self._index[key]
        try:
            with safe_open(str(shard), framework="pt") as handle:
                return handle.get_tensor(key)
        except (OSError, SafetensorError) as error:
            raise VlynxError(f"cannot read a token-cache shard ({error}); delete it to recompute its entries",
                             shard) from error

    def put(self, entries: Mapping[str, torch.Tensor]) -> None:
        """Store `entries` (key -> tokens) as one new shard; its keys are then found by `get`."""
        from safetensors.torch import save_file

        if not entries:
            return
        shard = self.directory / f"shard-{os.getpid()}-{secrets.token_hex(8)}.safetensors"
        tensors = {key: tokens.detach().to("cpu").contiguous().clone() for key, tokens in entries.items()}
        with atomic_path(shard) as tmp:
            save_file(tensors, str(tmp), metadata={"format": str(FORMAT_VERSION)})
            ordinary_permissions(tmp)
        self._index.update(dict.fromkeys(tensors, shard))

    def refresh(self) -> None:
        """Re-read the shards' keys (after other processes, e.g. other ranks, have written some)."""
        self._index = _scan_shards(self.directory)

    def entry_key(self, stream: str, media: Sequence[str | Path], scene_choice: Any = None) -> str:
        """The key of `stream`'s tokens for an example whose stream reads `media` (files or folders).

        `scene_choice`: how the frames of a 3D-scene video are chosen (`shared_scene_choice`).
        """
        record = {
            "stream": stream,
            "fingerprint": self.fingerprint["streams"][stream],
            "frames": self.fingerprint["frames"],
            "media": [media_identity(path) for path in media],
            "scene_choice": repr(scene_choice),
        }
        return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def run_fingerprint(backbone: Any, frames: int, streams: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What a run's cached tokens depend on; `streams` maps each cached stream to its own fingerprint
    (`{}` for video; `adapter_fingerprint` and `transform_fingerprint` for a modality)."""
    return {
        "format": FORMAT_VERSION,
        "model": {**backbone.fingerprint(), "encoder_weights": encoder_digest(backbone)},
        "dtype": str(backbone.dtype).removeprefix("torch."),
        "device": backbone.device.type,  # CPU and GPU kernels round differently
        "frames": frames,
        "streams": {name: dict(value) for name, value in streams.items()},
    }


def encoder_digest(backbone: Any) -> str:
    """sha256 of every weight the video path can use (the model but its LLM, output head and LoRAs), exact bytes.

    Names are taken as in the bare model (PEFT's `base_layer` left out), so it is the same
    whichever adapters are attached.
    """
    head = backbone.model.get_output_embeddings()
    skipped = {id(p) for module in (backbone.language_model, head) if module is not None for p in module.parameters()}
    named = [*backbone.model.named_parameters(), *backbone.model.named_buffers()]
    tensors = sorted(((name.replace(".base_layer", ""), tensor) for name, tensor in named
                      if id(tensor) not in skipped and "lora_" not in name), key=lambda item: item[0])
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def adapter_fingerprint(directory: str | Path) -> dict[str, str]:
    """A saved PEFT adapter's weights and config (rank, alpha: its scaling), as sha256 digests."""
    from vlynx.outputs import directory_digest

    directory = Path(directory)
    config = directory / "adapter_config.json"
    return {"weights": directory_digest(directory),
            "config": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else ""}


def transform_fingerprint(transform: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A modality transform's class and its settings (its resolved `Settings` when it has them, else `settings`)."""
    import dataclasses

    resolved = getattr(transform, "settings", None)
    values = dataclasses.asdict(resolved) if dataclasses.is_dataclass(resolved) else dict(settings)
    kind = type(transform)
    return {"class": f"{kind.__module__}.{kind.__qualname__}", "settings": json.loads(json.dumps(values, default=str)),
            "images_per_frame": int(getattr(transform, "images_per_frame", 1))}


def media_identity(path: str | Path) -> list[Any]:
    """[absolute path, size, mtime in ns] of a file; for a folder, that of every file below it."""
    path = Path(path).absolute()
    if path.is_dir():
        return [str(path), [[str(f.relative_to(path)), *_stat(f)] for f in sorted(path.rglob("*")) if f.is_file()]]
    return [str(path), *_stat(path)]


def _stat(path: Path) -> list[int]:
    status = path.stat()
    return [status.st_size, status.st_mtime_ns]


def _with_streams(fingerprint: Mapping[str, Any], names: set[str]) -> dict[str, Any]:
    return {**fingerprint, "streams": {k: v for k, v in fingerprint.get("streams", {}).items() if k in names}}


def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        if any(path.parent.glob("*.safetensors")):
            raise VlynxError(f"holds token shards but no {MANIFEST}; give another --token-cache folder", path.parent)
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise VlynxError(f"damaged token-cache manifest ({error.msg}); delete the folder", path) from error
    if not isinstance(manifest, dict):
        raise VlynxError("damaged token-cache manifest (not a JSON object); delete the folder", path)
    return manifest


def _scan_shards(directory: Path) -> dict[str, Path]:
    """Entry key -> shard, from every shard's header (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    index: dict[str, Path] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(shard), framework="pt") as handle:
                index.update(dict.fromkeys(handle.keys(), shard))
        except (OSError, SafetensorError) as error:
            raise VlynxError(f"cannot read a token-cache shard ({error}); delete it to recompute its entries",
                             shard) from error
    return index


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (waiting for it): one process at a time reads and merges the manifest."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
