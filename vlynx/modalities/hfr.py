"""High-frame-rate video: 4x the frames, each group of 4 halved and tiled 2x2 into one frame.

Tile order (docs/method.md §5): t0 top-left, t1 top-right, t2 bottom-left, t3 bottom-right.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vlynx.errors import VlynxError
from vlynx.media.video import read_video, read_video_at, video_duration
from vlynx.modalities.base import Modality, check_frame_request


@dataclass(frozen=True)
class HighFrameRateSettings:
    factor: int = 4  # sub-frames per output frame; tiled sqrt(factor) x sqrt(factor)

    def __post_init__(self) -> None:
        side = int(round(self.factor ** 0.5))
        if self.factor < 1 or side * side != self.factor:
            raise VlynxError(f"hfr factor must be a square number (1, 4, 9, ...), got {self.factor}")


def tile_groups(frames: np.ndarray, factor: int = 4) -> np.ndarray:
    """uint8 (G * factor, H, W, 3) -> (G, side * (H // side), side * (W // side), 3), side = sqrt(factor).

    Each sub-frame is downscaled by 1/side (PIL's antialiased bilinear) and placed row by row:
    sub-frame k of a group goes to tile row k // side, column k % side.
    """
    side = int(round(factor ** 0.5))
    count, height, width = frames.shape[:3]
    if count % factor:
        raise ValueError(f"{count} frames do not split into groups of {factor}")
    tile_h, tile_w = height // side, width // side
    if tile_h < 1 or tile_w < 1:
        raise VlynxError(f"frames of {width}x{height} are too small to tile {side}x{side}")
    small = np.stack([np.asarray(Image.fromarray(f).resize((tile_w, tile_h), Image.BILINEAR)) for f in frames])
    groups = small.reshape(count // factor, side, side, tile_h, tile_w, 3)  # (G, tile row, tile col, h, w, 3)
    return groups.transpose(0, 1, 3, 2, 4, 5).reshape(count // factor, side * tile_h, side * tile_w, 3)


class HighFrameRateModality(Modality):
    """Fast motion: 4 consecutive frames per output frame, tiled 2x2 at half size."""

    name = "hfr"
    description = "high-frame-rate video: 4x the frames, each group of 4 halved and tiled 2x2 (t0 TL ... t3 BR)"
    Settings = HighFrameRateSettings

    def frames(self, source: str | Path, num_frames: int, timestamps: np.ndarray | None = None) -> np.ndarray:
        """uint8 (num_frames, H', W', 3), H' = 2 * (H // 2), W' = 2 * (W // 2) for the default factor 4.

        Without timestamps the video is sampled uniformly at factor * num_frames points, so
        group i is centred on (i + 0.5) * T / num_frames, the time of uniform frame i. With
        timestamps, group i takes the frames nearest t_i + (k - (factor - 1) / 2) * T / (factor * num_frames).
        """
        timestamps = check_frame_request(num_frames, timestamps)
        factor = self.settings.factor
        if timestamps is None:
            sub_frames = read_video(source, factor * num_frames).frames
        else:
            step = video_duration(source) / (factor * num_frames)
            offsets = (np.arange(factor) - (factor - 1) / 2) * step
            sub_frames = read_video_at(source, (timestamps[:, None] + offsets[None, :]).reshape(-1)).frames
        return tile_groups(sub_frames, factor)
