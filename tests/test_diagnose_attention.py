"""Attention maps of a bundle (`vlynx diagnose --bundle`): the cached two-pass attention equals one full forward."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlynx.adapters import add_llm_adapter, add_vision_adapter

AUDIO = {"n_mels": 16, "window_s": 0.5, "time_steps": 32}
QUESTION = "what colour is the ball ?"


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, tmp_path_factory):
    from vlynx.backbones import load_backbone
    from vlynx.bundle import VLynx
    from vlynx.media import write_video

    root = tmp_path_factory.mktemp("attention")
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    for index in range(8):
        frames[index, 4:12, 2 + 3 * index:10 + 3 * index] = (250, 200, 0)
    audio = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)
    clip = write_video(root / "clip.mp4", frames, fps=8, audio=audio)
    backbone = load_backbone(tiny_checkpoint)
    add_vision_adapter(backbone, "audio")
    add_llm_adapter(backbone)
    VLynx(backbone, ["audio"], num_frames=2, modality_settings={"audio": AUDIO}).save_pretrained(root / "bundle")
    return root / "bundle", clip


def test_question_attention_equals_a_full_forward(bundle):
    from vlynx.bundle import VLynx
    from vlynx.conversation import encode_blocks, read_streams, splice_blocks, tokenize_question
    from vlynx.diagnose.attention import question_attention

    model = VLynx.from_pretrained(bundle[0])
    backbone = model.backbone
    streams = read_streams(backbone, bundle[1], {"audio": None}, model.transforms, model.num_frames)
    blocks = encode_blocks(backbone, {k: v[None] for k, v in streams.items()}, ["audio"])
    weights, first_media, count = question_attention(backbone, QUESTION, blocks)

    ids = tokenize_question(backbone, QUESTION)
    image = ids.index(backbone.model.config.image_token_id)
    assert first_media == image
    # the question's own tokens are the ones that spell it (the word tokenizer has one id per word)
    words = backbone.tokenizer.convert_ids_to_tokens(ids[image + 1:])
    start = words.index("what")
    assert count == len(QUESTION.split()) and words[start:start + count] == QUESTION.split()
    # one forward over the whole prompt, eager attention, the question's rows averaged by hand
    embeds = splice_blocks(backbone, [ids], blocks)["inputs_embeds"]
    media = sum(block.shape[1] for block in blocks)
    rows = slice(image + 1 + start + media - 1, image + 1 + start + media - 1 + count)
    backbone.language_model.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = backbone.model(inputs_embeds=embeds, output_attentions=True).attentions
    expected = torch.stack([layer[0, :, rows] for layer in attentions]).mean(dim=(0, 1, 2))
    assert torch.allclose(weights, expected, atol=1e-6)
    assert weights.sum() == pytest.approx(1.0, abs=1e-5)


def test_cli_draws_the_attention_maps(bundle, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from vlynx.cli import main

    out = tmp_path / "maps"
    assert main(["-q", "diagnose", "--bundle", str(bundle[0]), "--video", str(bundle[1]), "--audio", str(bundle[1]),
                 "--question", QUESTION, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["attention"]) == ["video", "audio"] and report["inputs"] == {"audio": str(bundle[1])}
    shares = [entry["share"] for entry in report["attention"].values()]
    assert all(0 < share < 1 for share in shares) and report["text_share"] == pytest.approx(1 - sum(shares))
    for entry in report["attention"].values():  # each stream: its frames' weights plus its newline token's
        assert sum(entry["per_frame"]) + entry["newline"] == pytest.approx(entry["share"], rel=1e-5)
    assert (out / "attention.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_refuses_an_input_the_bundle_has_no_adapter_for(bundle, tmp_path, capsys):
    from vlynx.cli import main

    assert main(["diagnose", "--bundle", str(bundle[0]), "--video", str(bundle[1]), "--depth", str(bundle[1]),
                 "--question", QUESTION, "--out", str(tmp_path / "o")]) == 2
    assert "no adapter for depth" in capsys.readouterr().err
