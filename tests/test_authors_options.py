"""The options that give the authors' behaviour where vlynx differs on purpose (docs/method.md §9).

- audio `pad_columns: log-zero`: the columns added to reach `time_steps` are zeros in log
  space, all after the window (the authors' tuning transform), instead of log-of-silence
  split before and after;
- align `dist_per_image`: the distribution loss (eq. 7-8) sees the tokens of every image
  (depth and normals apart), instead of each frame's average of its images.

Expectations are worked out by hand from the definitions, not read from the code.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlynx.errors import VlynxError
from vlynx.media.audio import AudioClip
from vlynx.modalities import get_modality

# A tiny transform: a 1 s window at 1 kHz with hop 50 has 1000 // 50 + 1 = 21 STFT
# columns, so 25 time steps need 4 padding columns.
TINY_AUDIO = dict(sample_rate=1000, window_s=1.0, n_fft=100, hop=50, n_mels=4, f_max=500.0, time_steps=25)
COLUMNS, PADDING = 21, 4


def _tone_clip() -> AudioClip:
    t = np.arange(3000) / 1000.0
    return AudioClip(samples=(0.5 * np.sin(2 * np.pi * 120.0 * t)).astype(np.float32), sample_rate=1000)


def test_silence_padding_splits_log_of_silence_before_and_after():
    modality = get_modality("audio", **TINY_AUDIO)
    mel = modality.window_log_mel(_tone_clip(), centre=1.5)
    silence = math.log(1e-6)
    assert mel.shape == (4, 25)
    np.testing.assert_array_equal(mel[:, :2], silence)  # 4 // 2 columns before
    np.testing.assert_array_equal(mel[:, -2:], silence)  # the other 2 after
    assert (mel[:, 2:-2].max(axis=0) > silence + 1).all()  # every window column hears the tone


def test_log_zero_padding_appends_zeros_after_the_same_columns():
    silence_mel = get_modality("audio", **TINY_AUDIO).window_log_mel(_tone_clip(), centre=1.5)
    modality = get_modality("audio", **TINY_AUDIO, pad_columns="log-zero")
    mel = modality.window_log_mel(_tone_clip(), centre=1.5)
    assert mel.shape == (4, 25)
    np.testing.assert_array_equal(mel[:, COLUMNS:], 0.0)  # all 4 padding columns, after the window
    np.testing.assert_array_equal(mel[:, :COLUMNS], silence_mel[:, 2:2 + COLUMNS])  # the window is unchanged


def test_log_zero_padding_in_the_image():
    # Log 0 normalises to (0 + 4.268) / 9.138 = 0.46706; fixed scaling maps (-1.05, 1.5) to 0..255:
    # (0.46706 + 1.05) / 2.55 * 255 = 151.71 -> 152.
    modality = get_modality("audio", **TINY_AUDIO, pad_columns="log-zero")
    image = modality.window_image(_tone_clip(), centre=1.5)
    assert image.shape == (4, 25, 3)
    np.testing.assert_array_equal(image[:, COLUMNS:, :], 152)


def test_unknown_padding_is_an_error():
    with pytest.raises(VlynxError, match="pad_columns"):
        get_modality("audio", pad_columns="zeros")


# ----- dist_per_image ---------------------------------------------------------------------------------
def _distribution_setup(tiny_backbone):
    from vlynx.adapters import LoraSettings, add_vision_adapter

    backbone = tiny_backbone
    add_vision_adapter(backbone, "depth", LoraSettings(rank=4, alpha=8, dropout=0.0))
    generator = torch.Generator().manual_seed(5)
    # (B=2, F*k = 3 frames x 2 images, 3, S, S): [depth0, normals0, depth1, normals1, depth2, normals2]
    pixels = torch.randn(2, 6, 3, backbone.image_size, backbone.image_size, generator=generator)
    mean_v = torch.randn(backbone.llm_hidden_size, generator=generator, dtype=torch.float64)
    var_v = torch.rand(backbone.llm_hidden_size, generator=generator, dtype=torch.float64) + 0.5
    return backbone, pixels, mean_v, var_v


def _hand_l2norm_loss(rows: torch.Tensor, mean_v: torch.Tensor, var_v: torch.Tensor) -> torch.Tensor:
    """Eq. (7)-(8) by hand: population mean/variance over the rows, unsquared L2 norms."""
    n = rows.shape[0]
    mean = rows.sum(0) / n
    var = ((rows - mean) ** 2).sum(0) / n
    return (mean - mean_v).pow(2).sum().sqrt() + (var - var_v).pow(2).sum().sqrt()


@pytest.mark.parametrize("per_image", [False, True])
def test_dist_per_image_chooses_which_tokens_eq7_sees(tiny_backbone, per_image):
    from vlynx.adapters import route
    from vlynx.losses import AlignmentLossSettings, alignment_losses

    backbone, pixels, mean_v, var_v = _distribution_setup(tiny_backbone)
    layout = backbone.layout
    shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
    settings = AlignmentLossSettings(no_attn=True, dist_per_image=per_image)
    got = alignment_losses(backbone, "depth", pixels, torch.zeros(shape), torch.zeros(shape), mean_v, var_v,
                           settings, images_per_frame=2)

    with torch.no_grad(), route(backbone, "depth"):
        tokens = backbone.encode_frames(pixels).double()  # (2, 6 images x 4 tokens + newline, D)
    assert tokens.shape[1] == 6 * 4 + 1  # tiny model: 2x2 pooled tokens per image
    if per_image:
        rows = tokens.reshape(-1, tokens.shape[-1])  # 2 x 25 rows: every image's tokens and the newline
    else:
        frames = []
        for sample in tokens:
            images = [sample[4 * i:4 * i + 4] for i in range(6)]
            frames += [(images[2 * f] + images[2 * f + 1]) / 2 for f in range(3)]  # depth_f with normals_f
            frames.append(sample[-1:])  # the newline token
        rows = torch.cat(frames)
        assert rows.shape[0] == 2 * (3 * 4 + 1)
    torch.testing.assert_close(got["dist"].double(), _hand_l2norm_loss(rows, mean_v, var_v), rtol=1e-4, atol=1e-6)


def test_dist_per_image_is_an_align_setting_and_reaches_the_loss():
    from vlynx.align import loss_settings
    from vlynx.stage_configs import AlignConfig

    config = AlignConfig().updated({"dist_per_image": True})
    assert loss_settings(config).dist_per_image is True
    assert loss_settings(AlignConfig()).dist_per_image is False
