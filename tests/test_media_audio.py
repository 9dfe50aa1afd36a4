"""Audio decoding: wav/flac/mp3 and a video's own track, resampling, and bad files."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile

from vlynx.errors import VlynxError
from vlynx.media.audio import read_audio
from vlynx.media.video import write_video


def dominant_hz(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.argmax(spectrum) * rate / len(samples)


def sine(freq, seconds, rate, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def test_wav_resampled_and_mixed_to_mono(tmp_path):
    path = tmp_path / "stereo8k.wav"
    left, right = sine(440, 2.0, 8000), sine(440, 2.0, 8000, amplitude=0.1)
    soundfile.write(path, np.stack([left, right], axis=1), 8000)
    clip = read_audio(path)
    assert clip.sample_rate == 16_000 and clip.samples.dtype == np.float32
    assert abs(len(clip.samples) - 32_000) <= 64
    assert abs(dominant_hz(clip.samples, 16_000) - 440) <= 1.0
    middle = clip.samples[8000:24000]
    assert abs(np.abs(middle).max() - 0.3) < 0.01  # mono = mean of the channels: (0.5 + 0.1) / 2


def test_flac_and_mp3(tmp_path):
    import av

    flac = tmp_path / "tone.flac"
    soundfile.write(flac, sine(1000, 1.0, 16_000), 16_000)
    np.testing.assert_allclose(read_audio(flac).samples, sine(1000, 1.0, 16_000), atol=1e-4)

    mp3 = tmp_path / "tone.mp3"
    with av.open(str(mp3), "w") as container:
        stream = container.add_stream("libmp3lame", rate=44_100, layout="mono")
        samples = sine(660, 1.5, 44_100).reshape(1, -1)
        for start in range(0, samples.shape[1], 1152):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1152]),
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44_100, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    clip = read_audio(mp3)
    assert clip.sample_rate == 16_000 and abs(clip.duration - 1.5) < 0.1
    assert abs(dominant_hz(clip.samples, 16_000) - 660) <= 2.0


def test_video_track(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, np.zeros((8, 16, 16, 3), np.uint8), fps=4, audio=sine(500, 2.0, 16_000))
    clip = read_audio(path)
    assert abs(clip.duration - 2.0) < 0.1
    assert abs(dominant_hz(clip.samples, 16_000) - 500) <= 1.0


def test_bad_audio_inputs(tmp_path):
    with pytest.raises(VlynxError, match="missing.wav: file not found"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(VlynxError, match="empty.wav: file is empty"):
        read_audio(tmp_path / "empty.wav")
    for name in ("corrupt.wav", "corrupt.mp3"):
        (tmp_path / name).write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
        with pytest.raises(VlynxError, match=f"{name}: cannot decode audio"):
            read_audio(tmp_path / name)
    silent_video = tmp_path / "no_audio.mp4"
    write_video(silent_video, np.zeros((4, 16, 16, 3), np.uint8), fps=4)
    with pytest.raises(VlynxError, match="no_audio.mp4: video has no audio track"):
        read_audio(silent_video)
    full = tmp_path / "full.mp4"
    write_video(full, np.zeros((8, 16, 16, 3), np.uint8), fps=4, audio=sine(500, 2.0, 16_000))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(VlynxError, match="truncated.mp4: cannot decode"):
        read_audio(truncated)
    header_only = tmp_path / "header_only.wav"
    soundfile.write(header_only, np.zeros(0, np.float32), 16_000)
    with pytest.raises(VlynxError, match="header_only.wav: contains no audio samples"):
        read_audio(header_only)
