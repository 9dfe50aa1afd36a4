"""Qwen2.5-VL (windowed ViT with 2-D RoPE -> 2x2 PatchMerger -> Qwen2 with M-RoPE) as a vlynx backbone.

What differs from LLaVA-OneVision, and the choices made here (docs/method.md §3):

- frames: resized to a fixed square (`DEFAULT_IMAGE_SIZE` = 448 px, 32x32 patches of 14 px, 16x16
  LLM tokens per step) so that K̄/V̄ have one shape; the model's processor would pick a size per
  video. Two consecutive frames form one encoder step (temporal patch 2); an odd last frame is
  repeated, as the processor does.
- attention capture: the encoder reorders patches by window and runs attention per window, so a
  layer's Q/K/V (post-RoPE) arrive in pieces; they are joined and put back in row-major grid order.
- queries: the merger turns each 2x2 block into one LLM token, nothing is "kept"; one query per
  merged block (its top-left patch) is compared, one per LLM token as for LLaVA-OneVision, whose
  pooled positions are the same rows/cols 0, 2, 4, ...
- windowed layers: a query's reference response (eq. 5) attends only to the reference keys of its
  own window, as the layer's own attention does; full-attention layers see all positions.
- LLM input: each block is wrapped in <|vision_start|> ... <|vision_end|> and gets the model's
  own 3-D M-RoPE position ids (`get_rope_index`, one temporal step per second of video).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vlynx.backbones.base import Backbone, EncoderLayout, TokenLayout
from vlynx.backbones.shared import bfloat16_digest, resized_and_normalized, string_content_template
from vlynx.errors import VlynxError

DEFAULT_IMAGE_SIZE = 448  # 16 x 28 px: whole 2x2 merge blocks and whole 112-px windows
# OpenAI CLIP normalisation of the Qwen2-VL image processor (after bicubic resize, x/255)
_MEAN = (0.48145466, 0.4578275, 0.40821073)
_STD = (0.26862954, 0.26130258, 0.27577711)


class Qwen2_5_VLBackbone(Backbone):
    model_type = "qwen2_5_vl"

    def __init__(self, model: nn.Module, tokenizer: Any | None, source: str) -> None:
        super().__init__(model, tokenizer, source)
        vision = model.config.vision_config
        if self.image_size % (vision.patch_size * vision.spatial_merge_size):
            raise VlynxError(f"vlynx_image_size {self.image_size} is not a multiple of patch_size x "
                             f"spatial_merge_size ({vision.patch_size * vision.spatial_merge_size})", source)
        self._orders: dict[int, torch.Tensor] = {}  # steps -> row-major index into the encoder's order

    @property
    def _inner(self) -> nn.Module:
        return self.model.model  # Qwen2_5_VLModel inside ...ForConditionalGeneration

    @property
    def _vision(self):
        return self.model.config.vision_config

    @property
    def vision_tower(self) -> nn.Module:
        return self._inner.visual  # ViT blocks and the merger: the vision LoRA covers all of it

    @property
    def projector(self) -> nn.Module:
        return self._inner.visual.merger

    @property
    def language_model(self) -> nn.Module:
        return self._inner.language_model

    def attention_modules(self) -> list[nn.Module]:
        return [block.attn for block in self.vision_tower.blocks]

    def output_projection(self, layer: int) -> nn.Module:
        return self.attention_modules()[layer].proj

    @property
    def image_size(self) -> int:
        # a config may fix another size (the tiny test model does); real checkpoints use the default
        return int(getattr(self.model.config, "vlynx_image_size", DEFAULT_IMAGE_SIZE))

    @property
    def layout(self) -> EncoderLayout:
        vision = self._vision
        side = self.image_size // vision.patch_size
        return EncoderLayout(num_layers=vision.depth, num_heads=vision.num_heads,
                             head_dim=vision.hidden_size // vision.num_heads, grid=(side, side))

    @property
    def token_layout(self) -> TokenLayout:
        merge = self._vision.spatial_merge_size
        rows, cols = self.layout.grid
        return TokenLayout(frames_per_step=self._vision.temporal_patch_size,
                           tokens_per_step=(rows // merge) * (cols // merge), wrapping_tokens=2)

    def query_positions(self) -> torch.Tensor:
        # the top-left patch of every merged 2x2 block, one per LLM token
        rows, cols = self.layout.grid
        merge = self._vision.spatial_merge_size
        return (torch.arange(0, rows, merge)[:, None] * cols + torch.arange(0, cols, merge)[None, :]).flatten()

    def reference_attention_mask(self, layer: int) -> torch.Tensor | None:
        if layer in self._vision.fullatt_block_indexes:
            return None
        window = self._window_of_positions()
        return window[:, None] == window[None, :]  # (positions, positions): same window

    def _window_of_positions(self) -> torch.Tensor:
        """The window index of every row-major patch position, windows as the encoder tiles them."""
        vision = self._vision
        rows, cols = self.layout.grid
        merge = vision.spatial_merge_size
        side = vision.window_size // merge // vision.patch_size  # window side in merged blocks
        windows_per_row = -(-(cols // merge) // side)
        block_row = torch.arange(rows) // merge // side
        block_col = torch.arange(cols) // merge // side
        return (block_row[:, None] * windows_per_row + block_col[None, :]).flatten()

    @property
    def vision_lora_targets(self) -> str:
        # every Linear inside the vision tower: qkv/proj/gate/up/down of each block and the merger's MLP
        return r".*visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate_proj|up_proj|down_proj))|merger\.mlp\.(0|2))"

    @property
    def llm_lora_targets(self) -> str:
        return r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"

    # ----- frames -> tokens --------------------------------------------------------
    def preprocess_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        return resized_and_normalized(frames, self.image_size, _MEAN, _STD)

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        patches, grid = self.patchify(pixel_values)
        # The model's own video path: windowed ViT -> 2x2 merger, tokens back in (step, row, col) order.
        features = self._inner.get_video_features(pixel_values_videos=patches, video_grid_thw=grid,
                                                  return_dict=True).pooler_output
        return torch.stack(features)  # (B, steps * merged blocks, D_llm)

    def patchify(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, 3, S, S) -> the processor's flattened patches (B*steps*h*w, 3*t*p*p) and `video_grid_thw` (B, 3).

        Patches of one step are ordered block-major (each 2x2 merge block's 4 patches together),
        as Qwen2-VL's processor lays them out; an odd last frame is repeated.
        """
        vision = self._vision
        temporal, patch, merge = vision.temporal_patch_size, vision.patch_size, vision.spatial_merge_size
        batch, frames, channels, height, width = pixel_values.shape
        missing = -frames % temporal
        if missing:
            pixel_values = torch.cat([pixel_values, pixel_values[:, -1:].expand(-1, missing, -1, -1, -1)], dim=1)
        steps, rows, cols = pixel_values.shape[1] // temporal, height // patch, width // patch
        grid = pixel_values.reshape(batch, steps, temporal, channels, rows // merge, merge, patch,
                                    cols // merge, merge, patch)
        # -> (B, steps, block row, block col, row in block, col in block, channels, temporal, p, p)
        grid = grid.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
        patches = grid.reshape(batch * steps * rows * cols, channels * temporal * patch * patch)
        thw = torch.tensor([[steps, rows, cols]] * batch, device=pixel_values.device)
        return patches, thw

    # ----- attention in grid order ---------------------------------------------------
    def capture_attention(self, on_layer=None):
        """As `Backbone.capture_attention`, with each layer's windows joined and put in row-major order.

        The encoder calls its attention once per window (or per step) on window-ordered patches; the
        pieces are collected and handed on, as (steps, heads, positions, head_dim), when the layer's
        output projection runs (after its last window).
        """
        import contextlib

        from vlynx.backbones.base import AttentionCapture

        capture = AttentionCapture({}, {}, {})
        pieces: dict[int, list[tuple[torch.Tensor, ...]]] = {}

        def collect(layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
            pieces.setdefault(layer, []).append((query, key, value))  # each (1, heads, window, head_dim)

        def hand_on(layer: int) -> None:
            if layer not in pieces:
                return
            # Kept as usual even inside a checkpointed layer: its recomputation runs without this capture.
            with torch.autograd.graph.saved_tensors_hooks(lambda tensor: tensor, lambda tensor: tensor):
                query, key, value = (self._as_steps(torch.cat(parts, dim=2)) for parts in zip(*pieces.pop(layer)))
            if on_layer is not None:
                on_layer(layer, query, key, value)
            else:
                capture.queries[layer], capture.keys[layer], capture.values[layer] = query, key, value

        @contextlib.contextmanager
        def joined():
            with contextlib.ExitStack() as stack:
                stack.enter_context(Backbone.capture_attention(self, on_layer=collect))
                for layer in range(self.layout.num_layers):
                    handle = self.output_projection(layer).register_forward_pre_hook(
                        lambda _module, _inputs, layer=layer: hand_on(layer))
                    stack.callback(handle.remove)
                yield capture

        return joined()

    def _as_steps(self, tensor: torch.Tensor) -> torch.Tensor:
        """(1, heads, steps*positions, d) in the encoder's window order -> (steps, heads, positions, d) row-major."""
        _, heads, length, dim = tensor.shape
        order = self._row_major_order(length // self.layout.num_positions).to(tensor.device)
        return tensor[0].index_select(1, order).reshape(heads, -1, self.layout.num_positions, dim).transpose(0, 1)

    def attention_output_as_steps(self, tensor: torch.Tensor) -> torch.Tensor:
        # the output projection runs on (steps*positions, width) in window order
        length, width = tensor.shape
        order = self._row_major_order(length // self.layout.num_positions).to(tensor.device)
        return tensor.index_select(0, order).reshape(-1, self.layout.num_positions, width)

    def _row_major_order(self, steps: int) -> torch.Tensor:
        """Index into the encoder's patch order (window-major, block-major) of each (step, row, col) patch."""
        if steps not in self._orders:
            from transformers.vision_utils import get_vision_window_index

            vision = self._vision
            rows, cols = self.layout.grid
            merge = vision.spatial_merge_size
            unit = merge * merge
            window_index, _ = get_vision_window_index(torch.tensor([[steps, rows, cols]]), merge,
                                                      vision.window_size, vision.patch_size)
            # encoder slot i holds processor patch encoder_to_processor[i]
            encoder_to_processor = (window_index[:, None] * unit + torch.arange(unit)).flatten()
            processor_to_encoder = torch.argsort(encoder_to_processor)
            step, row, col = torch.meshgrid(torch.arange(steps), torch.arange(rows), torch.arange(cols), indexing="ij")
            blocks_per_row = cols // merge
            processor = (step * rows * cols + ((row // merge) * blocks_per_row + col // merge) * unit
                         + (row % merge) * merge + col % merge)
            self._orders[steps] = processor_to_encoder[processor.flatten()]
        return self._orders[steps]

    # ----- LLM input ------------------------------------------------------------------
    def wrap_block(self, block: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        ids = torch.tensor([config.vision_start_token_id, config.vision_end_token_id], device=block.device)
        start, end = self.model.get_input_embeddings()(ids).to(block.dtype)
        return torch.cat([start[None], block, end[None]])

    def llm_position_ids(self, input_ids, spans, starts, attention_mask, blocks) -> torch.Tensor:
        """The model's own 3-D M-RoPE ids (`get_rope_index`) for the sequence as its processor would write it."""
        config = self.model.config
        merge = self._vision.spatial_merge_size
        rows, cols = self.layout.grid
        device = attention_mask.device
        ids = torch.zeros(attention_mask.shape, dtype=torch.long, device=device)
        kinds = torch.zeros(attention_mask.shape, dtype=torch.int, device=device)  # 0 text, 2 video
        grids = []
        for row, (text, (at, lengths)) in enumerate(zip(input_ids, spans)):
            sequence = list(text[:at])
            for length in lengths:
                tokens = length - 2  # without vision start/end
                grids.append([tokens // ((rows // merge) * (cols // merge)), rows, cols])
                sequence += [config.vision_start_token_id, *[config.video_token_id] * tokens,
                             config.vision_end_token_id]
            sequence += list(text[at + 1:])
            ids[row, starts[row]:starts[row] + len(sequence)] = torch.tensor(sequence, device=device)
        kinds[ids == config.video_token_id] = 2
        position_ids, _ = self._inner.get_rope_index(ids, mm_token_type_ids=kinds,
                                                     video_grid_thw=torch.tensor(grids, device=device),
                                                     attention_mask=attention_mask)
        return position_ids  # (3, B, L)

    # ----- identity ---------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        vision = self._vision
        return {
            "model_type": self.model_type,
            "vision": {key: getattr(vision, key) for key in (
                "hidden_size", "intermediate_size", "depth", "num_heads", "patch_size", "temporal_patch_size",
                "spatial_merge_size", "window_size", "fullatt_block_indexes", "out_hidden_size")},
            "llm_hidden_size": self.model.config.text_config.hidden_size,
            "preprocessing": {"resize": "bicubic", "size": self.image_size, "mean": list(_MEAN), "std": list(_STD)},
            "pooling": "merger-2x2",
            "weights": self._weights_digest(),
        }

    def _weights_digest(self) -> str | None:
        """Hash of a few encoder/merger tensors rounded to bfloat16 (one digest in float32 and bfloat16)."""
        tensors = [self.vision_tower.patch_embed.proj.weight, self.output_projection(-1).weight,
                   self.projector.mlp[2].weight]
        return bfloat16_digest(tensors)

    @property
    def chat_template(self) -> str:
        # the fallback ChatML is the format Qwen2.5-VL's own template for text writes
        return string_content_template(self.tokenizer)
