"""The small interface that every other part of vlynx talks to.

A `Backbone` wraps one Hugging Face Video LLM (vision encoder -> projector -> LLM)
and exposes exactly what V-LynX needs, in terms that hold for every family:

- per encoder layer, the attention inputs as the layer consumes them (`capture_attention`:
  post-RoPE Q/K where RoPE applies, shaped (steps, heads, positions, head_dim) on a fixed,
  row-major patch grid) and the layer's output projection (`output_projection`);
- the query positions the alignment loss compares (`query_positions`) and, for layers that
  attend within windows, which reference positions a query may see (`reference_attention_mask`);
- the token layout (`token_layout`: frames fused per encoder step, tokens per step, special
  tokens) and the frame -> LLM-token path as the model itself computes it (`encode_frames`);
- the LLM input assembly (`build_llm_inputs`: embeddings, mask, position ids);
- the projector, the LLM and the chat template.

Adding a family is one module with one `Backbone` subclass plus its presets. Adapters (PEFT
LoRA) and their routing live in `vlynx.adapters`; a backbone only says which Linear layers
they may target.
"""
from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vlynx.errors import VlynxError


IGNORE_INDEX = -100  # label of every token the loss skips (PyTorch's cross-entropy default)


@dataclass(frozen=True)
class EncoderLayout:
    """Shapes of the vision encoder's self-attention, as V-LynX's statistics use them."""

    num_layers: int
    num_heads: int
    head_dim: int
    grid: tuple[int, int]  # patch grid (rows, cols) of one encoder step; positions are row-major
    leading_positions: int = 0  # tokens the encoder attends over before the grid (InternViT's CLS): positions 0..n-1

    @property
    def num_positions(self) -> int:
        return self.leading_positions + self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class TokenLayout:
    """How one video's frames become LLM-input tokens.

    The encoder takes `frames_per_step` consecutive frames as one step (Qwen2.5-VL's temporal
    patch: 2; a missing last frame repeats the one before, as the model's processor does) and
    each step becomes `tokens_per_step` projected tokens; `trailing_tokens` more follow the
    frames' in `encode_frames` (LLaVA-OneVision's image_newline). `wrapping_tokens` are the text
    tokens `build_llm_inputs` puts around each block (Qwen2.5-VL's vision start/end).
    """

    frames_per_step: int
    tokens_per_step: int
    trailing_tokens: int = 0
    wrapping_tokens: int = 0

    def steps(self, num_frames: int) -> int:
        return -(-num_frames // self.frames_per_step)

    def encoded_tokens(self, num_frames: int) -> int:
        """Tokens `encode_frames` returns for one video of `num_frames` frames."""
        return self.steps(num_frames) * self.tokens_per_step + self.trailing_tokens


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
    def token_layout(self) -> TokenLayout: ...

    @property
    @abstractmethod
    def image_size(self) -> int:
        """Side length (pixels) of the square frames the encoder takes (fixed, so K̄/V̄ have one shape)."""

    @abstractmethod
    def query_positions(self) -> torch.Tensor:
        """Row-major patch positions whose queries the attention-alignment loss compares (one per LLM token)."""

    @abstractmethod
    def output_projection(self, layer: int) -> nn.Module:
        """The Linear that maps encoder layer `layer`'s attention output back to the residual stream."""

    def reference_attention_mask(self, layer: int) -> torch.Tensor | None:
        """(positions, positions) bool: which reference keys a query may attend to in eq. (5); None: all."""
        return None

    def attention_output_as_steps(self, tensor: torch.Tensor) -> torch.Tensor:
        """An output projection's input or output as the layer ran it -> (steps, positions, width), row-major."""
        return tensor

    def tokens_per_video(self, num_frames: int) -> int:
        """How many LLM-input tokens one video of `num_frames` frames becomes (its block, special tokens included)."""
        layout = self.token_layout
        return layout.encoded_tokens(num_frames) + layout.wrapping_tokens

    # ----- adapter targets -------------------------------------------------------
    @property
    @abstractmethod
    def vision_lora_targets(self) -> str:
        """Regex (PEFT `target_modules`) for every Linear of the encoder layers."""

    @property
    @abstractmethod
    def llm_lora_targets(self) -> str:
        """Regex (PEFT `target_modules`) for q/k/v/o/gate/up/down of every LLM layer."""

    def parameter_notes(self, vision_rank: int) -> list[str]:
        """Remarks `vlynx params` prints beside the counts (e.g. where a published count used another layout)."""
        return []

    # ----- frames -> tokens --------------------------------------------------------
    @abstractmethod
    def preprocess_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames (F, H, W, 3) -> encoder input (F, 3, S, S), as the backbone's processor does."""

    @abstractmethod
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encoder input (B, F, 3, S, S) -> projected tokens (B, T, D_llm), T = `token_layout.encoded_tokens(F)`.

        The model's own video path (pooling or merging, newline included where the model adds one).
        Runs with whatever vision adapter is currently routed (see `vlynx.adapters.route`).
        """

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What must match for statistics computed on one model to be valid on another."""

    @property
    @abstractmethod
    def chat_template(self) -> str: ...

    # ----- LLM input ------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        """The token id that marks, in tokenized text, where the media blocks go."""
        return self.model.config.image_token_id

    def build_llm_inputs(self, input_ids: Sequence[Sequence[int]], blocks: Sequence[torch.Tensor],
                         labels: Sequence[Sequence[int]] | None = None,
                         padding_side: str = "right") -> dict[str, torch.Tensor]:
        """The LLM input: each sequence's image token replaced by its media blocks, then padded.

        `blocks` are (B, T_k, D) for k = video, modalities... (`encode_frames` output); returns
        `inputs_embeds` (B, L, D), `attention_mask` (B, L), `position_ids` where the family needs
        its own (e.g. M-RoPE: (3, B, L)) and, when `labels` are given, `labels` (B, L) with
        IGNORE_INDEX on the blocks and the padding.
        """
        image_token_id = self.image_token_id
        embed = self.model.get_input_embeddings()
        device = embed.weight.device
        sequences, targets, spans = [], [], []
        for row, ids in enumerate(input_ids):
            if list(ids).count(image_token_id) != 1:
                raise ValueError(f"sequence {row} must hold exactly one image token (id {image_token_id})")
            at = list(ids).index(image_token_id)
            text = embed(torch.as_tensor(ids, device=device))  # (L_text, D)
            media = [self.wrap_block(block[row].to(device=device, dtype=text.dtype)) for block in blocks]
            sequences.append(torch.cat([text[:at], *media, text[at + 1:]]))
            spans.append((at, [len(m) for m in media]))
            if labels is not None:
                ignored = torch.full((sum(len(m) for m in media),), IGNORE_INDEX, dtype=torch.long, device=device)
                label_row = torch.as_tensor(labels[row], dtype=torch.long, device=device)
                targets.append(torch.cat([label_row[:at], ignored, label_row[at + 1:]]))
        length = max(len(s) for s in sequences)
        batch, hidden = len(sequences), sequences[0].shape[-1]
        inputs_embeds = sequences[0].new_zeros(batch, length, hidden)
        attention_mask = torch.zeros(batch, length, dtype=torch.long, device=device)
        padded_labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long, device=device)
        starts = []
        for row, sequence in enumerate(sequences):
            start = 0 if padding_side == "right" else length - len(sequence)
            starts.append(start)
            inputs_embeds[row, start:start + len(sequence)] = sequence
            attention_mask[row, start:start + len(sequence)] = 1
            if labels is not None:
                padded_labels[row, start:start + len(sequence)] = targets[row]
        out = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask}
        position_ids = self.llm_position_ids(input_ids, spans, starts, attention_mask, blocks)
        if position_ids is not None:
            out["position_ids"] = position_ids
        if labels is not None:
            out["labels"] = padded_labels
        return out

    def wrap_block(self, block: torch.Tensor) -> torch.Tensor:
        """One media block (T, D) as it goes into the LLM input (with the family's special tokens, if any)."""
        return block

    def llm_position_ids(self, input_ids: Sequence[Sequence[int]], spans: list[tuple[int, list[int]]],
                         starts: list[int], attention_mask: torch.Tensor,
                         blocks: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """Position ids for `build_llm_inputs`, or None where the LLM's own default (1-D, from 0) is right.

        `spans[row]` = (where the image token was, the length of each wrapped block); `starts[row]` = the
        row's first column after padding."""
        return None

    # ----- shared helpers ----------------------------------------------------------
    def encoder_steps(self, num_frames: int) -> int:
        """Encoder steps (the rows of a captured layer's Q/K/V) one video of `num_frames` frames takes."""
        return self.token_layout.steps(num_frames)

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
                if not (previous[key] or "").startswith(_CAPTURE_PREFIX):  # nested captures share one wrapper
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
