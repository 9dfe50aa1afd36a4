"""The model bundle: save/reload, modality plug-ins, fingerprints, `vlynx tune` / `vlynx answer` CLIs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlynx.adapters import add_llm_adapter, add_vision_adapter, encode
from vlynx.backbones import load_backbone, preset_config
from vlynx.bundle import VLynx
from vlynx.cli import main
from vlynx.conversation import encode_blocks, read_streams
from vlynx.errors import VlynxError
from vlynx.media import read_video, write_video
from vlynx.word_tokenizer import build_word_tokenizer

WORDS = "what colour is the ball ? which sound do you hear red green blue a bell drum"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import LlavaOnevisionForConditionalGeneration

    directory = tmp_path_factory.mktemp("bundle-model")
    torch.manual_seed(5)
    model = LlavaOnevisionForConditionalGeneration(preset_config("tiny"))
    tokenizer = build_word_tokenizer([WORDS])
    with torch.no_grad():  # a larger output head whose only winners are words, so answers are visible text
        model.lm_head.weight.normal_(0, 0.5)
        model.lm_head.weight[:6] = 0  # special tokens
        model.lm_head.weight[len(tokenizer):] = 0  # ids the tokenizer does not have
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 1 s clip with a moving square and a 440 Hz tone in its own audio track."""
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    for index in range(8):
        frames[index, 4:12, 2 + 3 * index:10 + 3 * index] = (250, 200, 0)
    audio = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)
    return write_video(tmp_path_factory.mktemp("clips") / "clip.mp4", frames, fps=8, audio=audio)


def randomize(backbone, name, seed, scale=0.2):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, parameter in backbone.model.named_parameters():
            if f".{name}." in key and "lora_" in key:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


AUDIO = {"n_mels": 16, "window_s": 0.5, "time_steps": 32}


def audio_model(checkpoint):
    backbone = load_backbone(checkpoint)
    add_vision_adapter(backbone, "audio")
    add_llm_adapter(backbone)
    randomize(backbone, "audio", 1)
    randomize(backbone, "llm", 2, scale=0.1)
    return VLynx(backbone, ["audio"], num_frames=2, modality_settings={"audio": AUDIO})


def test_bundle_round_trip_with_the_audio_modality(checkpoint, clip, tmp_path):
    model = audio_model(checkpoint)
    requests = [{"video": clip, "question": "which sound do you hear ?"},
                {"video": clip, "question": "what colour ?", "audio": clip}]
    before = model.generate(requests, max_new_tokens=5)
    assert all(before)
    # audio left out is read from the video's own track: same answer as naming the file explicitly
    assert model.answer(video=clip, question="what colour ?", max_new_tokens=5) == before[1]
    model.save_pretrained(tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / "vlynx_bundle.json").read_text())
    assert manifest["modalities"] == ["audio"] and manifest["modality_settings"] == {"audio": AUDIO}
    assert manifest["num_frames"] == 2 and manifest["backbone_fingerprint"]["weights"]
    reloaded = VLynx.from_pretrained(tmp_path / "bundle")
    assert reloaded.transforms["audio"].settings.n_mels == 16
    assert reloaded.generate(requests, max_new_tokens=5) == before
    # saving over an existing bundle replaces it whole and leaves no staging folders
    reloaded.save_pretrained(tmp_path / "bundle")
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["adapters", "tokenizer", "vlynx_bundle.json"]
    assert VLynx.from_pretrained(tmp_path / "bundle").generate(requests, max_new_tokens=5) == before


def test_bundle_refuses_a_different_base_model(checkpoint, tmp_path):
    from transformers import LlavaOnevisionForConditionalGeneration

    model = audio_model(checkpoint)
    model.save_pretrained(tmp_path / "bundle")
    torch.manual_seed(99)
    LlavaOnevisionForConditionalGeneration(preset_config("tiny")).save_pretrained(tmp_path / "other")
    with pytest.raises(VlynxError, match="not the one this bundle was trained on"):
        VLynx.from_pretrained(tmp_path / "bundle", base_model=tmp_path / "other")
    with pytest.raises(VlynxError, match="not a vlynx bundle"):
        VLynx.from_pretrained(tmp_path)



def test_saving_keeps_other_files_and_a_failed_save_keeps_the_old_bundle(checkpoint, tmp_path):
    model = audio_model(checkpoint)
    bundle = model.save_pretrained(tmp_path / "bundle")
    (bundle / "checkpoints").mkdir()  # e.g. a tuning run whose checkpoint_dir is inside its bundle
    (bundle / "checkpoints" / "state.json").write_text("{}")
    before = {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    model.backbone.tokenizer.save_pretrained = broken_save
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(bundle)
    assert {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in bundle.iterdir()) == ["adapters", "checkpoints", "tokenizer", "vlynx_bundle.json"]
    del model.backbone.tokenizer.save_pretrained
    model.save_pretrained(bundle)
    assert (bundle / "checkpoints" / "state.json").read_text() == "{}"
    assert sorted(p.name for p in bundle.iterdir()) == ["adapters", "checkpoints", "tokenizer", "vlynx_bundle.json"]


def test_pad_token_id_falls_back_to_end_of_sequence(checkpoint):
    backbone = load_backbone(checkpoint)
    assert backbone.pad_token_id == backbone.tokenizer.convert_tokens_to_ids("<pad>") == 0
    backbone.tokenizer.pad_token = None
    assert backbone.pad_token_id == backbone.tokenizer.convert_tokens_to_ids("<|im_end|>") == 3
    backbone.tokenizer.eos_token = None
    with pytest.raises(VlynxError, match="neither a pad nor an end-of-sequence token"):
        backbone.pad_token_id
    backbone.tokenizer = None
    with pytest.raises(VlynxError, match="no tokenizer"):
        backbone.pad_token_id


class Pairs:
    """Two images per frame (like depth + normals): the frame and its colour-inverted copy."""

    images_per_frame = 2

    def frames(self, source, num_frames, timestamps=None):
        frames = read_video(source, num_frames).frames
        return np.stack([image for frame in frames for image in (frame, 255 - frame)])


def test_two_images_per_frame_average_their_tokens(checkpoint, clip):
    backbone = load_backbone(checkpoint)
    add_vision_adapter(backbone, "pairs")
    randomize(backbone, "pairs", 3)
    streams = read_streams(backbone, clip, {}, {"pairs": Pairs()}, num_frames=2)
    assert streams["pairs"].shape == (4, 3, 32, 32)
    batch = {key: value[None] for key, value in streams.items()}
    block = encode_blocks(backbone, batch, ["pairs"], group={"pairs": 2})[1]
    assert block.shape == (1, backbone.tokens_per_video(2), 64)
    # independent: encode the plain and the inverted images as two videos, average token by token
    with torch.no_grad():
        plain = encode(backbone, batch["pairs"][:, 0::2], "pairs")
        inverted = encode(backbone, batch["pairs"][:, 1::2], "pairs")
    torch.testing.assert_close(block, (plain + inverted) / 2, atol=1e-5, rtol=1e-4)


def make_data(tmp_path, clip):
    entries = [{"id": "a", "video": str(clip),
                "conversations": [{"from": "human", "value": "<image>\nwhat colour is the ball ?"},
                                  {"from": "gpt", "value": "green"}]}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(e) for e in entries))
    return tmp_path / "data.jsonl"


def test_cli_tune_baseline_then_answer_json(checkpoint, clip, tmp_path, capsys):
    data = make_data(tmp_path, clip)
    code = main(["-q", "tune", "--model", str(checkpoint), "--data", str(data), "--modality", "", "--out",
                 str(tmp_path / "ft"), "--frames", "2", "--max-steps", "2", "--lr", "1e-3", "--llm-rank", "4"])
    assert code == 0
    assert "wrote bundle" in capsys.readouterr().out
    from vlynx.tune import TuneConfig

    config = TuneConfig.from_file(tmp_path / "ft" / "vlynx_config.yaml")
    assert config.modalities == [] and config.llm_rank == 4 and config.max_steps == 2
    assert config.llm_alpha == 1.0  # derived: rank / 4
    assert main(["answer", "--model", str(tmp_path / "ft"), "--video", str(clip), "--json", "--max-new-tokens",
                 "4", "what colour is the ball ?"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = VLynx.from_pretrained(tmp_path / "ft").answer(video=clip, question="what colour is the ball ?",
                                                              max_new_tokens=4)
    assert printed["answer"] == expected
    assert set(printed["timing"]) == {"load_s", "media_s", "generate_s"}


@pytest.mark.parametrize("extra, problem", [
    (["--video", "missing.mp4"], "file not found"),
    (["--audio", "x.wav"], "has no audio modality"),
])
def test_cli_answer_bad_input_is_one_line(checkpoint, clip, tmp_path, capsys, extra, problem):
    backbone = load_backbone(checkpoint)
    add_llm_adapter(backbone)
    VLynx(backbone, [], num_frames=2).save_pretrained(tmp_path / "plain")
    arguments = ["answer", "--model", str(tmp_path / "plain"), "--video", str(clip), *extra, "what ?"]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and problem in error and "Traceback" not in error


def test_cli_tune_reports_missing_settings(tmp_path, capsys):
    assert main(["tune", "--data", "x.json"]) == 2
    assert "missing --model, --out" in capsys.readouterr().err
