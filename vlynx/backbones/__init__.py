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
from vlynx.backbones.internvl import InternVLBackbone
from vlynx.backbones.llava_onevision import LlavaOnevisionBackbone
from vlynx.backbones.qwen2_5_vl import Qwen2_5_VLBackbone
from vlynx.errors import VlynxError
from vlynx.stage_configs import LOAD_DTYPES

__all__ = [
    "AttentionCapture",
    "Backbone",
    "EncoderLayout",
    "load_backbone",
    "preset_config",
    "preset_names",
    "register_backbone",
    "torch_dtype",
]

log = logging.getLogger(__name__)
SHIPPED_CHECKPOINTS = {"miniworld": "miniworld/checkpoint"}  # name -> folder under vlynx/
_BACKBONES: dict[str, type[Backbone]] = {}
_plugins_loaded = False


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Make `cls` handle checkpoints whose `config.model_type` is `cls.model_type`."""
    _BACKBONES[cls.model_type] = cls
    return cls


register_backbone(LlavaOnevisionBackbone)
register_backbone(Qwen2_5_VLBackbone)
register_backbone(InternVLBackbone)


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
    dtype: torch.dtype | str | None = None,
    empty: bool = False,
    seed: int = 0,
    trust_remote_code: bool = False,
    language_model: bool = True,
) -> Backbone:
    """Load a backbone from a preset name, a hub id or a local checkpoint directory.

    `empty=True` builds the architecture on the meta device (no weights, no memory):
    enough for shapes and parameter counts. Presets without `empty` are randomly
    initialised from `seed` (useful for tests and benchmarks); checkpoints load their
    weights with `from_pretrained`, exactly as for any Hugging Face model.
    `language_model=False` materialises only the vision encoder and projector: the LLM
    (and output head) stays on the meta device and its weights are never allocated or
    read (encoder-only stages; random presets then get their own seeded encoder weights).
    `dtype` is a torch dtype or its name ("float32", "bfloat16", "float16"); None or "auto"
    keeps the checkpoint's own dtype (presets: float32).
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    dtype = torch_dtype(dtype)
    source = str(name_or_path)
    if source in SHIPPED_CHECKPOINTS:  # names of checkpoints shipped inside the package
        source = str(Path(__file__).resolve().parent.parent / SHIPPED_CHECKPOINTS[source])
    if source in preset_names():
        config, tokenizer, pretrained = preset_config(source), None, False
    else:
        if not Path(source).exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
            raise VlynxError(f"no such model directory (presets: {', '.join(preset_names())}; shipped: "
                             f"{', '.join(SHIPPED_CHECKPOINTS)})", source)
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
    if not language_model and not empty:
        model = _load_without_language_model(cls, source, config, pretrained, device, dtype, seed, trust_remote_code)
    elif empty:
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code)
    elif pretrained:
        model = AutoModelForImageTextToText.from_pretrained(
            source, dtype=dtype or "auto", trust_remote_code=trust_remote_code
        ).to(device)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype or torch.float32)
        # The encoder and projector of a random preset are the ones an encoder-only load gets,
        # so statistics of one (`vlynx reference`) stay valid for the other (`vlynx align`).
        vision = _stand_in_llm_model(config, seed, dtype)
        llm = _llm_prefixes(cls, source, model)
        model.load_state_dict({k: v for k, v in vision.state_dict().items()
                               if not any(k.startswith(prefix) for prefix in llm)}, strict=False)
        model = model.to(device)
    model.eval()
    return cls(model, tokenizer, source)


def torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """`dtype` as a torch dtype; None for None or "auto" (the checkpoint's own)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    if dtype not in LOAD_DTYPES:
        raise VlynxError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(LOAD_DTYPES)}")
    return getattr(torch, dtype)


def _stand_in_llm_config(config):
    """`config` with a zero-layer, one-word LLM: loads the encoder and projector without the LLM's memory."""
    import copy

    small = copy.deepcopy(config)
    small.text_config.num_hidden_layers, small.text_config.vocab_size = 0, 1
    small.text_config.pad_token_id = None
    if hasattr(small.text_config, "layer_types"):
        small.text_config.layer_types = []
    return small


def _stand_in_llm_model(config, seed: int, dtype: torch.dtype | None):
    """The model with the stand-in LLM, randomly initialised from `seed`."""
    from transformers import AutoModelForImageTextToText

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForImageTextToText.from_config(_stand_in_llm_config(config), dtype=dtype or torch.float32)


def _llm_prefixes(cls, source: str, model) -> set[str]:
    """State-dict prefixes of the LLM and the output head of `model`."""
    backbone = cls(model, None, source)
    return {f"{n}." for n, m in model.named_modules()
            if m is backbone.language_model or m is model.get_output_embeddings()}


def _load_without_language_model(cls, source, config, pretrained, device, dtype, seed, trust_remote_code):
    """The model with a zero-layer, one-word stand-in LLM while loading, then the real LLM on meta."""
    from transformers import AutoModelForImageTextToText

    if pretrained:
        # LLM tensors of the checkpoint have other shapes or no place here: transformers skips them unread.
        from transformers.utils import logging as hf_logging

        small = _stand_in_llm_config(config)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the skipped LLM tensors are expected, not worth a report
        try:
            model, info = AutoModelForImageTextToText.from_pretrained(
                source, config=small, dtype=dtype or "auto", trust_remote_code=trust_remote_code,
                ignore_mismatched_sizes=True, output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
        llm_names = _llm_prefixes(cls, source, model)
        missing = [k for k in [*info["missing_keys"], *(m[0] if isinstance(m, tuple) else m
                                                       for m in info["mismatched_keys"])]
                   if not any(k.startswith(prefix) for prefix in llm_names)]
        if missing:
            raise VlynxError(f"checkpoint lacks encoder/projector weights: {', '.join(sorted(missing)[:5])}", source)
    else:
        model = _stand_in_llm_model(config, seed, dtype)
    small = model.config
    model = model.to(device)
    with torch.device("meta"):
        full = AutoModelForImageTextToText.from_config(config, dtype=model.dtype, trust_remote_code=trust_remote_code)
    # Swap the stand-in LLM and head for the real (meta) ones, by their place in the module tree.
    full_backbone, backbone = cls(full, None, source), cls(model, None, source)
    swaps = [(backbone.language_model, full_backbone.language_model),
             (model.get_output_embeddings(), full.get_output_embeddings())]
    for old, new in swaps:
        name = next(n for n, m in model.named_modules() if m is old)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, new)
    for module in model.modules():
        if getattr(module, "config", None) is small:
            module.config = full.config
    return model


def _load_tokenizer(source: str, trust_remote_code: bool) -> Any | None:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:  # encoder-only stages do not need one
        log.debug("no tokenizer loaded from %s: %s", source, error)
        return None
