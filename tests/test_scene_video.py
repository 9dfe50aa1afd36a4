"""3D scene folders as video: one frame choice shared by the colour (video) and depth streams."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlynx import cli
from vlynx.conversation import read_streams
from vlynx.errors import VlynxError
from vlynx.media import FrameChoice, read_video, write_video
from vlynx.modalities import get_modality
from vlynx.reference.sources import video_sources

# Frame i of a test scene: colour PALETTE[i] (solid), depth DEPTHS_MM[i] everywhere.
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                    [255, 0, 255], [0, 255, 255], [128, 128, 128], [255, 255, 255]], dtype=np.uint8)
DEPTHS_MM = 300 + 200 * np.arange(8)
COLOR_SIZE, DEPTH_SIZE = (24, 32), (12, 16)  # (H, W): colour and depth differ in resolution, as in ScanNet
# Camera x positions (metres) of frames 0..7, looking along +z: used by the pose-aware choice.
X_POSITIONS = [0, 0, 0, 0, 5, 5, 5, 10]


def write_matrix(path, matrix):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(f"{v:.9g}" for v in row) for row in np.asarray(matrix)) + "\n")


def write_scene(root, layout="scannet", count=8):
    """A scene in a released layout: 'scannet' (SensReader export: ids 0..N-1, intrinsics in intrinsic/)
    or 'frames_square' (the 32-frame ScanQA/SQA3D scenes: original ids 0, 20, 40, ..., intrinsics beside)."""
    ids = range(count) if layout == "scannet" else range(0, 20 * count, 20)
    for i, frame in enumerate(ids):
        (root / "color").mkdir(parents=True, exist_ok=True)
        (root / "depth").mkdir(parents=True, exist_ok=True)
        colour = np.broadcast_to(PALETTE[i], (*COLOR_SIZE, 3)).copy()
        Image.fromarray(colour).save(root / "color" / f"{frame}.jpg", quality=95)
        Image.fromarray(np.full(DEPTH_SIZE, DEPTHS_MM[i], dtype=np.uint16)).save(root / "depth" / f"{frame}.png")
        pose = np.eye(4)
        pose[0, 3] = X_POSITIONS[i]
        write_matrix(root / "pose" / f"{frame}.txt", pose)
    intrinsics = [[20, 0, 7.5, 0], [0, 20, 5.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    write_matrix(root / ("intrinsic/intrinsic_depth.txt" if layout == "scannet" else "intrinsic_depth.txt"),
                 intrinsics)
    if layout == "scannet":
        write_matrix(root / "intrinsic" / "intrinsic_color.txt", intrinsics)
    return root


def colour_frames(frames):
    """Which test frame each colour image shows: the palette entry nearest its mean colour."""
    means = np.asarray(frames, dtype=float).mean(axis=(1, 2))  # (F, 3)
    distances = np.linalg.norm(means[:, None, :] - PALETTE[None, :, :], axis=-1)
    assert distances.min(axis=1).max() < 8  # JPEG keeps a solid colour within a few levels
    return distances.argmin(axis=1).tolist()


def turbo_of(depth_mm, near=200.0, far=10_000.0):
    """The Turbo colour of a depth, straight from docs/method.md §5 (not from the modality's code)."""
    from vlynx.modalities.depth import turbo_table

    return turbo_table()[int(np.rint((1 / depth_mm - 1 / far) / (1 / near - 1 / far) * 255))]


def depth_frames(images):
    """Which test frame each Turbo depth image shows (its colour is that of exactly one DEPTHS_MM)."""
    expected = [tuple(turbo_of(d)) for d in DEPTHS_MM]
    assert len(set(expected)) == len(expected)
    return [expected.index(tuple(image[0, 0])) for image in images]


@pytest.mark.parametrize("layout", ["scannet", "frames_square"])
def test_uniform_choice_reads_the_colour_files(tmp_path, layout):
    scene = write_scene(tmp_path / "scene0000_00", layout)
    clip = read_video(scene, 3)
    # Uniform: frame ⌊(i + 0.5)·8/3⌋ = ⌊1.33⌋, ⌊4⌋, ⌊6.67⌋.
    assert clip.frame_indices.tolist() == [1, 4, 6]
    assert colour_frames(clip.frames) == [1, 4, 6]
    assert clip.frames.shape == (3, *COLOR_SIZE, 3) and clip.frames.dtype == np.uint8
    assert clip.timestamps is None and clip.duration is None  # scene frames have no clock
    # All 8 in frame order: ids sort as numbers (frames_square: 0, 20, ..., 100, 120, 140, not "100" < "20").
    assert colour_frames(read_video(scene, 8).frames) == list(range(8))


def test_pose_aware_choice(tmp_path):
    scene = write_scene(tmp_path / "scene", "frames_square")
    clip = read_video(scene, 3, scene_choice=FrameChoice("farthest"))
    # From frame 0 (x = 0): farthest is frame 7 (x = 10), then the first frame at x = 5 (frame 4).
    assert clip.frame_indices.tolist() == [0, 4, 7]
    assert colour_frames(clip.frames) == [0, 4, 7]


@pytest.mark.parametrize("selection, expected", [("uniform", [1, 4, 6]), ("farthest", [0, 4, 7])])
def test_read_streams_gives_video_and_depth_the_same_frames(tmp_path, tiny_backbone, selection, expected):
    from vlynx.modalities.depth import DepthModality

    class RecordingDepth(DepthModality):
        def frames(self, source, num_frames, **given):
            self.given = given
            return super().frames(source, num_frames, **given)

    scene = write_scene(tmp_path / "scene0000_00")
    depth = RecordingDepth(selection=selection)  # its selection governs the video's frames too
    streams = read_streams(tiny_backbone, scene, {"depth": scene}, {"depth": depth}, num_frames=3)
    assert list(depth.given) == ["frame_indices"] and depth.given["frame_indices"].tolist() == expected

    colour = [np.asarray(Image.open(scene / "color" / f"{i}.jpg").convert("RGB")) for i in expected]
    assert torch.equal(streams["video"], tiny_backbone.preprocess_frames(np.stack(colour)))
    turbo = [np.broadcast_to(turbo_of(DEPTHS_MM[i]), (*DEPTH_SIZE, 3)) for i in expected]
    assert torch.equal(streams["depth"], tiny_backbone.preprocess_frames(np.stack(turbo).copy()))


def test_prepared_scanqa_entry_reads_as_an_example(tmp_path, tiny_backbone):
    from vlynx.conversation import load_examples

    scene = write_scene(tmp_path / "scenes" / "scene0000_00", "frames_square")
    entry = {"id": "q1", "video": "scenes/scene0000_00", "depth": "scenes/scene0000_00", "scene_id": "scene0000_00",
             "conversations": [{"from": "human", "value": "<image>\nWhat is on the table?"},
                               {"from": "gpt", "value": "a lamp"}]}
    (tmp_path / "scanqa.json").write_text(json.dumps([entry]))
    [example] = load_examples(tmp_path / "scanqa.json", ["depth"])
    assert example.video == example.sources["depth"] == scene
    streams = read_streams(tiny_backbone, example.video, example.sources, {"depth": get_modality("depth")}, 2)
    colour = [np.asarray(Image.open(scene / "color" / f"{frame}.jpg").convert("RGB")) for frame in (40, 120)]
    assert torch.equal(streams["video"], tiny_backbone.preprocess_frames(np.stack(colour)))  # frames 2 and 6
    turbo = [np.broadcast_to(turbo_of(DEPTHS_MM[i]), (*DEPTH_SIZE, 3)) for i in (2, 6)]
    assert torch.equal(streams["depth"], tiny_backbone.preprocess_frames(np.stack(turbo).copy()))


def test_depth_takes_the_frames_it_is_given(tmp_path):
    scene = write_scene(tmp_path / "scene")
    depth = get_modality("depth")
    assert depth_frames(depth.frames(scene, 3)) == [1, 4, 6]  # its own (uniform) choice
    assert depth_frames(depth.frames(scene, 2, frame_indices=np.array([5, 2]))) == [5, 2]
    with pytest.raises(VlynxError, match="scene: frame index 8 is outside the scene's 8 frames"):
        depth.frames(scene, 2, frame_indices=np.array([0, 8]))


def test_modalities_must_agree_on_the_scene_frames(tmp_path, tiny_backbone):
    scene = write_scene(tmp_path / "scene")
    transforms = {"depth": get_modality("depth"), "depth2": get_modality("depth", selection="farthest")}
    with pytest.raises(VlynxError, match="modalities choose scene frames differently"):
        read_streams(tiny_backbone, scene, {}, transforms, num_frames=2)


def test_preview_aligned_to_a_scene(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", ("vlynx.commands.preview",))
    scene = write_scene(tmp_path / "scene")
    out = tmp_path / "sheet.png"
    assert cli.main(["preview", str(scene), "-m", "depth", "--set", "selection=farthest", "--align-to", str(scene),
                     "--frames", "3", "--raw", "--out", str(out)]) == 0
    sheet = np.asarray(Image.open(out).convert("RGB"))
    # 3 frames on a 2 x 2 grid with a 2-pixel gap: frame k at row k // 2, column k % 2.
    corners = [sheet[2 + (k // 2) * (DEPTH_SIZE[0] + 2), 2 + (k % 2) * (DEPTH_SIZE[1] + 2)] for k in range(3)]
    assert depth_frames(np.asarray(corners)[:, None, None, :]) == [0, 4, 7]


def test_scene_folders_are_listed_as_reference_videos(tmp_path):
    root = tmp_path / "videos"
    write_scene(root / "frames_square" / "scene0001_00", "frames_square")
    write_scene(root / "scannet" / "scene0000_00")
    write_video(root / "clip.mp4", np.zeros((2, 16, 16, 3), np.uint8), fps=2)
    (root / "notes").mkdir()
    [source] = video_sources([root])
    assert source.videos == (root / "clip.mp4", root / "frames_square" / "scene0001_00",
                             root / "scannet" / "scene0000_00")
    annotation = tmp_path / "scanqa.json"
    annotation.write_text(json.dumps([{"id": "q1", "video": "videos/scannet/scene0000_00"}]))
    assert video_sources([annotation])[0].videos == (root / "scannet" / "scene0000_00",)
    assert video_sources([root / "scannet" / "scene0000_00"])[0].videos == (root / "scannet" / "scene0000_00",)


def test_reference_reads_a_scene_like_any_video(tmp_path, tiny_backbone):
    from vlynx.reference.compute import _VideoFrames

    scene = write_scene(tmp_path / "scene")
    (tmp_path / "plain").mkdir()
    items = _VideoFrames([(scene, 0), (tmp_path / "plain", 0)], 2, tiny_backbone)
    colour = [np.asarray(Image.open(scene / "color" / f"{i}.jpg").convert("RGB")) for i in (2, 6)]
    assert torch.equal(items[0][1], tiny_backbone.preprocess_frames(np.stack(colour)))
    assert "is a folder but not a video or a 3D scene" in items[1][2]  # skipped with its reason


def test_bad_scenes_are_one_clear_error(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(VlynxError, match="plain: is a folder but not a video or a 3D scene"):
        read_video(tmp_path / "plain", 2)
    scene = write_scene(tmp_path / "gap")
    (scene / "depth" / "3.png").unlink()
    with pytest.raises(VlynxError, match="gap: colour and depth frames do not match: 1 frame.* no depth file, e.g. 3"):
        read_video(scene, 2)
    scene = write_scene(tmp_path / "broken")
    (scene / "color" / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VlynxError, match="1.jpg: cannot decode colour frame"):
        read_video(scene, 3)
    scene = write_scene(tmp_path / "colour_only")
    for folder in ("depth", "pose"):
        for file in (scene / folder).iterdir():
            file.unlink()
        (scene / folder).rmdir()
    assert colour_frames(read_video(scene, 2).frames) == [2, 6]  # a video needs colour alone
    with pytest.raises(VlynxError, match="colour_only: no .png depth maps found"):
        get_modality("depth").frames(scene, 2)
    scene = write_scene(tmp_path / "posed")
    (scene / "pose" / "5.txt").unlink()
    with pytest.raises(VlynxError, match="pose: 1 frame.* have no pose file, e.g. 5.txt"):
        read_video(scene, 2)
