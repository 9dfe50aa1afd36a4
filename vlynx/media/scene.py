"""A 3D scene folder as frames: colour, depth and pose files matched by frame, and one frame choice.

Two released layouts share one structure:

    ScanNet SensReader export                32-frame scenes of ScanQA / SQA3D (PAVE, LynX)
    scene0000_00/color/0.jpg, 1.jpg, ...     frames_square/scene0000_00/color/<id>.jpg
                 depth/0.png, 1.png, ...                                depth/<id>.png
                 pose/0.txt, 1.txt, ...                                 pose/<id>.txt
                 intrinsic/intrinsic_depth.txt                          intrinsic_depth.txt (where shipped)

A frame's id is its file stem; the scene's frames are its ids in numeric order, and frame i
is the colour image, depth map and pose that share the i-th id: the same view, even where
colour and depth differ in resolution (ScanNet: colour 1296x968, depth 640x480). Ids need
not be consecutive (subsampled scenes keep their original frame numbers). Colour and depth
must hold the same ids: a frame missing from one of them is an error, never skipped.
A plain folder of 16-bit PNG depth maps is a scene without colour or poses.

A scene read as video (`vlynx.media.video.read_video`) and its depth stream
(`vlynx.modalities.depth`) take the same frames: `choose_frames` picks positions once
(uniform, or pose-aware), the video reader returns them as `VideoClip.frame_indices`, and
the depth modality reads its maps at exactly those positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from vlynx.errors import VlynxError
from vlynx.media.depth import read_matrix
from vlynx.media.video import VideoClip, _require_file

SELECTIONS = ("uniform", "farthest")
_COLOR_SUFFIXES = {".jpg", ".jpeg", ".png"}
_INTRINSICS_NAMES = ("intrinsic_depth.txt", "intrinsic/intrinsic_depth.txt")
_LAYOUT = "expected color/*.jpg with depth/*.png and pose/*.txt beside it (ScanNet layout)"


@dataclass(frozen=True)
class Scene:
    """The frame files of one scene folder, all in frame order and matched by frame id."""

    root: Path
    frame_ids: tuple[str, ...]  # file stems, numeric order
    color_paths: tuple[Path, ...] | None  # None: the scene has no color/ folder
    depth_paths: tuple[Path, ...] | None  # None: the scene has no depth maps
    pose_paths: tuple[Path, ...] | None  # 4x4 camera-to-world; None: the scene has no pose/ folder
    depth_intrinsics_path: Path | None

    def __len__(self) -> int:
        return len(self.frame_ids)


@dataclass(frozen=True)
class FrameChoice:
    """How F frames of a scene are chosen: `selection` "uniform" (frame ⌊(i + 0.5)·N/F⌋) or "farthest"
    (pose-aware farthest-point sampling, `view_weight` metres of travel per unit of viewing-direction change)."""

    selection: str = "uniform"
    view_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise VlynxError(f"scene frame selection must be 'uniform' or 'farthest', got {self.selection!r}")


def is_scene_folder(path: str | Path) -> bool:
    """True for a folder that holds a scene's colour frames (`color/`), i.e. one readable as video."""
    return (Path(path) / "color").is_dir()


def read_scene(path: str | Path, need: Literal["color", "depth"]) -> Scene:
    """The frames of a scene folder; `need` is the stream the caller reads (a plain folder of
    PNG depth maps serves "depth" only).

    Raises `VlynxError` naming the folder when it is missing, lacks the needed stream, or when
    colour, depth and pose files do not match frame for frame.
    """
    root = Path(path)
    if not root.exists():
        raise VlynxError("video not found" if need == "color" else "depth input not found", root)
    if not root.is_dir():
        raise VlynxError("video must be a file or a 3D scene folder" if need == "color" else
                         "depth input must be a ScanNet scene folder or a folder of 16-bit PNG depth maps", root)
    color = _frames_by_id(root / "color", _COLOR_SUFFIXES) if is_scene_folder(root) else None
    if (root / "depth").is_dir():
        depth_dir = root / "depth"
    else:
        depth_dir = root if color is None else None  # a plain folder of depth maps, or colour alone
    depth = _frames_by_id(depth_dir, {".png"}) if depth_dir is not None else None
    if need == "color" and color is None:
        raise VlynxError(f"is a folder but not a video or a 3D scene ({_LAYOUT})", root)
    if need == "color" and not color:
        raise VlynxError("no colour frames (.jpg) found", root / "color")
    if need == "depth" and not depth:
        raise VlynxError("no .png depth maps found (expected depth/*.png or *.png)", depth_dir or root)
    if color and depth is not None:
        _require_same_frames(color, depth, root)
    ids = list(color or depth)
    poses = None
    if (root / "pose").is_dir():
        poses = tuple(root / "pose" / f"{frame}.txt" for frame in ids)
        missing = [p for p in poses if not p.is_file()]
        if missing:
            raise VlynxError(f"{len(missing)} frame(s) have no pose file, e.g. {missing[0].name}", root / "pose")
    intrinsics = next((root / name for name in _INTRINSICS_NAMES if (root / name).is_file()), None)
    return Scene(root, tuple(ids), tuple(color.values()) if color else None,
                 tuple(depth[frame] for frame in ids) if depth else None, poses, intrinsics)


def _frame_order(path: Path) -> tuple[int, int | str]:
    # ScanNet names frames 0.jpg, 1.jpg, ..., 10.jpg: sort numerically where the stem is a number.
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def _frames_by_id(folder: Path, suffixes: set[str]) -> dict[str, Path]:
    """{frame id: file} of the images in `folder`, in frame order; two files with one id are an error."""
    frames: dict[str, Path] = {}
    for path in sorted((p for p in folder.iterdir() if p.suffix.lower() in suffixes), key=_frame_order):
        if path.stem in frames:
            raise VlynxError(f"two files for frame {path.stem}: {frames[path.stem].name} and {path.name}", folder)
        frames[path.stem] = path
    return frames


def _require_same_frames(color: dict[str, Path], depth: dict[str, Path], root: Path) -> None:
    for have, lack, lacking in ((color, depth, "depth"), (depth, color, "color")):
        extra = [frame for frame in have if frame not in lack]
        if extra:
            raise VlynxError(f"colour and depth frames do not match: {len(extra)} frame(s) have no {lacking} file, "
                             f"e.g. {have[extra[0]].name}", root)


def choose_frames(scene: Scene, num_frames: int, choice: FrameChoice) -> np.ndarray:
    """Positions (num_frames,) of the chosen frames in `scene`'s frame list, in frame order.

    "uniform": frame ⌊(i + 0.5)·N/F⌋, the same rule as video sampling. "farthest":
    `farthest_point_frames` on the poses; when fewer frames than F have a finite pose they
    are repeated uniformly, as uniform sampling repeats frames of a short scene.
    """
    if choice.selection == "uniform":
        return np.floor((np.arange(num_frames) + 0.5) * len(scene) / num_frames).astype(np.intp)
    if scene.pose_paths is None:
        raise VlynxError("pose-aware frame choice needs pose/*.txt files", scene.root)
    poses = np.stack([read_matrix(p) for p in scene.pose_paths])  # (N, 4, 4) camera-to-world
    chosen = farthest_point_frames(poses, num_frames, choice.view_weight)
    if len(chosen) == 0:
        raise VlynxError("no frame has a finite pose", scene.root / "pose")
    return chosen[np.floor((np.arange(num_frames) + 0.5) * len(chosen) / num_frames).astype(np.intp)]


def farthest_point_frames(poses: np.ndarray, count: int, view_weight: float = 1.0) -> np.ndarray:
    """`count` frame indices spread over camera position and viewing direction, in time order.

    poses (N, 4, 4) camera-to-world; frames with non-finite poses are never chosen. Greedy
    farthest-point sampling in (position, view_weight * viewing direction) space, starting
    from the first valid frame; ties go to the earlier frame.
    """
    valid = np.flatnonzero(np.all(np.isfinite(poses.reshape(len(poses), -1)), axis=1))
    if len(valid) <= count:
        return valid
    features = np.concatenate([poses[valid, :3, 3], view_weight * poses[valid, :3, 2]], axis=1)  # (V, 6)
    chosen = [0]
    distance = np.linalg.norm(features - features[0], axis=1)
    for _ in range(count - 1):
        pick = int(np.argmax(distance))
        chosen.append(pick)
        distance = np.minimum(distance, np.linalg.norm(features - features[pick], axis=1))
    return np.sort(valid[chosen])


def check_frame_indices(frame_indices: np.ndarray, num_frames: int, scene: Scene) -> np.ndarray:
    """`frame_indices` as intp (num_frames,) when every one is a position in `scene`; else a `VlynxError`."""
    indices = np.asarray(frame_indices).reshape(-1)
    if indices.shape != (num_frames,) or not np.issubdtype(indices.dtype, np.integer):
        raise VlynxError(f"got frame indices {indices.tolist()} for {num_frames} frames")
    if indices.min() < 0 or indices.max() >= len(scene):
        raise VlynxError(f"frame index {int(indices.max())} is outside the scene's {len(scene)} frames "
                         "(is this the scene the video's frames were chosen from?)", scene.root)
    return indices.astype(np.intp)


def read_scene_video(path: str | Path, num_frames: int, choice: FrameChoice | None = None) -> VideoClip:
    """The colour frames of a scene folder as a clip: F frames chosen once by `choice` (default uniform).

    The clip has no clock (`timestamps` and `duration` are None); `frame_indices` says which
    of the scene's frames were taken, for the scene's other streams to take the same ones.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    scene = read_scene(path, need="color")
    indices = choose_frames(scene, num_frames, choice or FrameChoice())
    frames = [read_color_frame(scene.color_paths[i]) for i in indices]
    for index, frame in zip(indices, frames):
        if frame.shape != frames[0].shape:
            raise VlynxError(f"colour frame is {frame.shape[1]}x{frame.shape[0]}, others in the scene are "
                             f"{frames[0].shape[1]}x{frames[0].shape[0]}", scene.color_paths[index])
    return VideoClip(np.stack(frames), None, None, frame_indices=indices)


def read_color_frame(path: Path) -> np.ndarray:
    """One colour image (JPG or PNG) as uint8 RGB (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    _require_file(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise VlynxError(f"cannot decode colour frame ({error})", path) from error
