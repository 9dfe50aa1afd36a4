"""Reference statistics (eq. 2-3) against a direct computation on the tiny model."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vlynx.errors import VlynxError
from vlynx.media import read_video, write_video
from vlynx.reference import (
    ReferenceStats,
    VideoSource,
    compute_reference,
    load_reference,
    save_reference,
    stability_report,
)

FRAMES = 3


def write_videos(directory: Path, count: int, seed: int) -> list[Path]:
    """`count` tiny random 32x32 videos of 6 frames (their content differs per seed)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        frames = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
        paths.append(write_video(directory / f"video{index}.mp4", frames, fps=4))
    return paths


def direct_statistics(backbone, paths: list[Path]) -> dict[str, torch.Tensor]:
    """Stack every frame's K/V (hooks on k_proj/v_proj in a plain encoder forward) and every token; take mean/var."""
    layout = backbone.layout
    outputs: dict[str, list[torch.Tensor]] = {"k": [], "v": []}

    def hook(kind: str, layer: int):
        def record(module, inputs, output):  # (frames, positions, hidden) -> (frames, heads, positions, head_dim)
            heads = output.view(output.shape[0], output.shape[1], layout.num_heads, layout.head_dim).transpose(1, 2)
            outputs[kind].append((layer, heads.double()))
        return record

    handles = []
    for layer, attention in enumerate(backbone.attention_modules()):
        handles.append(attention.k_proj.register_forward_hook(hook("k", layer)))
        handles.append(attention.v_proj.register_forward_hook(hook("v", layer)))
    tokens = []
    try:
        with torch.no_grad():
            for path in paths:
                pixels = backbone.preprocess_frames(read_video(path, FRAMES).frames)  # (F, 3, S, S)
                backbone.vision_tower(pixel_values=pixels)
        for handle in handles:
            handle.remove()
        handles = []
        with torch.no_grad():
            for path in paths:
                pixels = backbone.preprocess_frames(read_video(path, FRAMES).frames)
                tokens.append(backbone.encode_frames(pixels[None])[0].double())  # (T, D)
    finally:
        for handle in handles:
            handle.remove()

    def mean_over_frames(kind: str) -> torch.Tensor:
        per_layer = [torch.cat([t for layer, t in outputs[kind] if layer == index]).mean(0)
                     for index in range(layout.num_layers)]
        return torch.stack(per_layer)  # (layers, heads, positions, head_dim)

    all_tokens = torch.cat(tokens)
    return {"keys": mean_over_frames("k"), "values": mean_over_frames("v"), "token_mean": all_tokens.mean(0),
            "token_var": all_tokens.var(0, unbiased=False), "tokens": torch.tensor(all_tokens.shape[0])}


def assert_same_statistics(result: ReferenceStats, expected: dict[str, torch.Tensor]) -> None:
    torch.testing.assert_close(result.keys.double(), expected["keys"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.values.double(), expected["values"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.token_mean, expected["token_mean"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(result.token_var, expected["token_var"], rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("reference-videos")
    return {"a": write_videos(root / "a", 3, seed=1), "b": write_videos(root / "b", 2, seed=2)}


def test_matches_direct_computation_overall_and_per_source(tiny_backbone, videos):
    sources = [VideoSource("a", tuple(videos["a"])), VideoSource("b", tuple(videos["b"]))]
    # batch size 2 puts a video of each source into one encoder pass
    result = compute_reference(tiny_backbone, sources, FRAMES, batch_size=2)

    expected = direct_statistics(tiny_backbone, videos["a"] + videos["b"])
    assert_same_statistics(result, expected)
    assert result.keys.dtype == torch.float32 and result.token_var.dtype == torch.float64
    layout = tiny_backbone.layout
    assert result.keys.shape == (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
    per_video = FRAMES * 2 * 2 + 1  # 4x4 grid pooled to 2x2 per frame, one newline per video
    assert result.counts == {"videos": 5, "frames": 5 * FRAMES, "tokens": 5 * per_video}
    assert int(expected["tokens"]) == 5 * per_video
    assert result.sources == {"a": {"videos": 3, "frames": 9, "tokens": 3 * per_video},
                              "b": {"videos": 2, "frames": 6, "tokens": 2 * per_video}}
    only_b = direct_statistics(tiny_backbone, videos["b"])
    torch.testing.assert_close(result.source_keys["b"].double(), only_b["keys"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.source_values["b"].double(), only_b["values"], rtol=1e-5, atol=1e-5)
    assert result.fingerprint == tiny_backbone.fingerprint() and result.frames_per_video == FRAMES


def test_vision_adapters_are_bypassed(tiny_backbone, videos):
    from vlynx.adapters import LoraSettings, add_vision_adapter

    sources = [VideoSource("a", tuple(videos["a"][:2]))]
    base = compute_reference(tiny_backbone, sources, FRAMES, batch_size=2)
    add_vision_adapter(tiny_backbone, "audio", LoraSettings(rank=2, alpha=4))
    with torch.no_grad():  # a trained-looking adapter: nonzero B, so it would change K/V if it ran
        for name, parameter in tiny_backbone.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_()
    with_adapter = compute_reference(tiny_backbone, sources, FRAMES, batch_size=2)
    assert torch.equal(base.keys, with_adapter.keys) and torch.equal(base.token_var, with_adapter.token_var)


def test_corrupt_video_is_skipped_and_reported_with_workers(tiny_backbone, videos, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(5).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    missing = tmp_path / "missing.mp4"
    listed = (videos["a"][0], corrupt, videos["a"][1], missing, videos["a"][2])
    result = compute_reference(tiny_backbone, [VideoSource("a", listed)], FRAMES, batch_size=2, workers=2)

    assert [entry["path"] for entry in result.skipped] == [str(corrupt), str(missing)]
    assert all(entry["reason"] for entry in result.skipped)
    assert "not found" in result.skipped[1]["reason"]
    assert result.counts["videos"] == 3
    assert_same_statistics(result, direct_statistics(tiny_backbone, videos["a"]))
    saved = load_reference(save_reference(result, tmp_path / "ref.safetensors"))
    assert saved.skipped == result.skipped


def test_fails_only_when_nothing_usable_remains(tiny_backbone, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(3000))
    with pytest.raises(VlynxError, match="no usable reference video"):
        compute_reference(tiny_backbone, [VideoSource("x", (corrupt,))], FRAMES)


def test_resume_equals_uninterrupted(tiny_backbone, videos, tmp_path, monkeypatch):
    import vlynx.reference.compute as reference_module  # where videos are read

    sources = [VideoSource("a", tuple(videos["a"])), VideoSource("b", tuple(videos["b"]))]
    uninterrupted = compute_reference(tiny_backbone, sources, FRAMES, batch_size=2)

    checkpoint = tmp_path / "ref.safetensors.checkpoints"
    reads = []

    def interrupted_read(path, num_frames):
        if len(reads) == 3:  # the 4th video: the run is killed after the first checkpoint (2 videos)
            raise KeyboardInterrupt
        reads.append(path)
        return read_video(path, num_frames)

    monkeypatch.setattr(reference_module, "read_video", interrupted_read)
    with pytest.raises(KeyboardInterrupt):
        compute_reference(tiny_backbone, sources, FRAMES, batch_size=2, checkpoint_dir=checkpoint,
                          checkpoint_every=2)
    assert checkpoint.exists()

    reads.clear()
    monkeypatch.setattr(reference_module, "read_video", lambda path, n: reads.append(path) or read_video(path, n))
    resumed = compute_reference(tiny_backbone, sources, FRAMES, batch_size=2, checkpoint_dir=checkpoint,
                                checkpoint_every=2, resume=True)
    assert reads == list(videos["a"][2:] + videos["b"])  # only what the checkpoint did not cover
    for name in ("keys", "values", "token_mean", "token_var"):
        torch.testing.assert_close(getattr(resumed, name), getattr(uninterrupted, name), rtol=0, atol=1e-12)
    assert resumed.counts == uninterrupted.counts and resumed.sources == uninterrupted.sources

    other_frames = [VideoSource("a", tuple(videos["a"]))]  # a different job must not pick the checkpoint up
    with pytest.raises(VlynxError, match="different run"):
        compute_reference(tiny_backbone, other_frames, FRAMES, checkpoint_dir=checkpoint, resume=True)
    (checkpoint / "rank0-of-1.safetensors").rename(checkpoint / "rank1-of-2.safetensors")  # as if from 2 ranks
    with pytest.raises(VlynxError, match="different run.*another number of ranks"):
        compute_reference(tiny_backbone, sources, FRAMES, checkpoint_dir=checkpoint, resume=True)


def test_save_load_round_trip_and_fingerprint_refusal(tiny_backbone, videos, tmp_path):
    from safetensors.torch import save_file

    from vlynx.backbones import load_backbone

    result = compute_reference(tiny_backbone, [VideoSource("a", tuple(videos["a"][:2]))], FRAMES)
    path = save_reference(result, tmp_path / "ref.safetensors")
    loaded = load_reference(path, tiny_backbone, frames_per_video=FRAMES)
    for name in ("keys", "values", "token_mean", "token_var"):
        assert torch.equal(getattr(loaded, name), getattr(result, name))
    assert (loaded.counts, loaded.sources, loaded.fingerprint) == (result.counts, result.sources, result.fingerprint)
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file

    other_weights = load_backbone("tiny", seed=1)
    with pytest.raises(VlynxError, match="different model: weights"):
        load_reference(path, other_weights)
    with pytest.raises(VlynxError, match="3 frames per video.*uses 8"):
        load_reference(path, tiny_backbone, frames_per_video=8)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"keys": torch.zeros(1)}, str(foreign))
    with pytest.raises(VlynxError, match="not a vlynx reference"):
        load_reference(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 50)
    with pytest.raises(VlynxError, match="garbage.safetensors"):
        load_reference(garbage)


def test_stability_report_hand_values():
    shape = (2, 1, 2, 2)
    # source s1 has keys 1, s2 has keys 3 in layer 1 (mean 2): |K| = 2, var = ((1-2)^2 + (3-2)^2) / 2 = 1
    source_keys = {"s1": torch.ones(shape), "s2": torch.full(shape, 3.0)}
    source_keys["s1"][1], source_keys["s2"][1] = -0.5, -0.5  # layer 2: identical sources, variance 0
    keys = (source_keys["s1"] + source_keys["s2"]) / 2
    values = torch.full(shape, 0.1)
    source_values = {"s1": torch.full(shape, 0.0), "s2": torch.full(shape, 0.2)}
    reference = ReferenceStats(
        keys=keys, values=values, token_mean=torch.zeros(4, dtype=torch.float64),
        token_var=torch.ones(4, dtype=torch.float64), fingerprint={}, frames_per_video=1,
        counts={"videos": 2, "frames": 2, "tokens": 2}, sources={"s1": {}, "s2": {}},
        source_keys=source_keys, source_values=source_values,
    )
    first, second = stability_report(reference)
    assert (first.layer, first.key_magnitude, first.key_variance, first.key_dominance) == (1, 2.0, 1.0, 2.0)
    assert math.isclose(first.value_magnitude, 0.1, rel_tol=1e-6)
    assert math.isclose(first.value_variance, 0.01, rel_tol=1e-5)
    assert math.isclose(first.value_dominance, 10.0, rel_tol=1e-5)
    assert second.key_magnitude == 0.5 and second.key_variance == 0.0 and math.isinf(second.key_dominance)
    single = ReferenceStats(keys=keys, values=values, token_mean=reference.token_mean,
                            token_var=reference.token_var, fingerprint={}, frames_per_video=1,
                            counts=reference.counts, sources={"s1": {}})
    assert stability_report(single)[0].key_variance is None


def test_run_reference_writes_what_it_returns(videos, tmp_path):
    from vlynx.reference import run_reference
    from vlynx.stage_configs import ReferenceConfig

    out = tmp_path / "ref.safetensors"
    config = ReferenceConfig(model="tiny", videos=[str(videos["a"][0].parent)], frames=FRAMES, out=str(out),
                             workers=0, device="cpu")
    result = run_reference(config)
    saved = load_reference(out)
    for name in ("keys", "values", "token_mean", "token_var"):
        assert torch.equal(getattr(saved, name), getattr(result, name))
    assert result.counts["videos"] == 3 and not (tmp_path / "ref.safetensors.checkpoints").exists()


def test_run_reference_checks_settings_and_videos_before_loading_the_model(tmp_path, monkeypatch):
    from vlynx.reference import run_reference
    from vlynx.stage_configs import ReferenceConfig

    def no_model(*args, **kwargs):
        raise AssertionError("cheap checks come before the model is loaded")

    monkeypatch.setattr("vlynx.backbones.load_backbone", no_model)
    (tmp_path / "empty").mkdir()
    write_videos(tmp_path / "some", 1, seed=4)
    base = ReferenceConfig(model="tiny", videos=[str(tmp_path / "some")], frames=FRAMES,
                           out=str(tmp_path / "ref.safetensors"))
    for change, message in [({"frames": 0}, "frames and batch_size must be >= 1"),
                            ({"videos": []}, "missing --videos"),
                            ({"videos": [str(tmp_path / "absent")]}, "absent: no such file"),
                            ({"videos": [str(tmp_path / "empty")]}, "empty: lists no videos"),
                            ({"sources": ["a", "b"]}, "1 video sets but 2 source names")]:
        with pytest.raises(VlynxError, match=message):
            run_reference(base.updated(change))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "some"]


def test_bfloat16_model_gives_statistics_close_to_float32_still_accumulated_in_float32_and_float64(videos):
    """A bfloat16 encoder (the memory-saving way to compute a reference) changes the statistics only by rounding."""
    from vlynx.backbones import load_backbone

    sources = [VideoSource("a", tuple(videos["a"]))]
    plain = compute_reference(load_backbone("tiny", seed=0), sources, FRAMES, batch_size=2)
    backbone = load_backbone("tiny", seed=0)
    backbone.model.to(torch.bfloat16)  # the same weights, rounded
    bf16 = compute_reference(backbone, sources, FRAMES, batch_size=2)
    assert bf16.keys.dtype == bf16.values.dtype == torch.float32
    assert bf16.token_mean.dtype == bf16.token_var.dtype == torch.float64
    # bf16 rounds each op to 2^-9 relative; through the tiny encoder the largest difference measured
    # 7.4e-3 (values), 4.3e-3 (keys, token variance), 2.7e-3 (token mean) of the tensor's largest entry
    for name in ("keys", "values", "token_mean", "token_var"):
        expected = getattr(plain, name)
        torch.testing.assert_close(getattr(bf16, name), expected, rtol=0,
                                   atol=3e-2 * expected.abs().max().item(), msg=name)
