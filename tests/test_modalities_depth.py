"""Depth -> Turbo disparity frames, normals, frame choice, and bad depth inputs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vlynx.errors import VlynxError
from vlynx.modalities import get_modality
from vlynx.media.scene import farthest_point_frames
from vlynx.modalities.depth import turbo_table

FX = FY = 50.0
CX, CY = 15.5, 11.5  # 32 x 24 maps


def save_depth(path, depth_mm):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(depth_mm, dtype=np.uint16)).save(path)


def write_matrix(path, matrix):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(f"{v:.9g}" for v in row) for row in np.asarray(matrix)) + "\n")


def scannet_scene(root, depths_mm, poses=None):
    """ScanNet layout: depth/i.png, pose/i.txt, intrinsic/intrinsic_depth.txt."""
    for i, depth in enumerate(depths_mm):
        save_depth(root / "depth" / f"{i}.png", depth)
        if poses is not None:
            write_matrix(root / "pose" / f"{i}.txt", poses[i])
    write_matrix(root / "intrinsic" / "intrinsic_depth.txt",
                 [[FX, 0, CX, 0], [0, FY, CY, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    return root


def test_turbo_endpoints():
    table = turbo_table()
    assert table.shape == (256, 3) and table.dtype == np.uint8
    # Published Turbo endpoints: (0.18995, 0.07176, 0.23217) and (0.47960, 0.01583, 0.01055), x 255.
    assert tuple(table[0]) == (48, 18, 59) and tuple(table[255]) == (122, 4, 3)
    assert len({tuple(c) for c in table}) == 256  # every entry distinct, so colours invert to indices


def colour_index(image):
    """Invert the colour table: the Turbo index of every pixel (exact match required)."""
    lookup = {tuple(c): i for i, c in enumerate(turbo_table())}
    return np.array([lookup[tuple(p)] for p in image.reshape(-1, 3)]).reshape(image.shape[:2])


def test_near_red_far_blue_and_monotone_disparity(tmp_path):
    depths = np.array([0, 50, 200, 400, 800, 1600, 3200, 6400, 10_000, 30_000], dtype=np.uint16)
    save_depth(tmp_path / "maps" / "0.png", np.tile(depths, (4, 1)))
    image = get_modality("depth").frames(tmp_path / "maps", 1)[0]
    index = colour_index(image)[0]
    near, far = image[0, 2], image[0, 8]
    assert near[0] > near[2] and far[2] > far[0]  # near red, far blue
    assert index[1] == index[2] == 255  # closer than the 200 mm clip = near
    assert index[0] == index[8] == index[9] == 0  # invalid (0) and beyond 10 m = far
    assert np.all(np.diff(index[2:9]) < 0)  # strictly farther -> strictly lower index
    # Hand value: 400 mm -> (1/400 - 1/10000) / (1/200 - 1/10000) = 0.4898 -> 0.4898 * 255 = 124.9
    assert index[3] == 125


def test_uniform_frame_choice_scannet_layout(tmp_path):
    depths = [np.full((24, 32), 500 + 500 * i) for i in range(6)]
    scene = scannet_scene(tmp_path / "scene0000_00", depths)
    frames = get_modality("depth").frames(scene, 3)
    assert frames.shape == (3, 24, 32, 3)
    # Uniform: frame nearest (i + 0.5) * 6 / 3 -> maps 1, 3, 5 (1000, 2000, 3000 mm).
    expected = [round((1 / d - 1 / 10_000) / (1 / 200 - 1 / 10_000) * 255) for d in (1000, 2000, 3000)]
    assert [int(colour_index(f)[0, 0]) for f in frames] == expected


def plane_depth(normal, offset_m):
    """Depth (mm) of the plane n . P = offset seen through the pinhole camera (FX, FY, CX, CY)."""
    v, u = np.mgrid[0:24, 0:32].astype(np.float64)
    rays = np.stack([(u - CX) / FX, (v - CY) / FY, np.ones_like(u)], axis=-1)
    return offset_m / (rays @ normal) * 1000.0


def test_normals_of_planes_and_interleaving(tmp_path):
    tilted = np.array([0.6, 0.0, -0.8])  # unit, faces the camera (negative z)
    depths = [np.full((24, 32), 2000), np.rint(plane_depth(tilted, -2.0))]
    scene = scannet_scene(tmp_path / "scene", depths)
    modality = get_modality("depth", normals=True)
    assert modality.images_per_frame == 2
    frames = modality.frames(scene, 2)
    assert frames.shape == (4, 24, 32, 3)
    # Order: depth_0, normals_0, depth_1, normals_1.
    np.testing.assert_array_equal(frames[0], get_modality("depth").frames(scene, 2)[0])
    np.testing.assert_array_equal(frames[2], get_modality("depth").frames(scene, 2)[1])
    # Fronto-parallel plane: n = (0, 0, -1) -> (0.5, 0.5, 0) * 255.
    assert np.all(frames[1][1:-1, 1:-1] == (128, 128, 0))
    expected = np.rint((tilted * 0.5 + 0.5) * 255)
    assert np.abs(frames[3][2:-2, 2:-2].astype(int) - expected).max() <= 3  # mm rounding of the depth


def test_world_normals_use_pose(tmp_path):
    rotation = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float)  # 90 deg about x
    pose = np.eye(4)
    pose[:3, :3] = rotation
    scene = scannet_scene(tmp_path / "scene", [np.full((24, 32), 1500)], poses=[pose])
    frames = get_modality("depth", normals=True, world_normals=True).frames(scene, 1)
    # Camera normal (0, 0, -1) rotated: R @ n = (0, 1, 0) -> (128, 255, 128).
    assert np.all(frames[1][1:-1, 1:-1] == (128, 255, 128))


def test_farthest_point_frame_choice(tmp_path):
    positions = [0, 0, 0, 0, 5, 5, 5, 10]
    poses = np.stack([np.eye(4)] * 8)
    poses[:, 0, 3] = positions
    # From frame 0: farthest is frame 7 (10 m), then the first at 5 m (frame 4).
    assert list(farthest_point_frames(poses, 3)) == [0, 4, 7]
    poses[7] = -np.inf  # lost tracking: never chosen
    assert list(farthest_point_frames(poses, 2)) == [0, 4]
    depths = [np.full((24, 32), 1000 + 100 * i) for i in range(8)]
    poses[7] = np.eye(4)
    poses[7, 0, 3] = 10
    scene = scannet_scene(tmp_path / "scene", depths, poses=poses)
    frames = get_modality("depth", selection="farthest").frames(scene, 3)
    expected = [round((1 / d - 1 / 10_000) / (1 / 200 - 1 / 10_000) * 255) for d in (1000, 1400, 1700)]
    assert [int(colour_index(f)[0, 0]) for f in frames] == expected


def test_bad_depth_inputs(tmp_path):
    modality = get_modality("depth")
    with pytest.raises(VlynxError, match="nowhere: depth input not found"):
        modality.frames(tmp_path / "nowhere", 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VlynxError, match="empty: no .png depth maps"):
        modality.frames(tmp_path / "empty", 1)
    save_depth(tmp_path / "zeros" / "0.png", np.zeros((8, 8)))
    with pytest.raises(VlynxError, match=r"0.png: depth map has no valid pixels \(all zeros\)"):
        modality.frames(tmp_path / "zeros", 1)
    save_depth(tmp_path / "metres" / "0.png", np.full((8, 8), 3))
    with pytest.raises(VlynxError, match="0.png: depth values look like metres"):
        modality.frames(tmp_path / "metres", 1)
    (tmp_path / "eight_bit").mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "eight_bit" / "0.png")
    with pytest.raises(VlynxError, match="0.png: depth image is mode L"):
        modality.frames(tmp_path / "eight_bit", 1)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "0.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(VlynxError, match="0.png: cannot decode depth image"):
        modality.frames(tmp_path / "corrupt", 1)
    save_depth(tmp_path / "shapes" / "0.png", np.full((8, 8), 1000))
    save_depth(tmp_path / "shapes" / "1.png", np.full((8, 6), 1000))
    with pytest.raises(VlynxError, match="1.png: depth map is 6x8, others in the scene are 8x8"):
        modality.frames(tmp_path / "shapes", 2)
    with pytest.raises(VlynxError, match="shapes: normals need the depth intrinsics"):
        get_modality("depth", normals=True).frames(tmp_path / "shapes", 1)
    with pytest.raises(VlynxError, match="shapes: pose-aware frame choice"):
        get_modality("depth", selection="farthest").frames(tmp_path / "shapes", 1)


def test_float_depth_is_refused(tmp_path):
    from vlynx.media.depth import read_depth_png

    path = tmp_path / "metres.tiff"
    Image.fromarray(np.full((8, 8), 1.5, np.float32)).save(path)
    with pytest.raises(VlynxError, match="metres.tiff: depth image holds floating-point values"):
        read_depth_png(path)
