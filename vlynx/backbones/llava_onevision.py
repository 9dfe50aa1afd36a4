"""LLaVA-OneVision (SigLIP encoder -> 2-layer MLP projector -> Qwen2) as a vlynx backbone."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vlynx.backbones.base import Backbone, EncoderLayout, TokenLayout
from vlynx.backbones.shared import CHATML_TEMPLATE, bfloat16_digest, resized_and_normalized

# SigLIP preprocessing of the LLaVA-OneVision processor: bicubic resize, x/255, (x - 0.5) / 0.5.
_MEAN = 0.5
_STD = 0.5


class LlavaOnevisionBackbone(Backbone):
    model_type = "llava_onevision"

    @property
    def _inner(self) -> nn.Module:
        return self.model.model  # LlavaOnevisionModel inside ...ForConditionalGeneration

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
        return [layer.self_attn for layer in self.vision_tower.encoder.layers]

    @property
    def layout(self) -> EncoderLayout:
        vision = self.model.config.vision_config
        side = vision.image_size // vision.patch_size
        return EncoderLayout(
            num_layers=vision.num_hidden_layers,
            num_heads=vision.num_attention_heads,
            head_dim=vision.hidden_size // vision.num_attention_heads,
            grid=(side, side),
        )

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    @property
    def token_layout(self) -> TokenLayout:
        rows, cols = self.layout.grid
        # one frame per step, ceil(g/2)^2 pooled tokens per frame, one image_newline per video
        return TokenLayout(frames_per_step=1, tokens_per_step=((rows + 1) // 2) * ((cols + 1) // 2), trailing_tokens=1)

    def pooled_positions(self) -> torch.Tensor:
        # 2x bilinear pooling of a g x g grid to ceil(g/2)^2 samples rows/cols 0, 2, 4, ...
        rows, cols = self.layout.grid
        keep_rows = torch.arange(0, rows, 2)
        keep_cols = torch.arange(0, cols, 2)
        return (keep_rows[:, None] * cols + keep_cols[None, :]).flatten()

    def query_positions(self) -> torch.Tensor:
        # the positions 2x pooling keeps, one per pooled token (the authors' choice)
        return self.pooled_positions()

    def output_projection(self, layer: int) -> nn.Module:
        return self.attention_modules()[layer].out_proj

    @property
    def vision_lora_targets(self) -> str:
        return r".*vision_tower\.encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"

    @property
    def llm_lora_targets(self) -> str:
        return r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"

    def preprocess_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        return resized_and_normalized(frames, self.image_size, (_MEAN,) * 3, (_STD,) * 3)

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        # The backbone's own video path: encoder -> projector -> 2x bilinear pooling -> + image_newline.
        return self._inner.get_video_features(pixel_values_videos=pixel_values, return_dict=True).pooler_output

    def fingerprint(self) -> dict[str, Any]:
        config = self.model.config
        vision = config.vision_config
        return {
            "model_type": self.model_type,
            "vision": {
                "hidden_size": vision.hidden_size,
                "intermediate_size": vision.intermediate_size,
                "num_hidden_layers": vision.num_hidden_layers,
                "num_attention_heads": vision.num_attention_heads,
                "image_size": vision.image_size,
                "patch_size": vision.patch_size,
            },
            "vision_feature_layer": config.vision_feature_layer,
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
            "llm_hidden_size": config.text_config.hidden_size,
            "preprocessing": {"resize": "bicubic", "size": vision.image_size, "mean": _MEAN, "std": _STD},
            "pooling": "bilinear-2x+newline",
            "weights": self._weights_digest(),
        }

    def _weights_digest(self) -> str | None:
        """Hash of a few encoder/projector tensors: tells checkpoints of one architecture apart cheaply.

        The values are hashed rounded to bfloat16, so one checkpoint loaded in float32 or bfloat16
        (`--dtype`) has one digest: reference statistics made in one precision serve the other.
        """
        tensors = [
            self.vision_tower.embeddings.patch_embedding.weight,
            self.attention_modules()[-1].out_proj.weight,
            self.projector.linear_2.weight,
            self._inner.image_newline,
        ]
        return bfloat16_digest(tensors)

    @property
    def chat_template(self) -> str:
        # vlynx renders text turns (with an "<image>" placeholder). The processor-style templates of
        # llava-hf checkpoints expect content lists and would drop plain text, so those fall back to
        # Qwen2 ChatML, the format LLaVA-OneVision was trained with.
        template = getattr(self.tokenizer, "chat_template", None)
        if isinstance(template, str) and template and "selectattr('type'" not in template:
            return template
        return CHATML_TEMPLATE
