"""Backbone registry: `load_backbone(name_or_path)` for presets, hub ids and local checkpoints.

Backbones register by Hugging Face `model_type`. Third-party packages add their own
through the `vlynx.backbones` entry-point group (each entry point names a `Backbone`
subclass).
"""
from __future__ import annotations

import json
import logging
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import torch

from vlynx.backbones.base import AttentionCapture, Backbone, EncoderLayout
from vlynx.backbones.llava_onevision import LlavaOnevisionBackbone
from vlynx.errors import VlynxError

__all__ = [
    "AttentionCapture",
    "Backbone",
    "EncoderLayout",
    "load_backbone",
    "preset_config",
    "preset_names",
    "register_backbone",
]

log = logging.getLogger(__name__)
_BACKBONES: dict[str, type[Backbone]] = {}
_plugins_loaded = False


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Make `cls` handle checkpoints whose `config.model_type` is `cls.model_type`."""
    _BACKBONES[cls.model_type] = cls
    return cls


register_backbone(LlavaOnevisionBackbone)


def _backbone_class(model_type: str, source: str) -> type[Backbone]:
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        for entry_point in metadata.entry_points(group="vlynx.backbones"):
            register_backbone(entry_point.load())
    if model_type not in _BACKBONES:
        known = ", ".join(sorted(_BACKBONES))
        raise VlynxError(f"model type '{model_type}' has no vlynx backbone (supported: {known})", source)
    return _BACKBONES[model_type]


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".json")] for p in resources.files("vlynx.backbones.presets").iterdir()
                  if p.name.endswith(".json"))


def preset_config(name: str):
    """The Hugging Face config object of a named preset."""
    from transformers import AutoConfig

    raw = json.loads(resources.files("vlynx.backbones.presets").joinpath(f"{name}.json").read_text())
    raw = {key: value for key, value in raw.items() if not key.startswith("_")}
    return AutoConfig.for_model(raw.pop("model_type"), **raw)


def load_backbone(
    name_or_path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    empty: bool = False,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> Backbone:
    """Load a backbone from a preset name, a hub id or a local checkpoint directory.

    `empty=True` builds the architecture on the meta device (no weights, no memory):
    enough for shapes and parameter counts. Presets without `empty` are randomly
    initialised from `seed` (useful for tests and benchmarks); checkpoints load their
    weights with `from_pretrained`, exactly as for any Hugging Face model.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    source = str(name_or_path)
    if source in preset_names():
        config, tokenizer, pretrained = preset_config(source), None, False
    else:
        if not Path(source).exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
            raise VlynxError(f"no such model directory (presets: {', '.join(preset_names())})", source)
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            raise VlynxError(
                f"cannot load a model config ({error.__class__.__name__}: {str(error).splitlines()[0]}); "
                f"give a local checkpoint directory, a reachable hub id, or a preset ({', '.join(preset_names())})",
                source,
            ) from error
        tokenizer, pretrained = (None if empty else _load_tokenizer(source, trust_remote_code)), not empty

    cls = _backbone_class(config.model_type, source)
    if empty:
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code)
    elif pretrained:
        model = AutoModelForImageTextToText.from_pretrained(
            source, dtype=dtype or "auto", trust_remote_code=trust_remote_code
        ).to(device)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype or torch.float32).to(device)
    model.eval()
    return cls(model, tokenizer, source)


def _load_tokenizer(source: str, trust_remote_code: bool) -> Any | None:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:  # encoder-only stages do not need one
        log.debug("no tokenizer loaded from %s: %s", source, error)
        return None
