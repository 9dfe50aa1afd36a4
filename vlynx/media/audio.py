"""Audio decoding: wav/flac with soundfile, anything else (mp3, a video's own track) with PyAV.

Everything comes out mono float32 at one sample rate, resampled by FFmpeg's resampler
(`av.AudioResampler`), so the same file always gives the same samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlynx.errors import VlynxError
from vlynx.media.video import _require_file

SOUNDFILE_SUFFIXES = {".wav", ".flac"}


@dataclass(frozen=True)
class AudioClip:
    samples: np.ndarray  # (N,) float32 mono, nominally in [-1, 1]
    sample_rate: int
    start: float = 0.0  # seconds: container time of samples[0] (aligns with video frame timestamps)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def read_audio(path: str | Path, sample_rate: int = 16_000) -> AudioClip:
    """Decode an audio file (wav/flac/mp3/...) or a video's audio track to mono float32 at `sample_rate`.

    Raises `VlynxError` naming the file when it is missing, empty, undecodable, has no
    audio track, or holds no samples.
    """
    path = Path(path)
    _require_file(path)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        samples, rate = _read_soundfile(path)
        if rate != sample_rate:
            samples = resample(samples, rate, sample_rate)
        clip = AudioClip(samples, sample_rate)
    else:
        clip = _read_with_av(path, sample_rate)
    if clip.samples.size == 0:
        raise VlynxError("contains no audio samples", path)
    if not np.all(np.isfinite(clip.samples)):
        raise VlynxError("audio contains NaN or infinite samples", path)
    return clip


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (N, channels)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise VlynxError(f"cannot decode audio ({error})", path) from error
    return data.mean(axis=1).astype(np.float32), int(rate)


def _read_with_av(path: Path, sample_rate: int) -> AudioClip:
    import av

    chunks: list[np.ndarray] = []
    start = None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                kind = "video" if container.streams.video else "file"
                raise VlynxError(f"{kind} has no audio track", path)
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(stream):
                if start is None:
                    start = float(frame.time) if frame.time is not None else 0.0
                for piece in resampler.resample(frame):
                    chunks.append(piece.to_ndarray().reshape(-1))
            for piece in resampler.resample(None):  # flush the resampler's delay line
                chunks.append(piece.to_ndarray().reshape(-1))
    except av.error.FFmpegError as error:
        raise VlynxError(f"cannot decode audio ({error.strerror or error})", path) from error
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return AudioClip(samples, sample_rate, start or 0.0)


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 samples from `rate` to `target_rate` with FFmpeg's resampler (via PyAV)."""
    import av

    samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target_rate)
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.sample_rate, frame.pts = rate, 0
    pieces = [p.to_ndarray().reshape(-1) for p in resampler.resample(frame)]
    pieces += [p.to_ndarray().reshape(-1) for p in resampler.resample(None)]
    return np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
