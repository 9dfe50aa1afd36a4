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
    with pytest.raises(VlynxError, match="no such bundle or model directory"):
        VLynx.from_pretrained("no-such-bundle")  # not looked up on the hub: a hub id is org/name



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
    (["--audio", "CLIP"], "has no audio modality"),
])
def test_cli_answer_bad_input_is_one_line(checkpoint, clip, tmp_path, capsys, extra, problem):
    backbone = load_backbone(checkpoint)
    add_llm_adapter(backbone)
    VLynx(backbone, [], num_frames=2).save_pretrained(tmp_path / "plain")
    extra = [str(clip) if item == "CLIP" else item for item in extra]
    arguments = ["answer", "--model", str(tmp_path / "plain"), "--video", str(clip), *extra, "what ?"]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and problem in error and "Traceback" not in error


def test_cli_tune_reports_missing_settings(tmp_path, capsys):
    assert main(["tune", "--data", "x.json"]) == 2
    assert "missing --model, --out" in capsys.readouterr().err


# ----- the model's context, empty answers, input checks -------------------------------------

CONTEXT = 1024  # the tiny preset's max_position_embeddings
CHAT_TOKENS = 14  # ChatML around a question, by hand: "<|im_start|> system You are a helpful assistant . <|im_end|>"
# (9), "<|im_start|> user" (2), "<|im_end|> <|im_start|> assistant" (3); the word tokenizer makes one token a word
VIDEO_TOKENS = 2 * 4 + 1  # 2 frames x (32 px / 8 px patches = 4x4, pooled to 2x2) + the newline token


def test_a_prompt_that_fills_the_context_is_an_error_naming_its_token_counts(checkpoint, clip):
    model = audio_model(checkpoint)  # video block + audio block
    media = 2 * VIDEO_TOKENS
    words = CONTEXT - CHAT_TOKENS - media  # the prompt alone fills the context: no room for one answer token
    counts = rf"prompt is {CONTEXT} tokens \(text {CONTEXT - media} \+ media {media}\), the model's context is {CONTEXT}"
    with pytest.raises(VlynxError, match=counts):
        model.answer(video=clip, question="red " * words)
    with pytest.raises(VlynxError, match=f"request 1: {counts}"):
        model.generate([{"video": clip, "question": "red"}, {"video": clip, "question": "red " * words}])


def test_answers_are_capped_to_the_context_the_prompt_leaves(checkpoint, clip):
    model = VLynx(load_backbone(checkpoint), [], num_frames=2)
    room = 3
    question = "red " * (CONTEXT - CHAT_TOKENS - VIDEO_TOKENS - room)
    capped = model.answer(video=clip, question=question, max_new_tokens=10)
    # the checkpoint's output head never picks a special token, so an answer runs to its length limit
    assert capped == model.answer(video=clip, question=question, max_new_tokens=room)
    assert len(capped.split()) == room


@pytest.fixture(scope="module")
def mute_checkpoint(checkpoint, tmp_path_factory):
    """The checkpoint with a zero output head: every step picks id 0 (<pad>), so every answer decodes empty."""
    backbone = load_backbone(checkpoint)
    with torch.no_grad():
        backbone.model.lm_head.weight.zero_()
    directory = tmp_path_factory.mktemp("mute")
    backbone.model.save_pretrained(directory)
    backbone.tokenizer.save_pretrained(directory)
    return directory


def test_an_empty_answer_is_logged_and_flagged_in_json(mute_checkpoint, clip, tmp_path, capsys, caplog):
    backbone = load_backbone(mute_checkpoint)
    add_llm_adapter(backbone)
    VLynx(backbone, [], num_frames=2).save_pretrained(tmp_path / "mute")
    with caplog.at_level("WARNING", logger="vlynx"):
        assert main(["answer", "--model", str(tmp_path / "mute"), "--video", str(clip), "--json", "red ?"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == ""
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "the model returned an empty answer (only special tokens, or the end of its turn at once)"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="vlynx"):
        assert main(["answer", "--model", str(tmp_path / "mute"), "--video", str(clip), "--json", "red ?"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["answer"] == "" and printed["empty"] is True


def test_library_refuses_doubled_placeholders_and_no_answer_tokens(checkpoint, clip):
    model = VLynx(load_backbone(checkpoint), [], num_frames=2)
    with pytest.raises(VlynxError, match="^the question has 2 '<image>' placeholders"):
        model.answer(video=clip, question="<image> what colour <image> ?")
    with pytest.raises(VlynxError, match="max_new_tokens must be at least 1, got 0"):
        model.answer(video=clip, question="what colour ?", max_new_tokens=0)
    # one placeholder places the media; at the start it is the same prompt as none
    assert model.answer(video=clip, question="<image>\nwhat colour ?", max_new_tokens=3) == model.answer(
        video=clip, question="what colour ?", max_new_tokens=3)


@pytest.mark.parametrize("extra, question, problem", [
    ([], "<image> what colour <image> ?", "the question has 2 '<image>' placeholders; at most one"),
    ([], "  ", "the question is empty"),
    (["--max-new-tokens", "0"], "what ?", "--max-new-tokens must be at least 1, got 0"),
    (["--frames", "0"], "what ?", "--frames must be at least 1, got 0"),
    (["--video", "gone.mp4"], "what ?", "gone.mp4: video file not found"),
    (["--audio", "gone.wav"], "what ?", "gone.wav: audio input not found"),
])
def test_cli_answer_checks_its_input_before_loading_the_model(clip, tmp_path, capsys, extra, question, problem):
    arguments = ["answer", "--model", str(tmp_path / "no-bundle-here"), "--video", str(clip), *extra, question]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and problem in error, error


def test_cli_answer_passes_trust_remote_code_to_the_loader(checkpoint, clip, tmp_path, capsys, monkeypatch):
    import vlynx.backbones

    backbone = load_backbone(checkpoint)
    add_llm_adapter(backbone)
    VLynx(backbone, [], num_frames=2).save_pretrained(tmp_path / "plain")
    seen = []

    def recording_load(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return load_backbone(*args, **kwargs)

    monkeypatch.setattr(vlynx.backbones, "load_backbone", recording_load)
    for flag in ([], ["--trust-remote-code"]):
        assert main(["answer", "--model", str(tmp_path / "plain"), "--video", str(clip), *flag, "red ?"]) == 0
    assert seen == [False, True]


# ----- where the base model is recorded -------------------------------------------------------


def test_a_base_model_alone_answers_about_the_video(checkpoint, clip):
    base = VLynx.from_pretrained(checkpoint)
    assert base.modalities == [] and base.num_frames == 8
    direct = VLynx(load_backbone(checkpoint), [], num_frames=2)
    assert VLynx.from_pretrained(checkpoint, num_frames=2).answer(video=clip, question="what colour ?") == \
        direct.answer(video=clip, question="what colour ?")


def test_bundle_records_the_shipped_model_by_name(clip, tmp_path):
    backbone = load_backbone("miniworld")
    add_llm_adapter(backbone)
    VLynx(backbone, [], num_frames=2).save_pretrained(tmp_path / "bundle")
    assert json.loads((tmp_path / "bundle" / "vlynx_bundle.json").read_text())["base_model"] == "miniworld"
    assert VLynx.from_pretrained(tmp_path / "bundle").backbone.fingerprint() == backbone.fingerprint()


def test_bundle_beside_its_base_model_moves_with_it(checkpoint, clip, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(checkpoint, tmp_path / "old" / "base")
    backbone = load_backbone(tmp_path / "old" / "base")
    add_llm_adapter(backbone)
    randomize(backbone, "llm", 2, scale=0.1)
    model = VLynx(backbone, [], num_frames=2)
    before = model.answer(video=clip, question="what colour ?", max_new_tokens=4)
    model.save_pretrained(tmp_path / "old" / "bundle")
    assert json.loads((tmp_path / "old" / "bundle" / "vlynx_bundle.json").read_text())["base_model"] == "../base"
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    shutil.rmtree(tmp_path / "old")
    monkeypatch.chdir(tmp_path / "new" / "bundle" / "adapters")  # resolved against the bundle, not the cwd
    moved = VLynx.from_pretrained(tmp_path / "new" / "bundle")
    assert moved.answer(video=clip, question="what colour ?", max_new_tokens=4) == before
    # a base model outside the bundle's parent folder is recorded by its absolute path
    moved.save_pretrained(tmp_path / "elsewhere" / "deeper" / "bundle")
    recorded = json.loads((tmp_path / "elsewhere" / "deeper" / "bundle" / "vlynx_bundle.json").read_text())
    assert recorded["base_model"] == str((tmp_path / "new" / "base").resolve())
