"""Video writing and reading."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from vlynx.errors import VlynxError
from vlynx.media import read_video, read_video_at, video_duration, write_video


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


# --- Reading never invents frames: truncated files, header durations, start offsets -----------------------

FPS, COUNT = 4, 16  # 4 s; frame k shows grey level 15 * k


def grey_ramp(count=COUNT, size=32):
    levels = (np.arange(count) * 15).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, size, size, 3)).copy()


def encode(path, frames, fps=FPS, fmt="mp4", options=None, bframes=0, audio_seconds=0.0, keyint=250, scenecut=True):
    """Encode with PyAV directly (not `write_video`): H.264, a keyframe every `keyint` (and, with `scenecut`,
    wherever x264 sees a scene change: every frame of a grey ramp), optional silent AAC."""
    import av

    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.options = {"crf": "12", "preset": "veryfast", "threads": "1",
                         "x264-params": f"rc-lookahead=0:mbtree=0:bframes={bframes}:keyint={keyint}"
                                         + ("" if scenecut else ":scenecut=0")}
        audio = container.add_stream("aac", rate=16_000, layout="mono") if audio_seconds else None
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        if audio is not None:
            for start in range(0, int(audio_seconds * 16_000), 1024):
                piece = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                piece.sample_rate, piece.pts = 16_000, start
                container.mux(audio.encode(piece))
            container.mux(audio.encode())
    return path


def decode_all(path):
    """Every frame of the first video stream, decoded independently of vlynx: (times, uint8 frames)."""
    import av

    with av.open(str(path)) as container:
        pairs = [(np.nan if f.time is None else float(f.time), f.to_ndarray(format="rgb24"))
                 for f in container.decode(video=0)]
    return np.array([t for t, _ in pairs]), np.stack([f for _, f in pairs])


def truncated_fast_start_mp4(tmp_path, keep=11, count=COUNT, fps=FPS, keyint=250):
    """`count` frames written with the moov atom first, then cut after the data of frame `keep - 1`."""
    import av

    complete = encode(tmp_path / "complete.mp4", grey_ramp(count), fps, options={"movflags": "faststart"},
                      keyint=keyint)
    data = complete.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # fast start: the index (and its 4 s) comes first
    with av.open(str(complete)) as container:
        offsets = [packet.pos for packet in container.demux(video=0) if packet.size]
    assert len(offsets) == count and offsets == sorted(offsets)
    path = tmp_path / "trunc.mp4"
    path.write_bytes(data[:offsets[keep]])  # frames 0 .. keep-1 survive whole
    times, frames = decode_all(path)
    assert np.allclose(times, np.arange(keep) / fps)  # what really decodes: frames 0 .. keep-1
    return path, frames


def test_truncated_fast_start_mp4_is_refused_not_padded(tmp_path):
    path, _ = truncated_fast_start_mp4(tmp_path)
    # Reading used to return frames 0..10 and then frame 10 again in place of frames 11..15.
    for count in (16, 8, 4, 2):
        with pytest.raises(VlynxError, match=r"trunc\.mp4: video ends early: the header says 4\.00 s \(16 frames\) "
                                             r"but the file holds only 11 frames \(2\.75 s\)"):
            read_video(path, count)
    with pytest.raises(VlynxError, match=r"trunc\.mp4: video ends early: .*only 11 frames.*3\.50 s"):
        read_video_at(path, np.array([3.5, 0.0, 1.0]))


def test_long_gaps_seek_and_a_seek_past_the_cut_is_refused(tmp_path):
    """16 frames at 1 fps (a keyframe every 4): targets 2, 6, 10, 14 s are > 2 s apart, so reading seeks."""
    whole = encode(tmp_path / "slow.mp4", grey_ramp(), fps=1, keyint=4)
    _, frames = decode_all(whole)
    np.testing.assert_array_equal(read_video(whole, 4).frames, frames[[2, 6, 10, 14]])
    np.testing.assert_array_equal(read_video_at(whole, np.array([15.0, 1.0, 9.0])).frames, frames[[15, 1, 9]])
    path, _ = truncated_fast_start_mp4(tmp_path, keep=7, fps=1, keyint=4)  # frames 0..6 survive (0..7 s)
    with pytest.raises(VlynxError, match=r"trunc\.mp4: video ends early: the header says 16\.00 s \(16 frames\) "
                                         r"but the file holds only 7 frames \(7\.00 s\), so there is no frame for 10"):
        read_video(path, 4)


class _CountingSeeks:
    """An `av.open` container that counts `seek` calls and otherwise is the real one."""

    seeks: list[int] = []

    def __init__(self, container):
        self._container = container

    def __enter__(self):
        self._container.__enter__()
        return self

    def __exit__(self, *exc):
        return self._container.__exit__(*exc)

    def seek(self, *args, **kwargs):
        _CountingSeeks.seeks.append(args[0])
        return self._container.seek(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._container, name)


@pytest.mark.parametrize("keyint, seeks", [(4, 3), (16, 0)])
def test_long_gaps_seek_only_when_a_keyframe_lies_ahead(tmp_path, monkeypatch, keyint, seeks):
    """Targets 2, 6, 10, 14 s of a 16 s clip at 1 fps: with a keyframe every 4 s each gap is crossed by a
    seek; with one keyframe (at 0 s) a seek would go back to the start, so reading decodes forward."""
    import av

    path = encode(tmp_path / "clip.mp4", grey_ramp(), fps=1, keyint=keyint, scenecut=False)
    _, frames = decode_all(path)
    real_open = av.open
    _CountingSeeks.seeks = []
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: _CountingSeeks(real_open(*args, **kwargs)))
    np.testing.assert_array_equal(read_video(path, 4).frames, frames[[2, 6, 10, 14]])
    assert len(_CountingSeeks.seeks) == seeks


def test_truncated_file_still_serves_targets_it_holds(tmp_path):
    """Every returned frame is a real, distinct frame: targets inside the surviving part are fine."""
    path, frames = truncated_fast_start_mp4(tmp_path)
    clip = read_video_at(path, np.array([2.5, 0.0, 1.0, 2.7]))  # 2.7 s: frame 10 (2.5 s) is still on screen
    assert np.allclose(clip.timestamps, [2.5, 0.0, 1.0, 2.5])
    np.testing.assert_array_equal(clip.frames, frames[[10, 0, 4, 10]])
    one = read_video(path, 1)  # the only target, 2.0 s, is inside what survived
    np.testing.assert_array_equal(one.frames, frames[[8]])


@pytest.mark.parametrize("faststart", [False, True])
def test_complete_video_reads_bit_identically(tmp_path, faststart):
    path = encode(tmp_path / "whole.mp4", grey_ramp(), options={"movflags": "faststart"} if faststart else None)
    times, frames = decode_all(path)
    # Targets (i + 0.5) * 4 / F; nearest frames by hand: F=8 hits frames 1, 3, ..., 15 exactly (15 = the
    # last, 3.75 s); F=5 targets 0.4, 1.2, 2.0, 2.8, 3.6 s -> frames 2, 5, 8, 11, 14.
    for count, expected in ((8, [1, 3, 5, 7, 9, 11, 13, 15]), (5, [2, 5, 8, 11, 14])):
        clip = read_video(path, count)
        np.testing.assert_array_equal(clip.frames, frames[expected])
        assert np.allclose(clip.timestamps, times[expected]) and clip.duration == 4.0
    clip = read_video_at(path, np.array([3.9, 0.3, 3.75]))  # 3.9 s: the last frame (3.75 s) is still on screen
    np.testing.assert_array_equal(clip.frames, frames[[15, 1, 15]])


def test_timestamp_past_the_end_of_a_complete_video_is_refused(tmp_path):
    path = encode(tmp_path / "short.mp4", grey_ramp())
    with pytest.raises(VlynxError, match=r"short\.mp4: video ends at 4\.00 s \(16 frames\), before 5\.00 s"):
        read_video_at(path, np.array([1.0, 5.0]))


def test_more_frames_than_the_video_has_share_nearest_frames(tmp_path):
    """F > frame count in a complete video: nearby targets share their nearest real frame (no error)."""
    path = encode(tmp_path / "four.mp4", grey_ramp(4))
    _, frames = decode_all(path)
    clip = read_video(path, 8)  # targets 0.0625 .. 0.9375 s over frames at 0, 0.25, 0.5, 0.75 s
    np.testing.assert_array_equal(clip.frames, frames[[0, 1, 1, 2, 2, 3, 3, 3]])


def test_container_duration_of_a_longer_audio_track_is_not_the_video_length(tmp_path):
    """Matroska keeps no duration on the video stream; the container's 6 s is the audio's, not the video's 4 s."""
    path = encode(tmp_path / "longer_audio.mkv", grey_ramp(), fmt="matroska", audio_seconds=6.0)
    _, frames = decode_all(path)
    clip = read_video(path, 8)
    np.testing.assert_array_equal(clip.frames, frames[[1, 3, 5, 7, 9, 11, 13, 15]])
    assert clip.duration == 4.0


def test_stream_start_offset_is_honoured(tmp_path):
    """MPEG-TS with B-frames starts its first frame at 0.5 s: targets count from there, not from 0."""
    path = encode(tmp_path / "offset.ts", grey_ramp(), fmt="mpegts", bframes=3)
    times, frames = decode_all(path)
    assert times[0] > 0.2
    clip = read_video(path, 8)
    np.testing.assert_array_equal(clip.frames, frames[[1, 3, 5, 7, 9, 11, 13, 15]])
    assert np.allclose(clip.timestamps, times[[1, 3, 5, 7, 9, 11, 13, 15]])


def test_video_without_header_timing_is_decoded_in_order(tmp_path):
    """A raw H.264 stream has no duration and no timestamps: frames are spaced by their decoded order."""
    path = encode(tmp_path / "raw.h264", grey_ramp(), fmt="h264")
    _, frames = decode_all(path)
    clip = read_video(path, 8)
    np.testing.assert_array_equal(clip.frames, frames[[1, 3, 5, 7, 9, 11, 13, 15]])
    assert len(np.unique(clip.timestamps)) == 8
    assert video_duration(path) == pytest.approx(4.0)
    np.testing.assert_array_equal(read_video_at(path, np.array([3.8, 0.3])).frames, frames[[15, 1]])
    with pytest.raises(VlynxError, match=r"raw\.h264: video ends at 4\.00 s \(16 frames\), before 4\.50 s"):
        read_video_at(path, np.array([4.5]))
