"""Egocentric video or any extra camera view: the frames as they are; the view is the new modality."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vlynx.media.video import read_video, read_video_at
from vlynx.modalities.base import Modality, check_frame_request


class EgocentricModality(Modality):
    """A second view (egocentric, another camera): frames used as they are, with their own vision adapter."""

    name = "egocentric"
    description = "egocentric / extra-view video: frames as they are (its own adapter makes it a modality)"

    def frames(self, source: str | Path, num_frames: int, timestamps: np.ndarray | None = None) -> np.ndarray:
        """uint8 (num_frames, H, W, 3): uniform frames, or the frames nearest `timestamps` (synchronised views)."""
        timestamps = check_frame_request(num_frames, timestamps)
        if timestamps is None:
            return read_video(source, num_frames).frames
        return read_video_at(source, timestamps).frames
