"""High-frame-rate tiling, egocentric frames, and the modality registry / plug-ins."""
from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

import vlynx.modalities as modalities
from vlynx.errors import VlynxError
from vlynx.media.video import read_video, write_video
from vlynx.modalities import Modality, get_modality, modality_names, register_modality
from vlynx.modalities.hfr import tile_groups

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                    [0, 255, 255], [255, 0, 255], [255, 255, 255], [0, 0, 0]], dtype=np.uint8)


def constant_frames(size=32):
    return np.broadcast_to(COLOURS[:, None, None, :], (8, size, size, 3)).copy()


def test_tile_groups_positions_pixel_by_pixel():
    tiled = tile_groups(constant_frames(), 4)
    assert tiled.shape == (2, 32, 32, 3)
    for group in range(2):
        for k, (rows, cols) in enumerate([(slice(0, 16), slice(0, 16)), (slice(0, 16), slice(16, 32)),
                                          (slice(16, 32), slice(0, 16)), (slice(16, 32), slice(16, 32))]):
            assert np.all(tiled[group, rows, cols] == COLOURS[4 * group + k]), (group, k)


def test_hfr_from_video(tmp_path):
    path = tmp_path / "fast.mp4"
    write_video(path, constant_frames(), fps=8)
    frames = get_modality("hfr").frames(path, 2)  # 8 uniform samples of an 8-frame clip: each frame once
    assert frames.shape == (2, 32, 32, 3)
    for group in range(2):
        quadrants = [frames[group, :16, :16], frames[group, :16, 16:], frames[group, 16:, :16], frames[group, 16:, 16:]]
        for k, quadrant in enumerate(quadrants):
            # H.264 at crf 12 in yuv420p: constant colours come back within a few levels.
            assert np.abs(quadrant.astype(int) - COLOURS[4 * group + k]).max() <= 12, (group, k)


def test_hfr_with_timestamps_centres_groups(tmp_path):
    path = tmp_path / "fast.mp4"
    write_video(path, constant_frames(), fps=8)  # frame j shown at j / 8 s, clip 1 s
    # Group centred at 0.55 s, step T / (4 F) = 0.25 s: sub-frames nearest 0.175, 0.425, 0.675, 0.925 s,
    # i.e. frames 1, 3, 5, 7 (shown at 0.125, 0.375, 0.625, 0.875 s).
    frames = get_modality("hfr").frames(path, 1, timestamps=np.array([0.55]))
    quadrants = [frames[0, :16, :16], frames[0, :16, 16:], frames[0, 16:, :16], frames[0, 16:, 16:]]
    for quadrant, frame_index in zip(quadrants, [1, 3, 5, 7]):
        assert np.abs(quadrant.astype(int) - COLOURS[frame_index]).max() <= 12, frame_index


def test_egocentric_frames_as_they_are(tmp_path):
    path = tmp_path / "ego.mp4"
    write_video(path, constant_frames(), fps=8)
    frames = get_modality("egocentric").frames(path, 4)
    np.testing.assert_array_equal(frames, read_video(path, 4).frames)
    at = get_modality("egocentric").frames(path, 2, timestamps=np.array([0.75, 0.0]))
    assert np.abs(at[0].astype(int) - COLOURS[6]).max() <= 12  # frame 6 shows at 0.75 s
    assert np.abs(at[1].astype(int) - COLOURS[0]).max() <= 12


class ThermalModality(Modality):
    """A user plug-in: a constant frame whose brightness is a setting."""

    name = "thermal"
    description = "test thermal camera"

    def __init__(self, level: int = 7) -> None:
        super().__init__()
        self.level = level

    def frames(self, source, num_frames, timestamps=None):
        return np.full((num_frames, 4, 4, 3), self.level, np.uint8)


def test_register_modality_and_settings(monkeypatch):
    monkeypatch.setattr(modalities, "_registered", {})
    register_modality("thermal", ThermalModality)
    assert "thermal" in modality_names()
    assert get_modality("thermal", level=9).frames("x", 2).max() == 9
    with pytest.raises(VlynxError, match="already registered"):
        register_modality("thermal", ThermalModality)
    register_modality("broken", lambda: "not a modality")
    with pytest.raises(VlynxError, match="factory returned str"):
        get_modality("broken")
    with pytest.raises(VlynxError, match="unknown modality 'sonar'"):
        get_modality("sonar")


def test_entry_point_plugins(monkeypatch):
    group = modalities.ENTRY_POINT_GROUP
    entries = [metadata.EntryPoint("thermal", f"{__name__}:ThermalModality", group),
               metadata.EntryPoint("missing", "no_such_package_xyz:Thing", group)]

    def fake_entry_points(**selection):
        assert selection == {"group": group}
        return entries

    monkeypatch.setattr(modalities.metadata, "entry_points", fake_entry_points)
    assert {"thermal", "missing", "audio", "depth", "hfr", "egocentric"} <= set(modality_names())
    assert get_modality("thermal", level=3).frames("x", 1).shape == (1, 4, 4, 3)
    assert modalities.modality_description("thermal") == "test thermal camera"
    with pytest.raises(VlynxError, match="modality 'missing': cannot load entry point 'no_such_package_xyz:Thing'"):
        get_modality("missing")
