"""Still images: contact sheets of frames and atomic PNG writing."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vlynx.files import atomic_path


def contact_sheet(frames: np.ndarray, columns: int | None = None, gap: int = 2, background: int = 255) -> np.ndarray:
    """Tile uint8 frames (F, H, W, 3) row by row into one uint8 image, `gap` pixels apart.

    Frame i sits at row i // columns, column i % columns; columns defaults to ceil(sqrt(F)).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames (F, H, W, 3) with F >= 1, got {frames.dtype} {frames.shape}")
    count, height, width = frames.shape[:3]
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    sheet = np.full((rows * height + (rows + 1) * gap, columns * width + (columns + 1) * gap, 3), background, np.uint8)
    for index, frame in enumerate(frames):
        top = gap + (index // columns) * (height + gap)
        left = gap + (index % columns) * (width + gap)
        sheet[top:top + height, left:left + width] = frame
    return sheet


def with_caption(image: np.ndarray, text: str, background: int = 255) -> np.ndarray:
    """`image` (H, W, 3) uint8 with `text` written in a strip below it (wrapped to the image's width)."""
    import textwrap

    from PIL import Image, ImageDraw

    line_height, char_width = 12, 6  # PIL's built-in bitmap font
    lines = textwrap.wrap(text, width=max(8, (image.shape[1] - 8) // char_width))
    strip = Image.new("RGB", (image.shape[1], 6 + line_height * len(lines)), (background,) * 3)
    draw = ImageDraw.Draw(strip)
    for number, line in enumerate(lines):
        draw.text((4, 3 + line_height * number), line, fill=(200, 0, 0))
    return np.concatenate([image, np.asarray(strip, dtype=np.uint8)], axis=0)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) image as PNG via a temporary file and a rename (never a half-written file)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    return Path(path)
