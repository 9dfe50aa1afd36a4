"""The small interface that every other part of vlynx talks to.

A `Backbone` wraps one Hugging Face Video LLM (vision encoder -> projector -> LLM)
and exposes exactly what V-LynX needs: the encoder's self-attention layers, the
frame -> LLM-token path as the backbone itself computes it, the projector, the LLM
and the chat template. Adapters (PEFT LoRA) and their routing live in
`vlynx.adapters`; a backbone only says which Linear layers they may target.
"""
from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vlynx.errors import VlynxError


@dataclass(frozen=True)
class EncoderLayout:
    """Shapes of the vision encoder's self-attention, as V-LynX's statistics use them."""

    num_layers: int
    num_heads: int
    head_dim: int
    grid: tuple[int, int]  # patch grid (rows, cols); positions are row-major

    @property
    def num_positions(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass
class AttentionCapture:
    """Per-layer (queries, keys, values) recorded during one encoder forward.

    Each entry is shaped (frames, heads, positions, head_dim), exactly the tensors the
    encoder's own attention consumed (no second projection pass).
    """

    queries: dict[int, torch.Tensor]
    keys: dict[int, torch.Tensor]
    values: dict[int, torch.Tensor]


class Backbone(ABC):
    """A Video LLM seen through the parts V-LynX touches."""

    model_type: ClassVar[str]  # the Hugging Face `config.model_type` this class handles

    def __init__(self, model: nn.Module, tokenizer: Any | None, source: str) -> None:
        self.model = model  # the Hugging Face model; PEFT adapters are injected into it in place
        self.tokenizer = tokenizer
        self.source = source  # preset name, hub id or local path it came from
        self.peft_model: nn.Module | None = None  # set by vlynx.adapters when the first adapter is added

    # ----- structure -------------------------------------------------------------
    @property
    @abstractmethod
    def vision_tower(self) -> nn.Module: ...

    @property
    @abstractmethod
    def projector(self) -> nn.Module: ...

    @property
    @abstractmethod
    def language_model(self) -> nn.Module: ...

    @abstractmethod
    def attention_modules(self) -> list[nn.Module]:
        """The encoder's self-attention modules, one per layer, in order."""

    @property
    @abstractmethod
    def layout(self) -> EncoderLayout: ...

    @property
    @abstractmethod
    def image_size(self) -> int:
        """Side length (pixels) of the square frames the encoder takes."""

    @abstractmethod
    def pooled_positions(self) -> torch.Tensor:
        """Row-major patch positions kept by the backbone's spatial pooling (query subset)."""

    @abstractmethod
    def tokens_per_video(self, num_frames: int) -> int:
        """How many LLM-input tokens one video of `num_frames` frames becomes."""

    # ----- adapter targets -------------------------------------------------------
    @property
    @abstractmethod
    def vision_lora_targets(self) -> str:
        """Regex (PEFT `target_modules`) for every Linear of the encoder layers."""

    @property
    @abstractmethod
    def llm_lora_targets(self) -> str:
        """Regex (PEFT `target_modules`) for q/k/v/o/gate/up/down of every LLM layer."""

    # ----- frames -> tokens --------------------------------------------------------
    @abstractmethod
    def preprocess_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames (F, H, W, 3) -> encoder input (F, 3, S, S), as the backbone's processor does."""

    @abstractmethod
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encoder input (B, F, 3, S, S) -> LLM-input tokens (B, T, D_llm), pooling and newline included.

        Runs with whatever vision adapter is currently routed (see `vlynx.adapters.route`).
        """

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What must match for statistics computed on one model to be valid on another."""

    @property
    @abstractmethod
    def chat_template(self) -> str: ...

    # ----- shared helpers ----------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.vision_tower.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vision_tower.parameters()).dtype

    @property
    def llm_hidden_size(self) -> int:
        return self.model.config.text_config.hidden_size

    @property
    def pad_token_id(self) -> int:
        """The id that pads token batches: the tokenizer's pad token, else its end-of-sequence token."""
        if self.tokenizer is None:
            raise VlynxError("the model has no tokenizer, so no pad token id; load one with the model", self.source)
        for token_id in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if token_id is not None:
                return token_id
        raise VlynxError("the tokenizer has neither a pad nor an end-of-sequence token; set tokenizer.pad_token",
                         self.source)

    @contextlib.contextmanager
    def capture_attention(
        self, on_layer: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None
    ) -> Iterator[AttentionCapture]:
        """Record every encoder layer's (Q, K, V) where the encoder computes them.

        The capture swaps the encoder's attention implementation for a thin wrapper
        that stores its inputs and then calls the original implementation, so outputs
        are unchanged and nothing is projected twice. With `on_layer(layer, q, k, v)`,
        each layer's tensors go to that callback instead of being kept (streaming
        statistics then hold no activations beyond the encoder's own).
        """
        capture = AttentionCapture({}, {}, {})
        layer_of = {id(module): index for index, module in enumerate(self.attention_modules())}
        configs = {id(m.config): m.config for m in self.attention_modules()}
        previous = {key: config._attn_implementation for key, config in configs.items()}

        def record(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
            layer = layer_of.get(id(module))
            if layer is None:
                return
            if on_layer is not None:
                on_layer(layer, query, key, value)
            else:
                capture.queries[layer], capture.keys[layer], capture.values[layer] = query, key, value

        with _recording(record):
            for key, config in configs.items():
                config._attn_implementation = f"{_CAPTURE_PREFIX}{previous[key] or 'eager'}"
            try:
                yield capture
            finally:
                for key, config in configs.items():
                    config._attn_implementation = previous[key]


# The capturing attention is registered once per wrapped implementation name
# ("vlynx_capture:sdpa", ...). The active recorder is thread-local so that
# concurrent models in one process do not see each other's captures.
_CAPTURE_PREFIX = "vlynx_capture:"
_recorders = threading.local()


@contextlib.contextmanager
def _recording(record: Callable[..., None]) -> Iterator[None]:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    for name in list(ALL_ATTENTION_FUNCTIONS.keys()) + ["eager"]:
        if not name.startswith(_CAPTURE_PREFIX) and f"{_CAPTURE_PREFIX}{name}" not in ALL_ATTENTION_FUNCTIONS:
            ALL_ATTENTION_FUNCTIONS.register(f"{_CAPTURE_PREFIX}{name}", _capturing(name))
    stack = getattr(_recorders, "stack", None)
    if stack is None:
        stack = _recorders.stack = []
    stack.append(record)
    try:
        yield
    finally:
        stack.pop()


def _capturing(inner_name: str) -> Callable[..., Any]:
    def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args, **kwargs):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        for record in getattr(_recorders, "stack", []):
            record(module, query, key, value)
        if inner_name == "eager":
            inner = _eager_attention_of(module)
        else:
            inner = ALL_ATTENTION_FUNCTIONS[inner_name]
        return inner(module, query, key, value, *args, **kwargs)

    return attention


def _eager_attention_of(module: nn.Module) -> Callable[..., Any]:
    import importlib

    return importlib.import_module(type(module).__module__).eager_attention_forward
