"""Video frames: sampling by timestamp (seeking on long gaps) and an mp4 writer.

Reading never invents a frame. `read_video` takes F frames uniformly: frame i is the
decoded frame nearest start + (i + 0.5) * T / F, where start and T are the video stream's
own start time and duration from the header (decoded in full when the header has no
duration). `read_video_at` takes the frames nearest given times. The last frame serves a
target after it only while it is still on screen (within its duration). A target later
than that (in a truncated file whose header promises more than the file holds, or a
timestamp past the end of the video) raises a `VlynxError`. The error names the file,
what the header says and what the file holds; the last frame is never repeated in place
of the missing ones. Callers apply their usual per-item policy to the error: `reference`
skips and lists the video, `align --skip-bad-items` skips the item, and `tune` and
`answer` stop with the path. A truncated file whose surviving part covers every target
is read normally, since every frame returned is real.

A folder given as a video is a 3D scene's colour frames (`vlynx.media.scene`): frames
chosen by position (uniform or pose-aware), with no clock.

A frame is returned more than once only when targets share it as their nearest frame:
when more frames are asked for than the video has, or for timestamps before the first frame.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlynx.errors import VlynxError
from vlynx.files import atomic_path

if TYPE_CHECKING:
    from vlynx.media.scene import FrameChoice

# Decode forward instead of seeking when the next wanted frame is this close (seconds):
# a seek restarts at the previous keyframe, which costs more than a short decode. Farther
# gaps seek only when a keyframe lies between the decoder and the target (`_keyframe_times`).
_SEEK_GAP_S = 2.0


@dataclass(frozen=True)
class VideoClip:
    frames: np.ndarray  # (F, H, W, 3) uint8 RGB
    timestamps: np.ndarray | None  # (F,) seconds, presentation time of each returned frame; None for a 3D scene
    duration: float | None  # seconds; None for a 3D scene (its frames have no clock)
    frame_indices: np.ndarray | None = None  # (F,) positions of a 3D scene's frames taken; None for a video file


def _require_file(path: Path) -> None:
    if not path.exists():
        raise VlynxError("file not found", path)
    if not path.is_file():
        raise VlynxError("is not a file", path)
    if path.stat().st_size == 0:
        raise VlynxError("file is empty", path)


def video_duration(path: str | Path) -> float:
    """Duration of the first video stream in seconds: the header's, or measured by decoding when it has none."""
    path = Path(path)
    with _video_stream(path) as (container, stream):
        duration = _header_span(container, stream)[1]
        if duration <= 0:
            duration = _decode_all(container, stream, path)[2]
        return duration


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


def _header_span(container, stream) -> tuple[float, float]:
    """(start, duration) of the video stream in seconds as the header states them; duration 0 when unknown."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
    if stream.duration is not None and stream.time_base is not None:
        return start, float(stream.duration * stream.time_base)
    tagged = _tag_seconds(stream.metadata.get("DURATION"))  # Matroska/WebM: a duration tag per stream
    if tagged > 0:
        return start, tagged
    # The container's duration covers its longest stream: it is the video's only when no other stream is.
    others = [s for s in container.streams if s.type in ("audio", "video") and s.index != stream.index]
    if container.duration is not None and not others:
        return start, container.duration / 1_000_000
    return start, 0.0


def _tag_seconds(value: str | None) -> float:
    """'HH:MM:SS.fraction' -> seconds; 0 for a missing or malformed tag."""
    try:
        hours, minutes, seconds = (value or "").split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return 0.0


def read_video(path: str | Path, num_frames: int, scene_choice: FrameChoice | None = None) -> VideoClip:
    """Sample `num_frames` frames uniformly in time: frame i is the one nearest start + (i + 0.5) * T / F.

    A folder is read as a 3D scene's colour frames (`vlynx.media.scene`), chosen by
    `scene_choice` (default uniform; ignored for video files); the clip then says which
    frames it took (`frame_indices`) instead of when. Raises `VlynxError` naming the file for
    missing, empty, corrupt or frameless videos, for videos that end before a target
    (truncated files), never padding with a repeated frame, and for a folder that is not a scene.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    path = Path(path)
    if path.is_dir():
        from vlynx.media.scene import read_scene_video  # imports this module: a cycle at import time

        return read_scene_video(path, num_frames, scene_choice)
    with _video_stream(path) as (container, stream):
        start, duration = _header_span(container, stream)
        if duration <= 0:  # no duration in the header: decode everything once
            return _nearest_decoded(container, stream, path, None, num_frames)
        targets = start + (np.arange(num_frames) + 0.5) * duration / num_frames
        frames, times = _nearest_frames(container, stream, targets, path)
    return VideoClip(np.stack(frames), np.asarray(times, dtype=np.float64), duration)


def read_video_at(path: str | Path, timestamps: np.ndarray) -> VideoClip:
    """The frames nearest to each of `timestamps` (seconds on the video's clock, any order).

    Used to sample a second stream (another view, a high-frame-rate group) at the times
    of the main video's frames. Times before the first frame get the first frame; a time
    after the last frame has ended raises `VlynxError` (see the module docstring), as do
    the inputs `read_video` refuses.
    """
    timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if timestamps.size == 0:
        raise ValueError("need at least one timestamp")
    path = Path(path)
    order = np.argsort(timestamps, kind="stable")  # decode forward once, then restore the caller's order
    with _video_stream(path) as (container, stream):
        duration = _header_span(container, stream)[1]
        if duration <= 0:
            return _nearest_decoded(container, stream, path, timestamps, len(timestamps))
        frames, times = _nearest_frames(container, stream, np.maximum(timestamps[order], 0.0), path)
    inverse = np.argsort(order)
    return VideoClip(np.stack(frames)[inverse], np.asarray(times, dtype=np.float64)[inverse], duration)


def _nearest_decoded(container, stream, path: Path, targets: np.ndarray | None, num_frames: int) -> VideoClip:
    """For headers without a duration: decode everything once, then take the frame nearest each target.

    `targets` None means uniform sampling over the decoded span.
    """
    decoded, times, duration = _decode_all(container, stream, path)
    if targets is None:
        targets = times[0] + (np.arange(num_frames) + 0.5) * duration / num_frames
    if targets.max() > times[0] + duration + 1e-9:  # the last frame is off screen by then
        raise _past_the_end(path, times[0] + duration, len(decoded), float(targets.max()))
    picks = [int(np.abs(times - t).argmin()) for t in targets]
    return VideoClip(np.stack([decoded[i].to_ndarray(format="rgb24") for i in picks]), times[picks], duration)


def _decode_all(container, stream, path: Path) -> tuple[list[Any], np.ndarray, float]:
    """Every decoded frame, its time and the video's duration (span + one frame), for headers without a duration.

    Frames without timestamps (raw H.264 streams) are spaced by their frame duration in decoding order.
    """
    frames = list(container.decode(stream))
    if not frames:
        raise VlynxError("contains no decodable video frames", path)
    step = _frame_seconds(frames[0], stream)
    if any(frame.pts is None for frame in frames):
        times = np.arange(len(frames)) * step
    else:
        times = np.array([_frame_time(frame, stream) for frame in frames])
    if len(frames) > 1:
        step = (times[-1] - times[0]) / (len(frames) - 1)
    return frames, times, float(len(frames) * step)


def _nearest_frames(container, stream, targets: np.ndarray, path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Decode forward through ascending `targets`, seeking only across long gaps; keep the frame nearest each.

    `before` and `after` are consecutive decoded frames with before < target <= after, so
    several targets between the same two frames each get their nearest one.
    """
    frames: list[np.ndarray] = []
    times: list[float] = []
    start = _header_span(container, stream)[0]
    decoder, seeking = container.decode(stream), True
    before = after = None  # (time, frame)
    keyframes = None  # the stream's keyframe times, read (not decoded) at the first long gap
    for target in targets:
        position = after[0] if after else start
        if seeking and target - position > _SEEK_GAP_S:
            if keyframes is None:
                keyframes = _keyframe_times(path, stream.index)
            # A seek restarts at the last keyframe before the target: worth it only when that
            # keyframe lies ahead of the decoder (with keyframes 10 s apart, a 4 s gap would go back).
            landing = keyframes[keyframes <= max(target - 0.5, 0)]
            if len(landing) == 0 or landing[-1] > position:
                container.seek(int(max(target - 0.5, 0) / stream.time_base), stream=stream, backward=True)
                decoder, before, after = container.decode(stream), None, None
        before, after = _advance(decoder, stream, before, after, target)
        if after is None and seeking:  # the seek found nothing (data cut off, or a container that seeks badly)
            container.seek(0, stream=stream, backward=True)
            decoder, seeking = container.decode(stream), False
            before, after = _advance(decoder, stream, None, None, target)
        if after is None or target > after[0] + _frame_seconds(after[1], stream) + 1e-9:
            raise _ends_early(path, stream, container, target)  # after: the last frame, off screen by now
        if after[0] >= target and before is not None and target - before[0] <= after[0] - target:
            chosen = before
        else:
            chosen = after
        frames.append(chosen[1].to_ndarray(format="rgb24"))
        times.append(chosen[0])
    return frames, times


def _keyframe_times(path: Path, index: int) -> np.ndarray:
    """Presentation times (s) of the keyframes of stream `index`, from the packets alone: demuxing
    reads the compressed stream without decoding it (~100x cheaper). Empty if packets carry no times."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams[index]
        times = [float(packet.pts * stream.time_base) for packet in container.demux(stream)
                 if packet.is_keyframe and packet.pts is not None]
    return np.sort(np.asarray(times, dtype=np.float64))


def _advance(decoder, stream, before, after, target: float):
    """Decode until `after` is the first frame at or past `target`, or the stream ends (after: the last frame)."""
    while after is None or after[0] < target:
        frame = next(decoder, None)
        if frame is None:
            break
        before, after = after, (_frame_time(frame, stream), frame)
    return before, after


def _ends_early(path: Path, stream, container, target: float) -> VlynxError:
    """The error for a target after the video's last frame: what the header says, what the file holds."""
    start, duration = _header_span(container, stream)
    count, end = _frames_in_file(path)
    if count == 0:
        return VlynxError("contains no decodable video frames", path)
    if start + duration <= end + 1e-3:
        return _past_the_end(path, end, count, target)
    promised = f"{duration:.2f} s" + (f" ({stream.frames} frames)" if stream.frames else "")
    return VlynxError(f"video ends early: the header says {promised} but the file holds only {count} frames "
                      f"({end - start:.2f} s), so there is no frame for {target:.2f} s (truncated file? "
                      "re-encode or replace it)", path)


def _past_the_end(path: Path, end: float, count: int, target: float) -> VlynxError:
    return VlynxError(f"video ends at {end:.2f} s ({count} frames), before {target:.2f} s; its last frame is not "
                      "repeated to fill the gap (is it shorter than the video it goes with?)", path)


def _frames_in_file(path: Path) -> tuple[int, float]:
    """(count, end time in seconds) of the complete video packets actually in the file, read without decoding."""
    import av

    count, end = 0, 0.0
    try:
        with av.open(str(path)) as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.size and not packet.is_corrupt and packet.pts is not None:
                    count += 1
                    end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    except av.error.FFmpegError:
        pass  # a damaged tail: count what came before it
    return count, end


def _frame_time(frame, stream) -> float:
    if frame.time is not None:
        return float(frame.time)
    return float(frame.pts * stream.time_base)


def _frame_seconds(frame, stream) -> float:
    """How long `frame` stays on screen: its own duration, else one interval at the stream's average rate."""
    duration = getattr(frame, "duration", None)
    if duration and stream.time_base is not None:
        return float(duration * stream.time_base)
    rate = stream.average_rate or stream.guessed_rate
    return float(1 / rate) if rate else 0.0


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
