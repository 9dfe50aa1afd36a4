"""Depth -> Turbo-coloured disparity frames, optionally each followed by a surface-normals image.

Recipe (docs/method.md §5): invalid depth (<= 0) counts as the far clip; depth is clipped to
[near_mm, far_mm]; disparity 1/d is normalised between 1/far (0) and 1/near (1) and
looked up in a 256-entry Turbo table (near = red, far = blue).

With `normals=True` every frame becomes two images, interleaved
[depth_0, normals_0, depth_1, normals_1, ...]; `images_per_frame` is 2 and callers average
the tokens of each pair. Normals come from the back-projected depth (intrinsics), in the
camera frame, or in the world frame with `world_normals=True` (poses); they point towards
the camera and are encoded (n * 0.5 + 0.5) * 255. Pixels without a normal (no depth at
or next to them) are encoded as the zero vector, i.e. mid-grey (128, 128, 128).

Frames are chosen by `selection` (`vlynx.media.scene.choose_frames`). When an example's
video is a 3D scene, the video takes its frames by this same setting and hands them over
(`frame_indices`), so colour and depth show the same views.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from vlynx.errors import VlynxError
from vlynx.media.depth import read_depth_png, read_intrinsics, read_matrix
from vlynx.media.scene import SELECTIONS, FrameChoice, check_frame_indices, choose_frames, read_scene
from vlynx.modalities.base import Modality, check_frame_request

# A map whose valid depths have a median below this many "millimetres" is almost surely in metres.
_METRES_SUSPECT_MM = 50


@dataclass(frozen=True)
class DepthSettings:
    near_mm: float = 200.0
    far_mm: float = 10_000.0
    normals: bool = False
    world_normals: bool = False  # rotate normals into the world frame with each frame's pose
    selection: str = "uniform"  # "uniform" or "farthest" (pose-aware farthest-point sampling)
    view_weight: float = 1.0  # metres of camera travel worth one unit of viewing-direction change

    def __post_init__(self) -> None:
        if not 0 < self.near_mm < self.far_mm:
            raise VlynxError(f"depth clip needs 0 < near_mm < far_mm, got {self.near_mm}, {self.far_mm}")
        if self.selection not in SELECTIONS:
            raise VlynxError(f"depth selection must be 'uniform' or 'farthest', got {self.selection!r}")
        if self.world_normals and not self.normals:
            raise VlynxError("world_normals=True needs normals=True")


@lru_cache(maxsize=1)
def turbo_table() -> np.ndarray:
    """The 256-entry Turbo colour table, uint8 (256, 3): index 0 dark blue ... 255 dark red."""
    document = json.loads((Path(__file__).with_name("turbo.json")).read_text(encoding="utf-8"))
    table = np.asarray(document["colors"], dtype=np.uint8)
    table.setflags(write=False)
    return table


def disparity_index(depth_mm: np.ndarray, near_mm: float, far_mm: float) -> np.ndarray:
    """Turbo table index (0 = far, 255 = near) of each depth in mm; invalid (<= 0) counts as far."""
    depth = np.where(depth_mm > 0, depth_mm.astype(np.float64), far_mm)
    depth = np.clip(depth, near_mm, far_mm)
    disparity = (1.0 / depth - 1.0 / far_mm) / (1.0 / near_mm - 1.0 / far_mm)  # far 0 .. near 1
    return np.rint(disparity * 255).astype(np.intp)


def colorize_depth(depth_mm: np.ndarray, near_mm: float = 200.0, far_mm: float = 10_000.0) -> np.ndarray:
    """uint8 (H, W, 3) Turbo image of a depth map (H, W) in millimetres."""
    return turbo_table()[disparity_index(depth_mm, near_mm, far_mm)]


def surface_normals(depth_mm: np.ndarray, intrinsics: np.ndarray, rotation: np.ndarray | None = None) -> np.ndarray:
    """Unit normals (H, W, 3) facing the camera from a depth map (H, W) in mm and K (3, 3).

    Points are back-projected (X = (u - cx) Z / fx, Y = (v - cy) Z / fy); the normal is the
    cross product of the central-difference tangents along image columns and rows.
    Pixels with no depth at or beside them get the zero vector. `rotation` (3, 3)
    (camera-to-world) expresses the normals in world coordinates.
    """
    height, width = depth_mm.shape
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    z = np.where(depth_mm > 0, depth_mm.astype(np.float64) / 1000.0, np.nan)  # metres, NaN = no depth
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)  # (H, W, 3) camera frame
    along_u = np.gradient(points, axis=1)
    along_v = np.gradient(points, axis=0)
    normals = np.cross(along_u, along_v)
    normals *= np.where(np.sum(normals * points, axis=-1, keepdims=True) > 0, -1.0, 1.0)  # face the camera
    length = np.linalg.norm(normals, axis=-1, keepdims=True)
    valid = np.isfinite(length) & (length > 0)
    normals = np.where(valid, normals / np.where(valid, length, 1.0), 0.0)
    if rotation is not None:
        normals = normals @ rotation.T
    return normals


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) image of unit normals: (n * 0.5 + 0.5) * 255."""
    return np.rint((normals * 0.5 + 0.5) * 255).astype(np.uint8)


class DepthModality(Modality):
    """Depth maps (ScanNet scene or folder of 16-bit PNGs in mm) as Turbo-coloured disparity."""

    name = "depth"
    description = "depth maps (ScanNet scene or folder of 16-bit PNG, mm) as Turbo disparity; optional normals"
    Settings = DepthSettings

    @property
    def images_per_frame(self) -> int:
        return 2 if self.settings.normals else 1

    @property
    def scene_frame_choice(self) -> FrameChoice:
        # `selection` is the one place a scene's frame choice is set: a scene read as video
        # takes its frames by it too (vlynx.modalities.base.shared_scene_choice).
        return FrameChoice(self.settings.selection, self.settings.view_weight)

    def frames(self, source: str | Path, num_frames: int, timestamps: np.ndarray | None = None,
               frame_indices: np.ndarray | None = None) -> np.ndarray:
        """uint8 (num_frames * images_per_frame, H, W, 3) of the depth maps at the chosen frames.

        Depth scans have no clock: `timestamps` is ignored. `frame_indices` are the frames the
        paired video took from the same scene (`VideoClip.frame_indices`); without them the
        frames are chosen by `selection`, the rule a scene read as video follows too.
        """
        check_frame_request(num_frames, timestamps)
        s = self.settings
        scene = read_scene(source, need="depth")
        if frame_indices is None:
            indices = choose_frames(scene, num_frames, self.scene_frame_choice)
        else:
            indices = check_frame_indices(frame_indices, num_frames, scene)
        intrinsics = None
        if s.normals:
            if scene.depth_intrinsics_path is None:
                raise VlynxError("normals need the depth intrinsics (intrinsic_depth.txt) but the scene has none",
                                 scene.root)
            intrinsics = read_intrinsics(scene.depth_intrinsics_path)
        if s.world_normals and scene.pose_paths is None:
            raise VlynxError("world normals need pose/*.txt files", scene.root)
        images = []
        shape = None
        for index in indices:
            path = scene.depth_paths[index]
            depth = self._checked_depth(path)
            if shape is None:
                shape = depth.shape
            elif depth.shape != shape:
                raise VlynxError(f"depth map is {depth.shape[1]}x{depth.shape[0]}, others in the scene are "
                                 f"{shape[1]}x{shape[0]}", path)
            images.append(colorize_depth(depth, s.near_mm, s.far_mm))
            if s.normals:
                rotation = None
                if s.world_normals:
                    pose = read_matrix(scene.pose_paths[index])  # camera-to-world
                    if not np.all(np.isfinite(pose)):
                        raise VlynxError("pose is not finite (tracking lost); cannot rotate normals to the world",
                                         scene.pose_paths[index])
                    rotation = pose[:3, :3]
                images.append(encode_normals(surface_normals(depth, intrinsics, rotation)))
        return np.stack(images)

    def _checked_depth(self, path: Path) -> np.ndarray:
        depth = read_depth_png(path)
        valid = depth[depth > 0]
        if valid.size == 0:
            raise VlynxError("depth map has no valid pixels (all zeros)", path)
        median = float(np.median(valid))
        if median < _METRES_SUSPECT_MM:
            raise VlynxError(f"depth values look like metres, not millimetres (median {median:g}); "
                             "save depth as 16-bit PNG in millimetres", path)
        return depth
