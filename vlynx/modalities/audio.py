"""Audio -> log-mel spectrogram frames, one per video frame, each a window centred on that frame's time.

Recipe (docs/method.md §5): mono 16 kHz, power STFT (n_fft 400, hop 160, periodic Hann),
128 HTK mel bands 0-8 kHz, log(mel + 1e-6), crop/pad to 204 time steps, normalise
(x + 4.268) / 9.138, map a fixed value range to 8-bit grey, replicate to RGB. Every
number is a setting, so a tiny encoder can use fewer bands and shorter windows.

Image layout: rows are mel bands with the lowest band at the bottom (as spectrograms
are drawn), columns are time steps left to right; frame shape (n_mels, time_steps, 3).

Past the end of the recording (and before its start) a window hears silence. This is
deliberate: the window of the last video frame reaches up to window_s / 2 past the end
of a complete recording, so refusing such windows would refuse every clip. The
silence never replaces decoded audio. `AudioModality.padding` gives the share of each
window that lies outside the recording, and `vlynx preview` prints it per frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlynx.errors import VlynxError
from vlynx.media.audio import AudioClip, read_audio
from vlynx.modalities.base import Modality, check_frame_request
from vlynx.progress import log


@dataclass(frozen=True)
class AudioSettings:
    sample_rate: int = 16_000
    window_s: float = 2.0  # seconds of audio per frame, centred on the frame's timestamp
    n_fft: int = 400
    hop: int = 160
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 8_000.0
    time_steps: int = 204  # STFT columns per image after crop/pad
    log_offset: float = 1e-6
    norm_mean: float = -4.268  # normalised = (log_mel - norm_mean) / norm_scale
    norm_scale: float = 9.138
    scaling: str = "fixed"  # "fixed": clamp value_range to 0..255; "minmax": per-window min-max (authors' code)
    # Columns added to reach time_steps: "silence" = log of silence, split evenly before and after;
    # "log-zero" = zeros in log space after the window (the authors' tuning transform).
    pad_columns: str = "silence"
    # Normalised values mapped to 0 and 255. Silence (log 1e-6 -> -1.045) lands at 0; a
    # full-scale tone's band reaches about 1.5.
    value_range: tuple[float, float] = (-1.05, 1.5)

    def __post_init__(self) -> None:
        if self.scaling not in ("fixed", "minmax"):
            raise VlynxError(f"audio scaling must be 'fixed' or 'minmax', got {self.scaling!r}")
        if self.pad_columns not in ("silence", "log-zero"):
            raise VlynxError(f"audio pad_columns must be 'silence' or 'log-zero', got {self.pad_columns!r}")
        if self.f_max > self.sample_rate / 2 or not 0 <= self.f_min < self.f_max:
            raise VlynxError(f"audio mel range must satisfy 0 <= f_min < f_max <= sample_rate/2 "
                             f"(got {self.f_min}-{self.f_max} Hz at {self.sample_rate} Hz)")
        if min(self.n_fft, self.hop, self.n_mels, self.time_steps) < 1 or self.window_s <= 0:
            raise VlynxError("audio n_fft, hop, n_mels, time_steps and window_s must be positive")
        if not self.value_range[0] < self.value_range[1]:
            raise VlynxError(f"audio value_range must be (low, high) with low < high, got {self.value_range}")


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular HTK mel filters without area normalisation: (n_mels, n_fft // 2 + 1) float64.

    Filter m rises linearly from edge m to a peak of 1 at edge m+1 and falls to 0 at edge
    m+2, where the n_mels + 2 edges are equally spaced on the HTK mel scale in [f_min, f_max].
    """
    bin_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # (bins,)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))  # (n_mels + 2,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz - lower) / (centre - lower)
    falling = (upper - bin_hz) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(segment: np.ndarray, settings: AudioSettings, filterbank: np.ndarray | None = None) -> np.ndarray:
    """log(mel power + offset) of every full n_fft frame of `segment` at stride hop: (n_mels, frames)."""
    s = settings
    if filterbank is None:
        filterbank = mel_filterbank(s.n_mels, s.n_fft, s.sample_rate, s.f_min, s.f_max)
    count = 1 + (len(segment) - s.n_fft) // s.hop
    starts = np.arange(count)[:, None] * s.hop + np.arange(s.n_fft)[None, :]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(s.n_fft) / s.n_fft)  # periodic Hann (torch.hann_window)
    power = np.abs(np.fft.rfft(segment[starts].astype(np.float64) * hann, axis=1)) ** 2  # (frames, bins)
    return np.log(filterbank @ power.T + s.log_offset)


class AudioModality(Modality):
    """Audio as log-mel spectrogram images, one 2 s window per video frame."""

    name = "audio"
    description = "log-mel spectrogram per video frame (2 s window centred on its time); audio file or a video's track"
    Settings = AudioSettings
    padding_note = "window outside the recording, drawn as silence"

    def frames(self, source: str | Path, num_frames: int, timestamps: np.ndarray | None = None) -> np.ndarray:
        """uint8 (num_frames, n_mels, time_steps, 3) spectrogram images of `source`'s audio.

        `timestamps` (seconds on the source's clock) are the window centres, e.g. the
        timestamps of the video frames they go with; None spaces them evenly over the clip.
        """
        timestamps = check_frame_request(num_frames, timestamps)
        clip = read_audio(source, self.settings.sample_rate)
        if not np.any(clip.samples):
            log.warning("%s: audio is silent (all samples are zero)", source)
        return np.stack([self.window_image(clip, t, source) for t in self.centres(clip, num_frames, timestamps)])

    def padding(self, source: str | Path, num_frames: int, timestamps: np.ndarray | None = None) -> np.ndarray:
        """float64 (num_frames,): the share of each frame's window outside the recording, drawn as silence."""
        timestamps = check_frame_request(num_frames, timestamps)
        clip = read_audio(source, self.settings.sample_rate)
        outside = [sum(self.outside_recording(clip, t)) for t in self.centres(clip, num_frames, timestamps)]
        return np.asarray(outside, dtype=np.float64) / self.settings.window_s

    @staticmethod
    def centres(clip: AudioClip, num_frames: int, timestamps: np.ndarray | None) -> np.ndarray:
        """Window centres in seconds: `timestamps`, or the centres uniform video sampling uses, (i + 0.5) * T / F."""
        if timestamps is not None:
            return np.asarray(timestamps, dtype=np.float64)
        return clip.start + (np.arange(num_frames) + 0.5) * clip.duration / num_frames

    def outside_recording(self, clip: AudioClip, centre: float) -> tuple[float, float]:
        """Seconds of the window centred at `centre` before the recording starts and after it ends."""
        low, high = centre - self.settings.window_s / 2, centre + self.settings.window_s / 2
        end = clip.start + clip.duration
        before = min(max(clip.start - low, 0.0), high - low)
        after = min(max(high - end, 0.0), high - low)
        return before, after

    def window_image(self, clip: AudioClip, centre: float, source: str | Path = "") -> np.ndarray:
        """The uint8 (n_mels, time_steps, 3) image of the window centred at `centre` seconds."""
        s = self.settings
        normalised = (self.window_log_mel(clip, centre) - s.norm_mean) / s.norm_scale
        if s.scaling == "fixed":
            low, high = s.value_range
            unit = (np.clip(normalised, low, high) - low) / (high - low)
        else:
            low, high = normalised.min(), normalised.max()
            if high == low:  # the authors' code clamped the range to 1e-6 here, drawing silence black
                raise VlynxError(f"audio window at {centre:.2f} s is constant (silent); per-window min-max "
                                 "scaling is undefined, use scaling='fixed'", source or None)
            unit = (normalised - low) / (high - low)
        grey = np.rint(unit[::-1] * 255).astype(np.uint8)  # low frequencies at the bottom
        return np.repeat(grey[:, :, None], 3, axis=2)

    def window_log_mel(self, clip: AudioClip, centre: float) -> np.ndarray:
        """log-mel (n_mels, time_steps) of the window centred at `centre` seconds on the clip's clock.

        STFT column k is centred at centre - window_s/2 + k*hop/sample_rate (columns at both
        window edges included). Samples before the clip's start or after its end are zeros
        (silence; `outside_recording` says how many seconds). Columns added to reach
        time_steps lie outside the window and are the log-mel of silence, half before and
        half after (`pad_columns: log-zero`: zeros in log space, all after). Neither kind of
        filler ever replaces decoded audio.
        """
        s = self.settings
        if clip.sample_rate != s.sample_rate:
            raise ValueError(f"clip is at {clip.sample_rate} Hz, settings expect {s.sample_rate} Hz")
        window = int(round(s.window_s * s.sample_rate))
        columns = window // s.hop + 1
        first = int(round((centre - clip.start) * s.sample_rate)) - window // 2 - s.n_fft // 2
        length = (columns - 1) * s.hop + s.n_fft
        segment = np.zeros(length, dtype=np.float32)
        lo, hi = max(first, 0), min(first + length, len(clip.samples))
        if hi > lo:
            segment[lo - first:hi - first] = clip.samples[lo:hi]
        mel = log_mel(segment, s, self._filterbank())  # (n_mels, columns)
        if columns >= s.time_steps:  # crop symmetrically so the image centre stays at `centre`
            cut = (columns - s.time_steps) // 2
            return mel[:, cut:cut + s.time_steps]
        if s.pad_columns == "log-zero":
            return np.pad(mel, ((0, 0), (0, s.time_steps - columns)), constant_values=0.0)
        before = (s.time_steps - columns) // 2
        silence = np.log(s.log_offset)
        return np.pad(mel, ((0, 0), (before, s.time_steps - columns - before)), constant_values=silence)

    def _filterbank(self) -> np.ndarray:
        if not hasattr(self, "_cached_filterbank"):
            s = self.settings
            self._cached_filterbank = mel_filterbank(s.n_mels, s.n_fft, s.sample_rate, s.f_min, s.f_max)
        return self._cached_filterbank
