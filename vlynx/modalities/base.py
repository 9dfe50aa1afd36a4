"""The `Modality` interface: a transform that turns raw input into pseudo-video frames."""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vlynx.errors import VlynxError


class Modality(ABC):
    """Turns one input (file or folder) into RGB frames for the frozen vision encoder.

    Subclasses set `name` and `description` and implement `frames`. Built-in modalities
    keep their parameters in a frozen dataclass `Settings`; `Modality(**overrides)`
    replaces its defaults (unknown keys are a `VlynxError`).

    `images_per_frame` says how many consecutive images `frames` returns per requested
    frame (depth with normals returns 2: [depth_0, normals_0, depth_1, normals_1, ...]);
    callers average the tokens of each group of that many images.

    Frames show the input. Where a modality must draw something the input does not
    hold (an audio window reaching past the end of the recording is drawn as silence),
    `padding` says how much and `padding_note` says what it is; `vlynx preview` prints
    both.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Settings: ClassVar[type | None] = None
    padding_note: ClassVar[str] = "filled in, not taken from the input"

    def __init__(self, **settings: Any) -> None:
        if self.Settings is None:
            if settings:
                raise VlynxError(f"modality '{self.name}' takes no settings (got {', '.join(sorted(settings))})")
            self.settings = None
            return
        known = {field.name for field in dataclasses.fields(self.Settings)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise VlynxError(
                f"unknown setting(s) {', '.join(unknown)} for modality '{self.name}' (known: {', '.join(sorted(known))})"
            )
        self.settings = self.Settings(**settings)

    @property
    def images_per_frame(self) -> int:
        return 1

    @abstractmethod
    def frames(self, source: str | Path, num_frames: int, timestamps: np.ndarray | None = None) -> np.ndarray:
        """`num_frames` frames of `source` as uint8 RGB (num_frames * images_per_frame, H, W, 3).

        `timestamps` (seconds, e.g. `VideoClip.timestamps` of the paired video) asks for
        frames aligned in time with those video frames; modalities without a clock ignore it.
        """

    def padding(self, source: str | Path, num_frames: int, timestamps: np.ndarray | None = None) -> np.ndarray:
        """The share of each requested frame that `frames` fills in rather than takes from `source`.

        Returns float64 (num_frames,) in [0, 1], for the same arguments as `frames`. The
        default is all zeros, for modalities that never fill anything in.
        """
        check_frame_request(num_frames, timestamps)
        return np.zeros(int(num_frames))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})" if self.settings is not None else type(self).__name__


def check_frame_request(num_frames: int, timestamps: np.ndarray | None) -> np.ndarray | None:
    """Validate the common `frames` arguments; returns timestamps as float64 (num_frames,) or None."""
    if int(num_frames) != num_frames or num_frames < 1:
        raise VlynxError(f"num_frames must be a positive integer, got {num_frames!r}")
    if timestamps is None:
        return None
    timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if timestamps.shape != (num_frames,):
        raise VlynxError(f"got {timestamps.size} timestamps for {num_frames} frames")
    if not np.all(np.isfinite(timestamps)):
        raise VlynxError("timestamps must be finite numbers of seconds")
    return timestamps
