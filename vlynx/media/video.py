"""Video frames: uniform sampling by timestamp (seeking on long gaps) and an mp4 writer."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlynx.errors import VlynxError
from vlynx.files import atomic_path

# Decode forward instead of seeking when the next wanted frame is this close (seconds):
# a seek restarts at the previous keyframe, which costs more than a short decode.
_SEEK_GAP_S = 2.0


@dataclass(frozen=True)
class VideoClip:
    frames: np.ndarray  # (F, H, W, 3) uint8 RGB
    timestamps: np.ndarray  # (F,) seconds, presentation time of each returned frame
    duration: float  # seconds


def _require_file(path: Path) -> None:
    if not path.exists():
        raise VlynxError("file not found", path)
    if not path.is_file():
        raise VlynxError("is not a file", path)
    if path.stat().st_size == 0:
        raise VlynxError("file is empty", path)


def video_duration(path: str | Path) -> float:
    """Duration of the first video stream in seconds."""
    with _video_stream(Path(path)) as (container, stream):
        return _duration(container, stream)


@contextlib.contextmanager
def _video_stream(path: Path) -> Iterator[tuple[Any, Any]]:
    """(container, first video stream) of `path`; any decoding error becomes a VlynxError naming the file."""
    import av

    _require_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VlynxError("has no video stream", path)
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            yield container, stream
    except av.error.FFmpegError as error:
        raise VlynxError(f"cannot decode video ({error.strerror or error})", path) from error


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def read_video(path: str | Path, num_frames: int) -> VideoClip:
    """Sample `num_frames` frames uniformly in time: frame i is the one nearest to (i + 0.5) * T / F.

    Raises `VlynxError` naming the file for missing, empty, corrupt or frameless videos.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    path = Path(path)
    with _video_stream(path) as (container, stream):
        duration = _duration(container, stream)
        if duration <= 0:  # no duration in the header: decode everything once
            decoded = [(f.time or 0.0, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
            if not decoded:
                raise VlynxError("contains no decodable video frames", path)
            duration = decoded[-1][0] + (decoded[-1][0] / max(len(decoded) - 1, 1))
            times = np.array([t for t, _ in decoded])
            targets = (np.arange(num_frames) + 0.5) * duration / num_frames
            picks = [int(np.abs(times - t).argmin()) for t in targets]
            return VideoClip(np.stack([decoded[i][1] for i in picks]), times[picks], duration)
        targets = (np.arange(num_frames) + 0.5) * duration / num_frames
        frames, times = _nearest_frames(container, stream, targets)
    if len(frames) < num_frames:
        raise VlynxError(f"video ends early: decoded {len(frames)} of {num_frames} frames (truncated?)", path)
    return VideoClip(np.stack(frames), np.asarray(times, dtype=np.float64), duration)


def read_video_at(path: str | Path, timestamps: np.ndarray) -> VideoClip:
    """The frames nearest to each of `timestamps` (seconds, any order; clamped to the clip).

    Used to sample a second stream (another view, a high-frame-rate group) at the times
    of the main video's frames. Raises `VlynxError` like `read_video`.
    """
    timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if timestamps.size == 0:
        raise ValueError("need at least one timestamp")
    path = Path(path)
    order = np.argsort(timestamps, kind="stable")  # decode forward once, then restore the caller's order
    with _video_stream(path) as (container, stream):
        frames, times = _nearest_frames(container, stream, np.maximum(timestamps[order], 0.0))
        duration = _duration(container, stream)
    if len(frames) < len(timestamps):
        raise VlynxError(f"video ends early: decoded {len(frames)} of {len(timestamps)} frames (truncated?)", path)
    inverse = np.argsort(order)
    return VideoClip(np.stack(frames)[inverse], np.asarray(times, dtype=np.float64)[inverse], duration)


def _nearest_frames(container, stream, targets: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    """Decode forward, seeking only across long gaps; keep the frame nearest each target time."""
    frames: list[np.ndarray] = []
    times: list[float] = []
    decoder = None
    previous = None  # (time, frame) last decoded before the current target
    for target in targets:
        if decoder is None or (previous is not None and target - previous[0] > _SEEK_GAP_S):
            container.seek(int(max(target - 0.5, 0) / stream.time_base), stream=stream, backward=True)
            decoder, previous = container.decode(stream), None
        chosen = None
        for frame in decoder:
            current = (_frame_time(frame, stream), frame)
            if current[0] >= target:
                if previous is not None and target - previous[0] <= current[0] - target:
                    chosen = previous
                else:
                    chosen = current
                previous = current
                break
            previous = current
        if chosen is None and previous is not None:  # target beyond the last frame: take the last one
            chosen = previous
        if chosen is None:
            break
        frames.append(chosen[1].to_ndarray(format="rgb24"))
        times.append(chosen[0])
    return frames, times


def _frame_time(frame, stream) -> float:
    if frame.time is not None:
        return float(frame.time)
    return float(frame.pts * stream.time_base)


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
) -> Path:
    """Write uint8 RGB frames (F, H, W, 3) as H.264 mp4, with optional mono float audio in [-1, 1] (AAC).

    Written to a temporary file and renamed, so an interrupted write never leaves a
    file that looks complete.
    """
    import av
    from fractions import Fraction

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            video.width, video.height, video.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
            # Without lookahead/mb-tree and with one thread, x264 writes the same bitstream every run
            # (measured: with them, 1 in 20 small clips decoded to different pixels on a rerun).
            video.options = {"crf": "12", "preset": "veryfast", "threads": "1",
                             "x264-params": "rc-lookahead=0:mbtree=0"}
            audio_stream = None
            if audio is not None:
                audio_stream = container.add_stream("aac", rate=sample_rate, layout="mono")
            for image in frames:
                if image.shape[:2] != (video.height, video.width):
                    image = np.pad(image, ((0, video.height - height), (0, video.width - width), (0, 0)), "edge")
                container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(video.encode())
            if audio_stream is not None:
                samples = np.clip(np.asarray(audio, dtype=np.float32), -1, 1).reshape(1, -1)
                chunk = 1024
                for start in range(0, samples.shape[1], chunk):
                    piece = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(samples[:, start:start + chunk]), format="fltp", layout="mono"
                    )
                    piece.sample_rate, piece.pts = sample_rate, start
                    container.mux(audio_stream.encode(piece))
                container.mux(audio_stream.encode())
    return path
