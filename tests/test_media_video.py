"""Video writing and reading."""
from __future__ import annotations

import hashlib

import numpy as np

from vlynx.media import read_video, write_video


def test_writing_the_same_clip_twice_gives_the_same_file(tmp_path):
    """Reproducible worlds need a reproducible encoder (x264's lookahead made 1 in 20 clips vary)."""
    from vlynx.miniworld.generate import make_scene
    from vlynx.miniworld.world import render_frames

    audio = (np.sin(np.arange(32_000) * 0.1) * 0.3).astype(np.float32)
    for index in (1, 4, 17, 26, 37):  # miniworld scenes whose encoding varied before the fix
        frames = render_frames(make_scene(0, "train", index)[0])
        digests = {hashlib.sha256(write_video(tmp_path / f"{k}.mp4", frames, 8, audio=audio).read_bytes()).digest()
                   for k in range(6)}
        assert len(digests) == 1


def test_frames_are_sampled_at_segment_centres(tmp_path):
    fps, count = 10, 40  # 4 s; frame i shows grey level 5 * i
    frames = np.repeat((np.arange(count, dtype=np.uint8) * 5)[:, None, None, None], 3, axis=3)
    frames = np.broadcast_to(frames, (count, 16, 16, 3)).copy()
    write_video(tmp_path / "ramp.mp4", frames, fps)
    clip = read_video(tmp_path / "ramp.mp4", 4)
    # centres of 4 equal segments of 4 s: 0.5, 1.5, 2.5, 3.5 s -> frames 5, 15, 25, 35
    assert np.allclose(clip.timestamps, [0.5, 1.5, 2.5, 3.5])
    assert np.allclose(clip.frames[:, 8, 8, 0], [25, 75, 125, 175], atol=3)
    assert clip.duration == 4.0
