"""Forced choice on a tiny model: `VLynx.option_loglikelihoods` against a direct computation (the
model's forward on each prompt + option sequence alone, log-softmax, the option tokens' log-probs
summed), and `vlynx eval --protocol likelihood` picking the argmax of that computation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlynx.adapters import add_llm_adapter, add_vision_adapter
from vlynx.backbones import load_backbone, preset_config
from vlynx.bundle import VLynx
from vlynx.conversation import encode_blocks, read_streams, splice_blocks, tokenize_question
from vlynx.evaluate import evaluate
from vlynx.media import write_video
from vlynx.word_tokenizer import build_word_tokenizer

WORDS = "what is making the sound ? A B C D dog car bell bird a red green blue"
AUDIO = {"n_mels": 16, "window_s": 0.5, "time_steps": 32}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import LlavaOnevisionForConditionalGeneration

    directory = tmp_path_factory.mktemp("likelihood-model")
    torch.manual_seed(7)
    model = LlavaOnevisionForConditionalGeneration(preset_config("tiny"))
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)  # spread the scores, so that the options differ
    model.save_pretrained(directory)
    build_word_tokenizer([WORDS]).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    for index in range(8):
        frames[index, 4:12, 2 + 3 * index:10 + 3 * index] = (250, 200, 0)
    audio = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)
    return write_video(tmp_path_factory.mktemp("clips") / "clip.mp4", frames, fps=8, audio=audio)


@pytest.fixture(scope="module")
def model(checkpoint):
    """A bundle with an audio adapter and an LLM adapter, both non-zero."""
    backbone = load_backbone(checkpoint)
    add_vision_adapter(backbone, "audio")
    add_llm_adapter(backbone)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key, parameter in backbone.model.named_parameters():
            if "lora_" in key:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return VLynx(backbone, ["audio"], num_frames=2, modality_settings={"audio": AUDIO})


def direct_loglikelihood(model, request, option):
    """One option alone, unpadded: full logits, log-softmax, the option tokens' log-probs summed."""
    backbone = model.backbone
    prompt = tokenize_question(backbone, request["question"])
    answer = backbone.tokenizer(option, add_special_tokens=False)["input_ids"]
    streams = read_streams(backbone, request["video"], {}, model.transforms, model.num_frames)
    with torch.no_grad():
        blocks = encode_blocks(backbone, {k: v[None] for k, v in streams.items()}, model.modalities)
        inputs = splice_blocks(backbone, [prompt + answer], blocks)
        log_probs = torch.log_softmax(backbone.model(**inputs).logits[0].double(), dim=-1)  # (L, V)
    length = inputs["attention_mask"].shape[1]
    return sum(float(log_probs[length - len(answer) - 1 + i, token]) for i, token in enumerate(answer))


def test_option_loglikelihoods_equal_a_direct_computation(model, clip):
    request = {"video": str(clip), "question": "what is making the sound ?"}
    options = ["dog", "a red car", "bell", "green blue bird"]  # 1 to 3 tokens: padding differs per row
    scores = model.option_loglikelihoods(request, options)
    expected = [direct_loglikelihood(model, request, option) for option in options]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert len(set(np.round(scores, 3))) == 4  # the options really differ


def test_eval_likelihood_protocol_picks_the_direct_argmax(model, clip, tmp_path):
    entries = [{"id": "q0", "video": str(clip), "question": "what is making the sound ?",
                "multi_choice": ["dog", "car", "bell", "bird"], "answer": answer} for answer in (0,)]
    data = tmp_path / "avqa.json"
    data.write_text(json.dumps(entries))
    report = evaluate(model, "avqa", data, tmp_path / "out", protocol="likelihood")
    prompt = ("what is making the sound ?\nA. dog\nB. car\nC. bell\nD. bird\n"
              "Answer with the option's letter from the given choices directly.")
    direct = {letter: direct_loglikelihood(model, {"video": str(clip), "question": prompt}, letter) for letter in "ABCD"}
    record = json.loads((tmp_path / "out" / "predictions.jsonl").read_text())
    assert record["text"] == max(direct, key=direct.get)
    assert record["option_loglikelihoods"] == pytest.approx(direct, abs=1e-4)
    assert report.protocol == "likelihood"
    assert report.metrics["Accuracy"] == (100.0 if record["text"] == "A" else 0.0)
