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


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) image as PNG via a temporary file and a rename (never a half-written file)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    return Path(path)
