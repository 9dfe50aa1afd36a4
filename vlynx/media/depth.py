"""Depth-scene files: 16-bit PNG depth maps in millimetres and ScanNet's 4x4 text matrices.

In a ScanNet scene (found by `vlynx.media.scene.read_scene`):

    scene/depth/0.png, 1.png, ...      16-bit depth, millimetres, 0 = no measurement
    scene/pose/0.txt, 1.txt, ...       4x4 camera-to-world matrix (may hold -inf when tracking failed)
    scene/intrinsic_depth.txt          4x4 depth camera intrinsics (also found in scene/intrinsic/)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vlynx.errors import VlynxError
from vlynx.media.video import _require_file


def read_depth_png(path: str | Path) -> np.ndarray:
    """A 16-bit PNG depth map in millimetres as uint16 (H, W); 0 means no measurement.

    Refuses 8-bit, colour and floating-point images (a float map is almost always in metres).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _require_file(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            depth = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise VlynxError(f"cannot decode depth image ({error})", path) from error
    if mode == "F" or np.issubdtype(depth.dtype, np.floating):
        raise VlynxError("depth image holds floating-point values (metres?); expected a 16-bit PNG in millimetres", path)
    if mode not in ("I;16", "I;16B", "I;16L", "I") or depth.ndim != 2:
        raise VlynxError(f"depth image is mode {mode} with shape {depth.shape}; expected a single-channel "
                         "16-bit PNG in millimetres", path)
    if depth.min() < 0 or depth.max() > 65535:
        raise VlynxError("depth values outside the 16-bit range", path)
    return depth.astype(np.uint16)


def read_matrix(path: str | Path) -> np.ndarray:
    """A 4x4 matrix written as whitespace-separated text (ScanNet poses and intrinsics): float64 (4, 4)."""
    path = Path(path)
    _require_file(path)
    try:
        values = np.array(path.read_text(encoding="utf-8").split(), dtype=np.float64)
    except ValueError as error:
        raise VlynxError(f"not a text matrix ({error})", path) from error
    if values.size != 16:
        raise VlynxError(f"expected a 4x4 matrix (16 numbers), found {values.size}", path)
    return values.reshape(4, 4)


def read_intrinsics(path: str | Path) -> np.ndarray:
    """Depth camera intrinsics K (3, 3) from a ScanNet 4x4 intrinsics file."""
    matrix = read_matrix(path)
    k = matrix[:3, :3]
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise VlynxError("intrinsics need finite, positive focal lengths fx, fy", path)
    return k
