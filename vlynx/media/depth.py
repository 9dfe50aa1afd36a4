"""Depth maps: 16-bit PNGs in millimetres, alone in a folder or in a ScanNet scene folder.

ScanNet layout (as exported by its SensReader):

    scene/depth/0.png, 1.png, ...      16-bit depth, millimetres, 0 = no measurement
    scene/pose/0.txt, 1.txt, ...       4x4 camera-to-world matrix (may hold -inf when tracking failed)
    scene/intrinsic_depth.txt          4x4 depth camera intrinsics (also found in scene/intrinsic/)
    scene/color/0.jpg, ...             not used here

A plain folder of PNG depth maps works too (intrinsics optional, no poses).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlynx.errors import VlynxError
from vlynx.media.video import _require_file

_INTRINSICS_NAMES = ("intrinsic_depth.txt", "intrinsic/intrinsic_depth.txt")


@dataclass(frozen=True)
class DepthScene:
    root: Path
    depth_paths: list[Path]  # in frame order
    pose_paths: list[Path] | None  # one per depth map, or None when the scene has no poses
    intrinsics_path: Path | None

    def __len__(self) -> int:
        return len(self.depth_paths)


def _frame_order(path: Path) -> tuple[int, int | str]:
    # ScanNet names frames 0.png, 1.png, ..., 10.png: sort numerically where the stem is a number.
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def read_depth_scene(path: str | Path) -> DepthScene:
    """Find the depth maps, poses and intrinsics of a ScanNet scene folder or a folder of depth PNGs."""
    root = Path(path)
    if not root.exists():
        raise VlynxError("depth input not found", root)
    if not root.is_dir():
        raise VlynxError("depth input must be a ScanNet scene folder or a folder of 16-bit PNG depth maps", root)
    depth_dir = root / "depth" if (root / "depth").is_dir() else root
    depth_paths = sorted((p for p in depth_dir.iterdir() if p.suffix.lower() == ".png"), key=_frame_order)
    if not depth_paths:
        raise VlynxError("no .png depth maps found (expected depth/*.png or *.png)", depth_dir)
    pose_paths = None
    if (root / "pose").is_dir():
        pose_paths = [root / "pose" / f"{p.stem}.txt" for p in depth_paths]
        missing = [p for p in pose_paths if not p.is_file()]
        if missing:
            raise VlynxError(f"{len(missing)} depth map(s) have no pose file, e.g. {missing[0].name}", root / "pose")
    intrinsics_path = next((root / name for name in _INTRINSICS_NAMES if (root / name).is_file()), None)
    return DepthScene(root, depth_paths, pose_paths, intrinsics_path)


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
