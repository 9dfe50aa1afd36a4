"""The frozen-token cache of tuning: bit-equal tokens, reuse across runs, refusal on another fingerprint,
and the same bundle with and without it."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vlynx.adapters import add_vision_adapter, load_adapter
from vlynx.backbones import load_backbone, preset_config
from vlynx.backbones.llava_onevision import LlavaOnevisionBackbone
from vlynx.conversation import encode_blocks, read_streams
from vlynx.errors import VlynxError
from vlynx.media import read_video, write_video
from vlynx.modalities import get_modality
from vlynx.token_cache import MANIFEST, TokenCache, media_identity, run_fingerprint, transform_fingerprint
from vlynx.tune import TuneConfig, run_tune
from vlynx.word_tokenizer import build_word_tokenizer

FRAMES = 2
QUESTIONS = [("what colour is the ball ?", "red ball"), ("which sound is it ?", "a drum"),
             ("what is it doing ?", "bird sings")]


class Negative:
    """A stand-in modality transform: the video's frames with inverted colours."""

    def frames(self, source, num_frames, timestamps=None):
        return 255 - read_video(source, num_frames).frames


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny checkpoint + word tokenizer, three clips with their conversations, an aligned 'negative' adapter."""
    from transformers import LlavaOnevisionForConditionalGeneration

    root = tmp_path_factory.mktemp("token-cache-world")
    torch.manual_seed(5)
    LlavaOnevisionForConditionalGeneration(preset_config("tiny")).save_pretrained(root / "model")
    build_word_tokenizer([" ".join(f"{q} {a}" for q, a in QUESTIONS)]).save_pretrained(root / "model")
    entries = []
    for index, (question, answer) in enumerate(QUESTIONS):
        frames = np.zeros((4, 32, 32, 3), np.uint8)
        frames[:] = (60 * index, 200 - 50 * index, 90)
        frames[:, 8:24, 4 + 6 * index:12 + 6 * index] = 255
        write_video(root / "media" / f"clip{index}.mp4", frames, fps=4)
        entries.append({"id": f"c{index}", "video": f"clip{index}.mp4",
                        "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                          {"from": "gpt", "value": answer}]})
    (root / "data.json").write_text(json.dumps(entries))
    backbone = load_backbone(root / "model")
    add_vision_adapter(backbone, "negative")
    with torch.no_grad():
        for key, parameter in backbone.model.named_parameters():
            if ".negative." in key and "lora_B" in key:
                parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(7))
    backbone.peft_model.save_pretrained(root / "aligned")
    return root


def tune(world, out, **overrides):
    """A short run: batch 2 of 3 examples over 4 steps, so examples meet in differently shuffled batches."""
    settings = dict(model=str(world / "model"), data=str(world / "data.json"), media_root=str(world / "media"),
                    out=str(out), modalities=["negative"], vision_adapters=[str(world / "aligned")], frames=FRAMES,
                    lr=1e-2, batch_size=2, max_steps=4, warmup_ratio=0.0, logging_steps=1, save_steps=1000,
                    llm_rank=4, llm_alpha=8, vision_rank=4, llm_dropout=0.1, vision_dropout=0.1)
    settings.update(overrides)
    return run_tune(TuneConfig(**settings), transforms={"negative": Negative()})


def bundle_weights(bundle):
    files = sorted(p.relative_to(bundle) for p in bundle.rglob("*.safetensors"))
    assert files  # the LLM adapter at least
    return {str(f): load_file(bundle / f) for f in files}


@pytest.fixture
def encoder_calls(monkeypatch):
    """How many batches went through the vision encoder, and how many examples' media were decoded."""
    counts = {"encoder": 0, "media": 0}
    encode_frames, read = LlavaOnevisionBackbone.encode_frames, read_streams

    def counted_encode(self, pixel_values):
        counts["encoder"] += 1
        return encode_frames(self, pixel_values)

    def counted_read(*args, **kwargs):
        counts["media"] += 1
        return read(*args, **kwargs)

    monkeypatch.setattr(LlavaOnevisionBackbone, "encode_frames", counted_encode)
    monkeypatch.setattr("vlynx.tune.read_streams", counted_read)
    return counts


def test_cached_tokens_are_bit_equal_to_the_inference_path(world, tmp_path):
    tune(world, tmp_path / "bundle", token_cache=str(tmp_path / "cache"), max_steps=1)
    manifest = json.loads((tmp_path / "cache" / MANIFEST).read_text())
    cache = TokenCache.open(tmp_path / "cache", manifest)
    assert len(cache) == 2 * len(QUESTIONS)  # video and 'negative' per example, nothing else
    # independently: the bundle's inference path on a fresh model, one example at a time
    backbone = load_backbone(world / "model")
    load_adapter(backbone, world / "aligned" / "negative", "negative")
    for index in range(len(QUESTIONS)):
        video = world / "media" / f"clip{index}.mp4"
        streams = read_streams(backbone, video, {}, {"negative": Negative()}, FRAMES)
        expected = encode_blocks(backbone, {k: v[None] for k, v in streams.items()}, ["negative"])
        for stream, media, block in (("video", [video], expected[0]), ("negative", [video, video], expected[1])):
            stored = cache.get(cache.entry_key(stream, media))
            assert stored.dtype == block.dtype == torch.float32
            assert torch.equal(stored, block[0])


@pytest.mark.parametrize("train_vision_adapter", [False, True])
def test_bundle_is_bit_identical_with_and_without_the_cache(world, tmp_path, train_vision_adapter):
    # trained vision adapter: only the video stream is cached, the modality is encoded each step (dropout on)
    plain = tune(world, tmp_path / "plain", train_vision_adapter=train_vision_adapter)
    cached = tune(world, tmp_path / "cached", train_vision_adapter=train_vision_adapter,
                  token_cache=str(tmp_path / "cache"))
    assert cached.losses == plain.losses
    a, b = bundle_weights(plain.bundle), bundle_weights(cached.bundle)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[f][k], b[f][k]) for f in a for k in a[f])
    manifest = json.loads((tmp_path / "cache" / MANIFEST).read_text())
    assert sorted(manifest["streams"]) == (["video"] if train_vision_adapter else ["negative", "video"])


def test_a_second_run_decodes_and_encodes_nothing(world, tmp_path, encoder_calls):
    cache = str(tmp_path / "cache")
    first = tune(world, tmp_path / "first", token_cache=cache)
    # filled once: 2 batches (2 + 1 examples) x 2 streams; no step encodes or decodes
    assert encoder_calls == {"encoder": 4, "media": 3}
    second = tune(world, tmp_path / "second", token_cache=cache, lr=2e-2)  # another run on the same tokens
    assert encoder_calls == {"encoder": 4, "media": 3}
    assert second.losses[0] == first.losses[0]  # same first batch, same tokens: same loss before any update


def test_questions_on_one_clip_are_encoded_once(world, tmp_path, encoder_calls):
    entries = json.loads((world / "data.json").read_text())
    entries[1]["video"] = entries[0]["video"]  # two questions on clip0
    (tmp_path / "data.json").write_text(json.dumps(entries))
    tune(world, tmp_path / "bundle", data=str(tmp_path / "data.json"), token_cache=str(tmp_path / "cache"),
         max_steps=1)
    assert encoder_calls == {"encoder": 2, "media": 2}  # one batch of the 2 clips, 2 streams
    assert len(TokenCache.open(tmp_path / "cache", json.loads((tmp_path / "cache" / MANIFEST).read_text()))) == 4


def test_a_video_only_run_shares_its_video_tokens_with_a_modality_run(world, tmp_path, encoder_calls):
    cache = str(tmp_path / "cache")
    tune(world, tmp_path / "video-only", token_cache=cache, modalities=[], vision_adapters=[], max_steps=1)
    assert encoder_calls["encoder"] == 2  # the video stream, 2 batches
    tune(world, tmp_path / "with-negative", token_cache=cache, max_steps=1)
    # the fill encodes whole batches of every cached stream: video again (2) + negative (2), nothing per step
    assert encoder_calls["encoder"] == 6
    manifest = json.loads((tmp_path / "cache" / MANIFEST).read_text())
    assert sorted(manifest["streams"]) == ["negative", "video"]


def test_a_changed_adapter_is_refused_before_training(world, tmp_path, encoder_calls):
    cache = str(tmp_path / "cache")
    tune(world, tmp_path / "first", token_cache=cache, max_steps=1)
    changed = tmp_path / "aligned"
    shutil.copytree(world / "aligned", changed)
    weights_file = changed / "negative" / "adapter_model.safetensors"
    weights = load_file(weights_file)
    name = next(k for k in weights if "lora_B" in k)
    weights[name] = weights[name] + 1e-3
    save_file(weights, weights_file)
    calls = dict(encoder_calls)
    with pytest.raises(VlynxError, match=r"streams\.negative\.adapter\.weights: recorded '[0-9a-f]+', now"):
        tune(world, tmp_path / "second", token_cache=cache, vision_adapters=[str(changed)])
    assert encoder_calls == calls and not (tmp_path / "second").exists()


@pytest.fixture
def fingerprint(tiny_backbone):
    def make(frames=FRAMES, **audio_settings):
        audio = {"adapter": {"weights": "a" * 64, "config": "b" * 64},
                 "transform": transform_fingerprint(get_modality("audio", **audio_settings), audio_settings)}
        return run_fingerprint(tiny_backbone, frames, {"video": {}, "audio": audio})
    return make


def test_other_frames_or_transform_settings_are_refused_naming_the_field(fingerprint, tmp_path):
    TokenCache.open(tmp_path, fingerprint())
    with pytest.raises(VlynxError, match="frames: recorded 2, now 3"):
        TokenCache.open(tmp_path, fingerprint(frames=3))
    with pytest.raises(VlynxError, match=r"streams\.audio\.transform\.settings\.window_s: recorded 2\.0, now 1\.0"):
        TokenCache.open(tmp_path, fingerprint(window_s=1.0))
    # the defaults are recorded resolved: naming the default explicitly is the same transform
    assert TokenCache.open(tmp_path, fingerprint(window_s=2.0)).fingerprint["frames"] == FRAMES


def test_another_model_is_refused(fingerprint, tmp_path):
    TokenCache.open(tmp_path, fingerprint())
    other = load_backbone("tiny", seed=1)
    with pytest.raises(VlynxError, match=r"model\.encoder_weights: recorded"):
        TokenCache.open(tmp_path, run_fingerprint(other, FRAMES, {"video": {}}))


def test_concurrent_writers_each_add_shards_and_a_reopened_cache_sees_all(fingerprint, tmp_path):
    first, second = TokenCache.open(tmp_path, fingerprint()), TokenCache.open(tmp_path, fingerprint())
    a, b = torch.randn(5, 4).to(torch.bfloat16), torch.arange(6.0).reshape(2, 3)
    first.put({"a": a})
    second.put({"b": b})
    assert "b" not in first  # each sees its own until it re-reads the folder
    first.refresh()
    again = TokenCache.open(tmp_path, fingerprint())
    for cache in (first, again):
        assert cache.get("a").dtype == torch.bfloat16 and torch.equal(cache.get("a"), a)
        assert torch.equal(cache.get("b"), b)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and not list(tmp_path.glob(".*tmp*"))


def test_a_rewritten_media_file_gets_a_new_key(fingerprint, tmp_path):
    cache = TokenCache.open(tmp_path / "cache", fingerprint())
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"12345")
    key = cache.entry_key("video", [clip])
    assert cache.entry_key("video", [clip]) == key
    os.utime(clip, ns=(clip.stat().st_atime_ns, clip.stat().st_mtime_ns + 1))
    assert cache.entry_key("video", [clip]) != key
    assert cache.entry_key("audio", [clip]) != cache.entry_key("video", [clip])
    folder = tmp_path / "scene"
    (folder / "color").mkdir(parents=True)
    (folder / "color" / "0.jpg").write_bytes(b"x")
    before = media_identity(folder)
    (folder / "color" / "0.jpg").write_bytes(b"xy")  # the folder's own mtime does not change
    assert media_identity(folder) != before


def test_a_damaged_shard_or_a_folder_without_manifest_is_a_clear_error(fingerprint, tmp_path):
    TokenCache.open(tmp_path / "cache", fingerprint()).put({"a": torch.zeros(2)})
    shard = next((tmp_path / "cache").glob("*.safetensors"))
    shard.write_bytes(b"not a safetensors file")
    with pytest.raises(VlynxError, match="cannot read a token-cache shard.*delete it"):
        TokenCache.open(tmp_path / "cache", fingerprint())
    (tmp_path / "cache" / MANIFEST).unlink()
    with pytest.raises(VlynxError, match=f"holds token shards but no {MANIFEST}"):
        TokenCache.open(tmp_path / "cache", fingerprint())
