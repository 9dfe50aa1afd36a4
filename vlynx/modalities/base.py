"""The `Modality` interface: a transform that turns raw input into pseudo-video frames."""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from vlynx.errors import VlynxError

if TYPE_CHECKING:
    from vlynx.media.scene import FrameChoice
    from vlynx.media.video import VideoClip


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

    @property
    def scene_frame_choice(self) -> FrameChoice | None:
        """How this modality chooses the frames of a 3D scene folder; None for modalities that read no scenes.

        When an example's video is a 3D scene (`vlynx.media.scene`), this choice picks the
        video's frames, and `frames` is then called with `frame_indices=` (positions in the
        scene's frame list) instead of `timestamps`, so that both streams show the same
        views. A modality that returns a choice must take that keyword.
        """
        return None

    @abstractmethod
    def frames(self, source: str | Path, num_frames: int, timestamps: np.ndarray | None = None) -> np.ndarray:
        """`num_frames` frames of `source` as uint8 RGB (num_frames * images_per_frame, H, W, 3).

        `timestamps` (seconds, e.g. `VideoClip.timestamps` of the paired video) asks for
        frames aligned in time with those video frames; modalities without a clock ignore it.
        It is None when there is no paired video or the video is a 3D scene (no clock).
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


def shared_scene_choice(transforms: Iterable[Any]) -> FrameChoice | None:
    """The frame choice for a 3D scene read as video beside `transforms`: that of the ones reading scenes.

    None (uniform) when none reads scenes; a `VlynxError` when they disagree, since one
    choice serves every stream. Transforms that are not `Modality` subclasses read no scenes.
    """
    choices = {getattr(t, "scene_frame_choice", None) for t in transforms} - {None}
    if len(choices) > 1:
        raise VlynxError(f"modalities choose scene frames differently ({', '.join(sorted(map(repr, choices)))}); "
                         "give them the same selection")
    return next(iter(choices), None)


def paired_frames(transform: Any, source: str | Path, num_frames: int, clip: VideoClip) -> np.ndarray:
    """`transform`'s frames of `source` to go with the video `clip`: the very frames the clip took
    when the video is a 3D scene and the transform reads scenes, else frames at the clip's times."""
    if clip.frame_indices is not None and getattr(transform, "scene_frame_choice", None) is not None:
        return transform.frames(source, num_frames, frame_indices=clip.frame_indices)
    return transform.frames(source, num_frames, timestamps=clip.timestamps)


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
