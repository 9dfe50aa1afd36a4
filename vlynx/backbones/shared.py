"""What the family modules share: their image preprocessing, the weights digest of a fingerprint,
and the ChatML template for checkpoints whose own template does not render plain-text turns."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Qwen2 ChatML, used when a checkpoint ships no chat template of its own (presets, tiny models)
# or one that renders only content lists.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def resized_and_normalized(frames: np.ndarray | torch.Tensor, size: int, mean: Sequence[float],
                           std: Sequence[float]) -> torch.Tensor:
    """uint8 RGB frames (F, H, W, 3) as float32 encoder inputs (F, 3, size, size), the way the families'
    image processors make them: bicubic resize (PIL), x / 255, then (x - mean) / std per channel."""
    from PIL import Image

    frames = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames shaped (F, H, W, 3), got {frames.dtype} {frames.shape}")
    resized = np.stack([np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC)) for frame in frames])
    pixels = torch.from_numpy(resized).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def bfloat16_digest(tensors: Sequence[torch.Tensor]) -> str | None:
    """A short hash of `tensors` rounded to bfloat16, so one checkpoint loaded in float32 or bfloat16
    (`--dtype`) has one digest; None for tensors on the meta device (no weights)."""
    import hashlib

    if any(t.is_meta for t in tensors):
        return None
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())
    return digest.hexdigest()[:16]


def string_content_template(tokenizer) -> str:
    """The tokenizer's chat template when it also renders a message whose content is a plain string
    (vlynx's text turns with an "<image>" placeholder), else CHATML_TEMPLATE: processor-style templates
    that render only content lists would drop the text."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template and "content is string" in template:
        return template
    return CHATML_TEMPLATE
