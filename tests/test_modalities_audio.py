"""Audio -> log-mel frames: filterbank, STFT, window centring on tones at known times, scaling."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch

from vlynx.errors import VlynxError
from vlynx.media.audio import AudioClip
from vlynx.media.video import read_video, write_video
from vlynx.modalities import get_modality
from vlynx.modalities.audio import AudioSettings, log_mel, mel_filterbank

SR = 16_000


def reference_htk_filterbank(n_mels, n_fft, sample_rate, f_min, f_max):
    """Scalar re-derivation from the HTK formula mel = 2595 log10(1 + f / 700), one weight at a time."""
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    low, high = mel(f_min), mel(f_max)
    edges = [hz(low + (high - low) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    bins = n_fft // 2 + 1
    weights = np.zeros((n_mels, bins))
    for m in range(n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        for k in range(bins):
            f = k * sample_rate / n_fft
            if left <= f <= centre:
                weights[m, k] = (f - left) / (centre - left)
            elif centre < f <= right:
                weights[m, k] = (right - f) / (right - centre)
    return weights


@pytest.mark.parametrize("n_mels, n_fft, f_max", [(128, 400, 8000.0), (32, 256, 8000.0), (40, 512, 6000.0)])
def test_mel_filterbank_matches_htk_formula(n_mels, n_fft, f_max):
    ours = mel_filterbank(n_mels, n_fft, SR, 0.0, f_max)
    assert ours.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, reference_htk_filterbank(n_mels, n_fft, SR, 0.0, f_max), atol=1e-12)


@pytest.mark.parametrize("sample_rate", [16000, 22050])
def test_mel_filterbank_equals_transformers_for_even_sample_rates(sample_rate):
    """We keep our own filterbank: transformers places its bins at `sample_rate // 2`, off for odd rates."""
    import warnings

    from transformers.audio_utils import mel_filter_bank

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "At least one mel filter has all zero values" for 128 mels / 201 bins
        theirs = mel_filter_bank(num_frequency_bins=201, num_mel_filters=128, min_frequency=0.0,
                                 max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm=None, mel_scale="htk")
    np.testing.assert_allclose(mel_filterbank(128, 400, sample_rate, 0.0, sample_rate / 2), theirs.T, atol=1e-12)


def test_log_mel_matches_torch_stft():
    rng = np.random.default_rng(0)
    segment = rng.standard_normal(SR // 2).astype(np.float32) * 0.1
    s = AudioSettings()
    window = torch.hann_window(s.n_fft, dtype=torch.float64)  # periodic Hann, as the recipe asks
    spectrum = torch.stft(torch.from_numpy(segment).double(), s.n_fft, s.hop, window=window,
                          center=False, return_complex=True)  # (bins, frames)
    power = spectrum.abs().numpy() ** 2
    expected = np.log(reference_htk_filterbank(s.n_mels, s.n_fft, SR, 0.0, 8000.0) @ power + 1e-6)
    np.testing.assert_allclose(log_mel(segment, s), expected, rtol=1e-9, atol=1e-9)


def tone_between(start_s, end_s, total_s, freq=1000.0, amplitude=0.5):
    t = np.arange(int(total_s * SR)) / SR
    return np.where((t >= start_s) & (t < end_s), amplitude * np.sin(2 * np.pi * freq * t), 0.0).astype(np.float32)


def band_row(freq, n_mels=128, f_max=8000.0):
    """Image row of the mel band whose centre is nearest `freq` (lowest band at the bottom row)."""
    top = 2595.0 * math.log10(1 + f_max / 700.0)
    centres = [700.0 * (10 ** (top * (m + 1) / (n_mels + 1) / 2595.0) - 1) for m in range(n_mels)]
    band = min(range(n_mels), key=lambda m: abs(centres[m] - freq))
    return n_mels - 1 - band


def test_window_centred_on_timestamp_sees_the_tone(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone_between(3.0, 4.0, 8.0), SR)
    frames = get_modality("audio").frames(path, 3, timestamps=np.array([1.0, 3.5, 6.5]))
    assert frames.shape == (3, 128, 204, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[..., 0], frames[..., 1]) and np.array_equal(frames[..., 0], frames[..., 2])
    row = band_row(1000.0)
    bright = frames[1, :, :, 0]
    assert bright[row].max() > 200
    assert bright[row].max() == bright.max()  # the loudest band is the 1 kHz one
    # Column k is centred at 3.5 - 1.0 + (k - 1) * 0.01 s (one pad column on the left): the tone
    # (3 s to 4 s) fills columns 51..151; the STFT frame reaches 12.5 ms either side.
    lit = np.flatnonzero(bright[row] > 128)
    assert 49 <= lit.min() <= 52 and 150 <= lit.max() <= 153
    # Windows 1.0 +- 1 s and 6.5 +- 1 s hear only silence.
    silence = round(((math.log(1e-6) + 4.268) / 9.138 + 1.05) / 2.55 * 255)
    assert np.all(frames[0] == silence) and np.all(frames[2] == silence)


def test_audio_only_windows_are_evenly_spaced(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone_between(2.5, 3.5, 8.0), SR)
    # 4 frames over 8 s: centres 1, 3, 5, 7 s. Only the window 2-4 s holds the tone, in its middle
    # half: column k (no padding at 201 steps) is centred at 2 + k * 0.01 s -> columns 50..150.
    frames = get_modality("audio", time_steps=201).frames(path, 4)[..., 0]
    row = band_row(1000.0)
    assert [int(f.max() > 200) for f in frames] == [0, 1, 0, 0]
    lit = np.flatnonzero(frames[1, row] > 128)
    assert 48 <= lit.min() <= 51 and 149 <= lit.max() <= 152


def test_video_audio_track_aligned_with_video_frames(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, np.zeros((24, 32, 32, 3), np.uint8), fps=4, audio=tone_between(3.2, 3.8, 6.0))
    clip = read_video(path, 6)  # frames at 0.5, 1.5, ..., 5.5 s
    frames = get_modality("audio", window_s=1.0, time_steps=101).frames(path, 6, clip.timestamps)[..., 0]
    loud = [int(f[band_row(1000.0)].max() > 200) for f in frames]
    assert loud == [int(abs(t - 3.5) < 0.6) for t in clip.timestamps] == [0, 0, 0, 1, 0, 0]


def test_tiny_settings_shape(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone_between(0.0, 2.0, 2.0), SR)
    modality = get_modality("audio", n_mels=32, window_s=1.0, time_steps=64)
    frames = modality.frames(path, 5)
    assert frames.shape == (5, 32, 64, 3)
    assert frames[:, band_row(1000.0, n_mels=32)].max() > 200


def test_silent_audio_fixed_range_and_minmax(tmp_path):
    path = tmp_path / "silent.wav"
    soundfile.write(path, np.zeros(3 * SR, np.float32), SR)
    frames = get_modality("audio").frames(path, 2)
    silence = round(((math.log(1e-6) + 4.268) / 9.138 + 1.05) / 2.55 * 255)  # fixed range (-1.05, 1.5)
    assert np.all(frames == silence)
    with pytest.raises(VlynxError, match="silent.wav.*min-max"):
        get_modality("audio", scaling="minmax").frames(path, 2)


def test_minmax_scaling_spans_full_range():
    clip = AudioClip(tone_between(0.5, 1.5, 2.0), SR)
    image = get_modality("audio", scaling="minmax").window_image(clip, 1.0)
    assert image.min() == 0 and image.max() == 255


def test_window_past_the_end_is_padded_with_silence():
    clip = AudioClip(tone_between(0.0, 1.0, 1.0), SR)
    modality = get_modality("audio", time_steps=201)
    mel = modality.window_log_mel(clip, 1.0)  # window 0..2 s, audio ends at 1 s
    # Columns centred after 1 s + half an STFT frame see only the zero padding: log(0 + 1e-6) exactly.
    assert np.all(mel[:, 102:] == np.log(1e-6))
    assert mel[:, :99].max() > 0


def test_bad_settings():
    with pytest.raises(VlynxError, match="unknown setting"):
        get_modality("audio", n_mel=32)
    with pytest.raises(VlynxError, match="f_max"):
        get_modality("audio", f_max=9000.0)
    with pytest.raises(VlynxError, match="timestamps"):
        get_modality("audio").frames("unused.wav", 2, timestamps=np.array([1.0]))


def test_padding_is_the_share_of_each_window_outside_the_recording(tmp_path):
    path = tmp_path / "three_seconds.wav"
    soundfile.write(path, tone_between(0.0, 3.0, 3.0), SR)
    audio = get_modality("audio")  # 2 s windows over a 0..3 s recording
    # Centres 0.5 / 1.5 / 2.9 / 5 s: windows -0.5..1.5 (0.5 s before the start), 0.5..2.5 (inside),
    # 1.9..3.9 (0.9 s past the end), 4..6 (all past the end).
    shares = audio.padding(path, 4, timestamps=np.array([0.5, 1.5, 2.9, 5.0]))
    np.testing.assert_allclose(shares, [0.25, 0.0, 0.45, 1.0], atol=1e-12)
    # Without timestamps the centres are 0.375, 1.125, 1.875, 2.625 s: 0.625 s before the start, inside,
    # inside, 0.625 s past the end.
    np.testing.assert_allclose(audio.padding(path, 4), [0.3125, 0.0, 0.0, 0.3125], atol=1e-12)
    clip = AudioClip(tone_between(0.0, 1.0, 1.0), SR, start=2.0)  # a track that starts at 2 s on its clock
    assert audio.outside_recording(clip, 2.5) == pytest.approx((0.5, 0.5))
    # What padding reports is what the image shows: the window past the end is the log-mel of silence.
    mel = get_modality("audio", time_steps=201).window_log_mel(AudioClip(tone_between(0.0, 3.0, 3.0), SR), 2.9)
    assert np.all(mel[:, -80:] == np.log(1e-6)) and np.all(mel[:, :100].max(axis=0) > np.log(1e-6))


def test_modalities_that_never_fill_in_report_no_padding(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, np.zeros((8, 16, 16, 3), np.uint8), fps=4)
    np.testing.assert_array_equal(get_modality("egocentric").padding(path, 3), np.zeros(3))
    with pytest.raises(VlynxError, match="timestamps"):
        get_modality("hfr").padding(path, 2, timestamps=np.array([1.0]))
