"""InternVL-2.5 (InternViT with a CLS token -> pixel shuffle -> MLP projector -> Qwen2 / InternLM2) as a vlynx backbone.

transformers' `InternVLForConditionalGeneration`. What differs from LLaVA-OneVision, and the
choices made here (docs/method.md §3c):

- frames: one 448 px tile per frame (the encoder's native size, `vision_config.image_size`), as
  InternVL's own video path does (no dynamic tiling for video); bicubic, x/255, ImageNet mean/std.
- CLS: the encoder attends over [CLS, 32x32 patches]; the CLS token is dropped before the projector
  (`vision_feature_select_strategy` "default"). It stays position 0 of the captured Q/K/V and of K̄/V̄,
  so the reference response (eq. 5) attends over the same keys as the layer's own attention.
- tokens: pixel shuffle (downsample 0.5) folds each 2x2 block of patches into one 4x wider token,
  then LayerNorm -> Linear -> GELU -> Linear: 256 tokens per frame, no newline token.
- queries: one per LLM token, the top-left patch of its 2x2 block (rows/cols 0, 2, 4, ...).
- LLM input: each block wrapped in <img> ... </img>; InternVL's own video prompt also labels every
  frame ("Frame1: <img>...</img>"), which vlynx's one-block-per-stream layout does not reproduce.
- vision LoRA: every Linear inside the vision tower (q/k/v split as transformers holds them, the
  output `projection_layer`, fc1, fc2); the projector stays frozen, as LLaVA-OneVision's.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vlynx.backbones.base import Backbone, EncoderLayout, TokenLayout
from vlynx.backbones.shared import bfloat16_digest, resized_and_normalized, string_content_template
from vlynx.errors import VlynxError

# ImageNet normalisation of InternVL's image processor (after bicubic resize, x/255)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_IMAGE_START, _IMAGE_END = "<img>", "</img>"


class InternVLBackbone(Backbone):
    model_type = "internvl"

    def __init__(self, model: nn.Module, tokenizer: Any | None, source: str) -> None:
        super().__init__(model, tokenizer, source)
        config = model.config
        if config.vision_feature_layer != -1 or config.vision_feature_select_strategy != "default":
            raise VlynxError(
                f"vlynx supports InternVL checkpoints that feed the last encoder layer without its CLS token "
                f"(vision_feature_layer -1, strategy 'default'); this one has {config.vision_feature_layer!r}, "
                f"{config.vision_feature_select_strategy!r}", source)
        if config.downsample_ratio != 0.5:
            raise VlynxError(f"vlynx supports InternVL's 2x2 pixel shuffle (downsample_ratio 0.5), "
                             f"not {config.downsample_ratio}", source)

    @property
    def _inner(self) -> nn.Module:
        return self.model.model  # InternVLModel inside ...ForConditionalGeneration

    @property
    def _vision(self):
        return self.model.config.vision_config

    @property
    def vision_tower(self) -> nn.Module:
        return self._inner.vision_tower

    @property
    def projector(self) -> nn.Module:
        return self._inner.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self._inner.language_model

    def attention_modules(self) -> list[nn.Module]:
        return [layer.attention for layer in self.vision_tower.encoder.layer]

    def output_projection(self, layer: int) -> nn.Module:
        return self.attention_modules()[layer].projection_layer

    @property
    def image_size(self) -> int:
        return int(self._vision.image_size[0])

    @property
    def layout(self) -> EncoderLayout:
        vision = self._vision
        rows, cols = (size // patch for size, patch in zip(vision.image_size, vision.patch_size))
        return EncoderLayout(num_layers=vision.num_hidden_layers, num_heads=vision.num_attention_heads,
                             head_dim=vision.hidden_size // vision.num_attention_heads, grid=(rows, cols),
                             leading_positions=1)  # the CLS token

    @property
    def token_layout(self) -> TokenLayout:
        rows, cols = self.layout.grid
        return TokenLayout(frames_per_step=1, tokens_per_step=(rows // 2) * (cols // 2), wrapping_tokens=2)

    def query_positions(self) -> torch.Tensor:
        # the top-left patch of every 2x2 pixel-shuffle block, one per LLM token, after the CLS position
        rows, cols = self.layout.grid
        grid = (torch.arange(0, rows, 2)[:, None] * cols + torch.arange(0, cols, 2)[None, :]).flatten()
        return grid + self.layout.leading_positions

    @property
    def vision_lora_targets(self) -> str:
        return (r".*vision_tower\.encoder\.layer\.\d+\."
                r"(attention\.(q_proj|k_proj|v_proj|projection_layer)|mlp\.(fc1|fc2))")

    @property
    def llm_lora_targets(self) -> str:
        return r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"

    def parameter_notes(self, vision_rank: int) -> list[str]:
        # split q/k/v: 3 LoRAs of r*(h + h); the original fused qkv h -> 3h: one of r*(h + 3h)
        hidden, layers = self._vision.hidden_size, self._vision.num_hidden_layers
        fewer = layers * 2 * vision_rank * hidden
        return [f"counted on transformers' InternVL, whose vision attention has separate q_proj/k_proj/v_proj; "
                f"the original InternViT fuses them into one qkv Linear ({hidden}->{3 * hidden}), where the "
                f"vision LoRA has {fewer:,d} fewer parameters: the layout the paper counts (docs/method.md §4)"]

    # ----- frames -> tokens --------------------------------------------------------
    def preprocess_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        return resized_and_normalized(frames, self.image_size, _MEAN, _STD)

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        batch, frames = pixel_values.shape[:2]
        # The model's own path for each frame as one tile: encoder -> drop CLS -> pixel shuffle -> projector.
        features = self._inner.get_image_features(pixel_values=pixel_values.flatten(0, 1),
                                                  return_dict=True).pooler_output  # (B*F, 256, D_llm)
        return features.reshape(batch, frames * features.shape[1], -1)

    # ----- LLM input ------------------------------------------------------------------
    def wrap_block(self, block: torch.Tensor) -> torch.Tensor:
        ids = torch.tensor(self._image_delimiters(), device=block.device)
        start, end = self.model.get_input_embeddings()(ids).to(block.dtype)
        return torch.cat([start[None], block, end[None]])

    def _image_delimiters(self) -> tuple[int, int]:
        """Ids of <img> and </img>: the tokenizer's, else the config's (`image_start/end_token_id`, presets)."""
        tokenizer = self.tokenizer
        if tokenizer is not None:
            ids = tokenizer.convert_tokens_to_ids([_IMAGE_START, _IMAGE_END])
            if tokenizer.unk_token_id not in ids and None not in ids:
                return tuple(ids)
        config = self.model.config
        ids = (getattr(config, "image_start_token_id", None), getattr(config, "image_end_token_id", None))
        if None in ids:
            raise VlynxError(f"neither the tokenizer nor the config knows the ids of {_IMAGE_START} and {_IMAGE_END}",
                             self.source)
        return ids

    # ----- identity ---------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        vision, config = self._vision, self.model.config
        return {
            "model_type": self.model_type,
            "vision": {
                "hidden_size": vision.hidden_size,
                "intermediate_size": vision.intermediate_size,
                "num_hidden_layers": vision.num_hidden_layers,
                "num_attention_heads": vision.num_attention_heads,
                "image_size": list(vision.image_size),
                "patch_size": list(vision.patch_size),
                "norm_type": vision.norm_type,
                "use_qk_norm": vision.use_qk_norm,
            },
            "downsample_ratio": config.downsample_ratio,
            "vision_feature_layer": config.vision_feature_layer,
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
            "llm_hidden_size": config.text_config.hidden_size,
            "preprocessing": {"resize": "bicubic", "size": self.image_size, "mean": list(_MEAN), "std": list(_STD)},
            "pooling": "pixel-shuffle-2x2",
            "weights": self._weights_digest(),
        }

    def _weights_digest(self) -> str | None:
        """Hash of a few encoder/projector tensors rounded to bfloat16 (one digest in float32 and bfloat16)."""
        embeddings = self.vision_tower.embeddings
        tensors = [embeddings.patch_embeddings.projection.weight, embeddings.cls_token,
                   self.output_projection(-1).weight, self.projector.linear_2.weight]
        return bfloat16_digest(tensors)

    @property
    def chat_template(self) -> str:
        # the fallback ChatML is the format InternVL-2.5's "internvl2_5" conversation template writes
        return string_content_template(self.tokenizer)
