"""V-LynX adapters (PEFT LoRA) and their routing: which frames see which adapter.

- one vision-encoder LoRA per new modality, named after the modality (`audio`, `depth`, ...),
  on every Linear of the encoder layers;
- one LLM LoRA named `llm`, on q/k/v/o/gate/up/down of every decoder layer.

Routing is the one rule of the method that must never bend: video frames go through
the *base* encoder (all vision adapters off, so video tokens stay bit-identical to the
unmodified model), a modality's frames through the encoder with that modality's adapter
only. Routing never changes which parameters train; `set_trainable` alone decides that.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlynx.backbones.base import Backbone
from vlynx.errors import VlynxError
from vlynx.files import ordinary_permissions
from vlynx.stage_configs import LLM_ADAPTER, RESERVED_NAMES, TuneConfig, llm_alpha_for, vision_alpha_for


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    dropout: float = 0.05


# The stages' defaults (authors' r 64 / alpha 128 and r 64 / alpha 16, docs/method.md §4)
VISION_LORA = LoraSettings(rank=TuneConfig.vision_rank, alpha=vision_alpha_for(TuneConfig.vision_rank))
LLM_LORA = LoraSettings(rank=TuneConfig.llm_rank, alpha=llm_alpha_for(TuneConfig.llm_rank))


def add_vision_adapter(backbone: Backbone, modality: str, settings: LoraSettings = VISION_LORA) -> None:
    """Attach a fresh vision-encoder LoRA for `modality` (LoRA B starts at zero, as PEFT does)."""
    if modality in RESERVED_NAMES:
        raise VlynxError(f"'{modality}' is a reserved name ({', '.join(RESERVED_NAMES)}); name the modality "
                         "differently")
    _add_adapter(backbone, modality, settings, backbone.vision_lora_targets)


def add_llm_adapter(backbone: Backbone, settings: LoraSettings = LLM_LORA) -> None:
    """Attach the LLM LoRA (always active in the LLM; the vision path is unaffected)."""
    _add_adapter(backbone, LLM_ADAPTER, settings, backbone.llm_lora_targets)


def _add_adapter(backbone: Backbone, name: str, settings: LoraSettings, targets: str) -> None:
    from peft import LoraConfig, get_peft_model

    if name in adapter_names(backbone):
        raise VlynxError(f"an adapter named '{name}' is already attached")
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, bias="none")
    adapter_flags = [(p, p.requires_grad) for layer in _lora_layers(backbone.model)
                     for other in layer.lora_A for p in _adapter_parameters(layer, other)]
    # On a meta-device backbone the new LoRA weights are created on meta too (no memory).
    device = torch.device("meta") if backbone.device.type == "meta" else contextlib.nullcontext()
    was_training = backbone.model.training
    with device:
        if backbone.peft_model is None:
            backbone.peft_model = get_peft_model(backbone.model, config, adapter_name=name)
        else:
            backbone.peft_model.add_adapter(name, config)
    backbone.model.train(was_training)  # new LoRA modules are created in training mode (dropout on)
    # The base model is frozen (PEFT's convention); earlier adapters keep their flags; the new one trains.
    for parameter in backbone.model.parameters():
        parameter.requires_grad = False
    for parameter, flag in adapter_flags:
        parameter.requires_grad = flag
    for layer in _lora_layers(backbone.model):
        if name in layer.lora_A:
            # New vision adapters start inactive (routing turns them on); the LLM adapter is always on.
            _activate(layer, name if name == LLM_ADAPTER else None)
            for parameter in _adapter_parameters(layer, name):
                parameter.requires_grad = True


def adapter_names(backbone: Backbone) -> list[str]:
    """Names of the adapters attached, vision adapters in attachment order, then `llm` if present."""
    names: list[str] = []
    for layer in _lora_layers(backbone.model):
        names += [name for name in layer.lora_A if name not in names]
    return [n for n in names if n != LLM_ADAPTER] + ([LLM_ADAPTER] if LLM_ADAPTER in names else [])


def adapter_parameter_count(backbone: Backbone, name: str) -> int:
    """Exact number of parameters adapter `name` adds (its LoRA A and B matrices)."""
    return sum(
        p.numel()
        for layer in _lora_layers(backbone.model)
        if name in layer.lora_A
        for p in _adapter_parameters(layer, name)
    )


def set_trainable(backbone: Backbone, adapters: Iterable[str]) -> None:
    """Make exactly the LoRA weights of `adapters` trainable; everything else is frozen."""
    adapters = set(adapters)
    unknown = adapters - set(adapter_names(backbone))
    if unknown:
        raise VlynxError(f"no adapter named {sorted(unknown)} (attached: {adapter_names(backbone)})")
    for parameter in backbone.model.parameters():
        parameter.requires_grad = False
    for layer in _lora_layers(backbone.model):
        for name in adapters & set(layer.lora_A):
            for parameter in _adapter_parameters(layer, name):
                parameter.requires_grad = True


@contextlib.contextmanager
def route(backbone: Backbone, modality: str | None) -> Iterator[None]:
    """Run the vision encoder as the base model (`None`: video) or with `modality`'s adapter only."""
    if modality is not None and modality not in adapter_names(backbone):
        raise VlynxError(f"no vision adapter for modality '{modality}' (attached: {adapter_names(backbone)})")
    with _routed_as([(layer, modality) for layer in _lora_layers(backbone.vision_tower)]):
        yield


def same_routing_in_recomputation(model: nn.Module) -> Callable[[], tuple[Any, Any]]:
    """`context_fn` for non-reentrant gradient checkpointing of `model`: backward recomputes each
    layer with the adapters that were active in its forward (by then `route` has switched them back)."""
    layers = _lora_layers(model)

    def context_fn() -> tuple[Any, Any]:
        return contextlib.nullcontext(), _routed_as([(layer, _active(layer)) for layer in layers])

    return context_fn


def _active(layer: nn.Module) -> list[str] | None:
    return None if layer.disable_adapters else list(layer.active_adapters)


@contextlib.contextmanager
def _routed_as(routing: list[tuple[nn.Module, str | list[str] | None]]) -> Iterator[None]:
    """Each LoRA layer computing with the given adapters (None: none) for the duration; restored afterwards.

    Layers already so routed are left alone (recomputation in backward re-routes a whole model per layer).
    """
    wanted = [(layer, None if not adapters else [adapters] if isinstance(adapters, str) else list(adapters))
              for layer, adapters in routing]
    changes = [(layer, adapters) for layer, adapters in wanted if _active(layer) != adapters]
    previous = [(layer, _active(layer)) for layer, _ in changes]
    for layer, adapters in changes:
        _activate(layer, adapters)
    try:
        yield
    finally:
        for layer, active in previous:
            _activate(layer, active)


def encode(backbone: Backbone, pixel_values: torch.Tensor, modality: str | None = None,
           images_per_frame: int = 1) -> torch.Tensor:
    """Frames (B, F*k, 3, S, S) -> LLM-input tokens (B, T, D), routed for `modality` (None: video).

    `images_per_frame` = k > 1: see `as_encoder_videos` and `average_image_groups`.
    """
    with route(backbone, modality):
        tokens = backbone.encode_frames(as_encoder_videos(backbone, pixel_values, images_per_frame))
        return average_image_groups(backbone, tokens, images_per_frame)


def as_encoder_videos(backbone: Backbone, pixel_values: torch.Tensor, images_per_frame: int) -> torch.Tensor:
    """A stream of k images per frame, (B, F*k, 3, S, S), as the videos `encode_frames` takes.

    A family that fuses consecutive frames into one encoder step (Qwen2.5-VL's temporal patch) would
    fuse a frame's k images with each other, so there each of a frame's k images goes in a video of
    its own: (B*k, F, 3, S, S), video b*k + i holding image i of every frame of sample b. Families
    with one frame per step take the stream as it is (each image is encoded on its own anyway).
    """
    if images_per_frame == 1 or backbone.token_layout.frames_per_step == 1:
        return pixel_values
    frames = pixel_values.shape[1] // images_per_frame
    return pixel_values.unflatten(1, (frames, images_per_frame)).transpose(1, 2).flatten(0, 1)


def average_image_groups(backbone: Backbone, tokens: torch.Tensor, images_per_frame: int) -> torch.Tensor:
    """Average the tokens of each frame's `images_per_frame` images into one frame's tokens.

    A modality that draws k images per frame (depth + its normals) is fed to the LLM, and
    matched to the video statistics, as one frame (docs/method.md §5). `tokens` are
    `encode_frames` of `as_encoder_videos`: with one frame per encoder step, (B, F*k*n + t, D)
    -> (B, F*n + t, D), the t trailing tokens (newline) kept; with fused frames, the k videos
    of each sample (B*k, T, D) -> (B, T, D).
    """
    if images_per_frame == 1:
        return tokens
    layout = backbone.token_layout
    if layout.frames_per_step > 1:
        return tokens.unflatten(0, (-1, images_per_frame)).mean(dim=1)
    batch, total, dim = tokens.shape
    end = total - layout.trailing_tokens
    frames = tokens[:, :end].reshape(batch, -1, images_per_frame, layout.tokens_per_step, dim).mean(dim=2)  # (B, F, n, D)
    return torch.cat([frames.reshape(batch, -1, dim), tokens[:, end:]], dim=1)


# ----- adapters on disk ---------------------------------------------------------------
_ADAPTER_CONFIG = "adapter_config.json"


def find_adapter_dir(path: str | Path, name: str) -> Path:
    """The PEFT adapter folder for `name` under `path`: `path` itself or its `name` subfolder."""
    path = Path(path)
    for candidate in (path / name, path):
        if (candidate / _ADAPTER_CONFIG).is_file():
            return candidate
    raise VlynxError(f"no PEFT adapter for '{name}' here (expected {_ADAPTER_CONFIG} in this folder or in "
                     f"its '{name}' subfolder)", path)


def load_adapter(backbone: Backbone, directory: str | Path, name: str) -> None:
    """Attach the PEFT adapter saved in `directory` as `name`, frozen, with V-LynX routing.

    Vision adapters start inactive (routing turns them on per stream); `llm` is always on.
    """
    from peft import PeftModel

    directory = Path(directory)
    if name in adapter_names(backbone):
        raise VlynxError(f"an adapter named '{name}' is already attached", directory)
    flags = [(p, p.requires_grad) for p in backbone.model.parameters()]
    try:
        if backbone.peft_model is None:
            backbone.peft_model = PeftModel.from_pretrained(backbone.model, str(directory), adapter_name=name)
        else:
            backbone.peft_model.load_adapter(str(directory), adapter_name=name)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise VlynxError(_load_problem(name, error), directory) from error
    if name not in adapter_names(backbone):
        raise VlynxError(f"adapter '{name}' matched no layer of this model (saved for another architecture?)",
                         directory)
    # PEFT activates whatever it loaded first, everywhere; restore V-LynX's rule and earlier trainability.
    for layer in _lora_layers(backbone.model):
        _activate(layer, LLM_ADAPTER if LLM_ADAPTER in layer.lora_A else None)
    for parameter, flag in flags:
        parameter.requires_grad = flag
    for layer in _lora_layers(backbone.model):
        if name in layer.lora_A:
            for parameter in _adapter_parameters(layer, name):
                parameter.requires_grad = False


def _load_problem(name: str, error: Exception) -> str:
    """One line for why PEFT could not load an adapter; shape mismatches summarised, not cut off."""
    import re

    text = str(error)
    mismatches = re.findall(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^]]*\])\) from "
                            r"checkpoint, the shape in current model is torch\.Size\((\[[^]]*\])\)", text)
    if mismatches:
        weight, saved, current = mismatches[0]
        return (f"adapter '{name}' does not fit this model: {len(mismatches)} weight(s) have other shapes (first: "
                f"{weight} saved {saved}, model {current}); it was trained for another base model")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"cannot load adapter '{name}' ({error.__class__.__name__}: {first})"


def save_adapters(backbone: Backbone, directory: str | Path, names: Sequence[str] | None = None) -> None:
    """Write adapters `names` (default: all) in PEFT format, one subfolder per adapter."""
    if backbone.peft_model is None:
        raise VlynxError("the model has no adapters to save")
    names = list(names) if names is not None else adapter_names(backbone)
    backbone.peft_model.save_pretrained(str(directory), selected_adapters=names)
    ordinary_permissions(directory)


def _lora_layers(module: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer)]


def _adapter_parameters(layer: nn.Module, name: str) -> list[nn.Parameter]:
    return [*layer.lora_A[name].parameters(), *layer.lora_B[name].parameters()]


def _activate(layer: nn.Module, adapters: str | list[str] | None) -> None:
    """Set which of `layer`'s adapters compute, leaving every requires_grad flag as it was.

    PEFT's own switches also flip requires_grad; V-LynX keeps trainability separate.
    """
    flags = [(p, p.requires_grad) for p in layer.parameters()]
    if adapters is None or adapters == []:
        layer.enable_adapters(False)
    else:
        layer.set_adapter(adapters)
        layer.enable_adapters(True)
    for parameter, flag in flags:
        parameter.requires_grad = flag
