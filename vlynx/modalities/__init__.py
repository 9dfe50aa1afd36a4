"""New modalities as pseudo-video frames, by name: built-ins plus plug-ins.

    from vlynx.modalities import get_modality
    audio = get_modality("audio", n_mels=32, window_s=1.0, time_steps=64)
    frames = audio.frames("clip.mp4", num_frames=8, timestamps=video.timestamps)  # uint8 (F, H, W, 3)

Third-party packages add a modality with a Python entry point in the group
`vlynx.modalities` whose object is a `Modality` subclass or a factory returning one:

    [project.entry-points."vlynx.modalities"]
    thermal = "my_package.thermal:ThermalModality"

or, at run time, `register_modality("thermal", ThermalModality)`.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any

from vlynx.errors import VlynxError
from vlynx.modalities.base import Modality

ENTRY_POINT_GROUP = "vlynx.modalities"

ModalityFactory = Callable[..., Modality]

_BUILTINS = {
    "audio": "vlynx.modalities.audio:AudioModality",
    "depth": "vlynx.modalities.depth:DepthModality",
    "hfr": "vlynx.modalities.hfr:HighFrameRateModality",
    "egocentric": "vlynx.modalities.egocentric:EgocentricModality",
}
_registered: dict[str, ModalityFactory] = {}


def register_modality(name: str, factory: ModalityFactory, *, replace: bool = False) -> None:
    """Make `get_modality(name, **settings)` call `factory(**settings)` (a `Modality` subclass or function)."""
    if not name or not name.replace("-", "_").isidentifier():
        raise VlynxError(f"invalid modality name {name!r} (letters, digits, '_' or '-')")
    if not callable(factory):
        raise VlynxError(f"modality '{name}': factory must be callable, got {type(factory).__name__}")
    if name in _registered and not replace:
        raise VlynxError(f"modality '{name}' is already registered (pass replace=True to override)")
    _registered[name] = factory


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def modality_names() -> list[str]:
    """Every modality `get_modality` accepts: built-ins, registered ones and entry points, sorted."""
    return sorted(set(_BUILTINS) | set(_registered) | set(_entry_points()))


def _factory(name: str) -> ModalityFactory:
    if name in _registered:  # run-time registration wins, so users can override a built-in
        return _registered[name]
    target = _BUILTINS.get(name)
    entry_point = _entry_points().get(name) if target is None else None
    if target is None and entry_point is None:
        raise VlynxError(f"unknown modality '{name}' (known: {', '.join(modality_names())})")
    try:
        if entry_point is not None:
            factory = entry_point.load()
        else:
            module_name, attribute = target.split(":")
            factory = getattr(importlib.import_module(module_name), attribute)
    except Exception as error:  # a broken plug-in must not look like a vlynx bug
        source = f"entry point '{entry_point.value}'" if entry_point is not None else target
        raise VlynxError(f"modality '{name}': cannot load {source} ({type(error).__name__}: {error})") from error
    if not callable(factory):
        raise VlynxError(f"modality '{name}': {entry_point.value if entry_point else target} is not callable")
    return factory


def get_modality(name: str, **settings: Any) -> Modality:
    """The modality registered as `name`, built with `settings` overriding its defaults."""
    modality = _factory(name)(**settings)
    if not isinstance(modality, Modality):
        raise VlynxError(f"modality '{name}': factory returned {type(modality).__name__}, not a vlynx Modality")
    return modality


def modality_description(name: str) -> str:
    """The one-line description of modality `name` (loads its plug-in if needed)."""
    factory = _factory(name)
    description = getattr(factory, "description", "") or (factory.__doc__ or "").strip().splitlines()[:1]
    return description if isinstance(description, str) else (description[0] if description else "")


__all__ = [
    "ENTRY_POINT_GROUP",
    "Modality",
    "get_modality",
    "modality_description",
    "modality_names",
    "register_modality",
]
