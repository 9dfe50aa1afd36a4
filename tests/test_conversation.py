"""Conversation data, label masking and prompt assembly (docs/method.md §6–§7)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from vlynx.adapters import add_llm_adapter, add_vision_adapter, adapter_names
from vlynx.backbones import load_backbone
from vlynx.conversation import (
    IGNORE_INDEX,
    encode_blocks,
    load_examples,
    read_streams,
    splice_blocks,
    tokenize_chat,
    tokenize_question,
)
from vlynx.errors import VlynxError
from vlynx.media import read_video, write_video
from vlynx.word_tokenizer import build_word_tokenizer

WORDS = "what colour is the ball ? red green blue and now which sound do you hear a bell drum"
SYSTEM = ["<|im_start|>", "system", "You", "are", "a", "helpful", "assistant", ".", "<|im_end|>"]


@pytest.fixture
def backbone():
    backbone = load_backbone("tiny", seed=0)
    backbone.tokenizer = build_word_tokenizer([WORDS])
    return backbone


def ids(backbone, tokens):
    return backbone.tokenizer.convert_tokens_to_ids(tokens)


def test_single_turn_labels_supervise_only_the_answer(backbone):
    chat = tokenize_chat(backbone, [{"role": "user", "content": "<image>\nwhat colour is the ball ?"},
                                    {"role": "assistant", "content": "red"}])
    prompt = [*SYSTEM, "<|im_start|>", "user", "<image>", "what", "colour", "is", "the", "ball", "?", "<|im_end|>",
              "<|im_start|>", "assistant"]
    answer = ["red", "<|im_end|>"]
    assert chat.input_ids == ids(backbone, prompt + answer)
    assert chat.labels == [IGNORE_INDEX] * len(prompt) + ids(backbone, answer)
    assert chat.input_ids.count(4) == 1  # the tiny preset's image token id


def test_multi_turn_labels_supervise_every_answer(backbone):
    messages = [{"role": "system", "content": "You are a helpful assistant ."},
                {"role": "user", "content": "<image>\nwhat colour ?"},
                {"role": "assistant", "content": "red and blue"},
                {"role": "user", "content": "which sound ?"},
                {"role": "assistant", "content": "a bell"}]
    chat = tokenize_chat(backbone, messages)
    turn1 = [*SYSTEM, "<|im_start|>", "user", "<image>", "what", "colour", "?", "<|im_end|>", "<|im_start|>",
             "assistant"]
    answer1 = ["red", "and", "blue", "<|im_end|>"]
    turn2 = ["<|im_start|>", "user", "which", "sound", "?", "<|im_end|>", "<|im_start|>", "assistant"]
    answer2 = ["a", "bell", "<|im_end|>"]
    assert chat.input_ids == ids(backbone, turn1 + answer1 + turn2 + answer2)
    expected = ([IGNORE_INDEX] * len(turn1) + ids(backbone, answer1) + [IGNORE_INDEX] * len(turn2)
                + ids(backbone, answer2))
    assert chat.labels == expected


def test_missing_placeholder_goes_before_the_first_question(backbone):
    chat = tokenize_chat(backbone, [{"role": "user", "content": "what colour ?"},
                                    {"role": "assistant", "content": "red"}])
    with_placeholder = tokenize_chat(backbone, [{"role": "user", "content": "<image>\nwhat colour ?"},
                                                {"role": "assistant", "content": "red"}])
    assert chat == with_placeholder
    prompt = tokenize_question(backbone, "what colour ?")
    assert prompt == ids(backbone, [*SYSTEM, "<|im_start|>", "user", "<image>", "what", "colour", "?", "<|im_end|>",
                                    "<|im_start|>", "assistant"])


def write_clip(path, colour, frames=4, size=32):
    video = np.zeros((frames, size, size, 3), np.uint8)
    video[:] = colour
    video[:, : size // 2, : size // 2] = 255 - np.asarray(colour, np.uint8)  # some structure for the encoder
    return write_video(path, video, fps=4)


def test_annotation_file_loads_and_resolves_media(tmp_path):
    write_clip(tmp_path / "media" / "a.mp4", (200, 0, 0))
    (tmp_path / "media" / "a.wav").write_bytes(b"x")
    entries = [{"id": "a", "video": "a.mp4", "audio": "a.wav",
                "conversations": [{"from": "human", "value": "<image>\nwhat ?"}, {"from": "gpt", "value": "red"}]},
               {"id": "b", "video": "a.mp4",
                "conversations": [{"from": "human", "value": "what ?"}, {"from": "gpt", "value": "red"}]}]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in entries))
    examples = load_examples(path, ["audio"], media_root=tmp_path / "media")
    assert [e.id for e in examples] == ["a", "b"]
    assert examples[0].video == tmp_path / "media" / "a.mp4"
    assert examples[0].sources == {"audio": tmp_path / "media" / "a.wav"}
    assert examples[1].sources == {}  # audio comes from the video's own track
    assert examples[0].messages[1] == {"role": "assistant", "content": "red"}


@pytest.mark.parametrize("entry, problem", [
    ({"id": "x", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "no 'video'"),
    ({"id": "x", "video": "a.mp4", "conversations": []}, "'conversations'"),
    ({"id": "x", "video": "a.mp4", "conversations": [{"from": "gpt", "value": "a"}]}, "alternate"),
    ({"id": "x", "video": "a.mp4", "conversations": [{"from": "human", "value": "q"}]}, "no 'gpt' turn"),
    ({"id": "x", "video": "a.mp4", "conversations": [{"from": "robot", "value": "q"}]}, "turn 0"),
    ({"id": "x", "video": "a.mp4",
      "conversations": [{"from": "human", "value": "<image> <image>"}, {"from": "gpt", "value": "a"}]}, "2 '<image>'"),
    ({"id": "x", "video": "missing.mp4",
      "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "video not found"),
])
def test_malformed_entries_name_file_entry_and_problem(tmp_path, entry, problem):
    write_clip(tmp_path / "a.mp4", (0, 0, 200))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([entry]))
    with pytest.raises(VlynxError) as error:
        load_examples(path)
    message = str(error.value)
    assert str(path) in message and "entry 0 (id 'x')" in message and problem in message


class Negative:
    """A stand-in modality transform: the video's frames with inverted colours."""

    def frames(self, source, num_frames, timestamps=None):
        return 255 - read_video(source, num_frames).frames


class Mirror:
    def frames(self, source, num_frames, timestamps=None):
        return np.ascontiguousarray(read_video(source, num_frames).frames[:, :, ::-1])


def randomize_adapter(backbone, name, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, parameter in backbone.model.named_parameters():
            if f".{name}." in key and "lora_" in key:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


def test_video_block_is_bit_identical_to_the_base_model_with_adapters_attached(backbone, tmp_path):
    clip = write_clip(tmp_path / "v.mp4", (10, 180, 40))
    add_vision_adapter(backbone, "audio")
    add_llm_adapter(backbone)
    randomize_adapter(backbone, "audio", 1)
    randomize_adapter(backbone, "llm", 2)
    streams = read_streams(backbone, clip, {}, {"audio": Negative()}, num_frames=2)
    batch = {key: value[None] for key, value in streams.items()}
    prompt = tokenize_question(backbone, "what colour ?")
    inputs = splice_blocks(backbone, [prompt], encode_blocks(backbone, batch, ["audio"]))

    base = load_backbone("tiny", seed=0)  # an independent copy of the unmodified model
    pixels = base.preprocess_frames(read_video(clip, 2).frames)[None]
    expected = base.model.model.get_video_features(pixel_values_videos=pixels, return_dict=True).pooler_output
    at = prompt.index(4)
    tokens = base.tokens_per_video(2)
    assert expected.shape == (1, tokens, 64)
    assert torch.equal(inputs["inputs_embeds"][0, at:at + tokens], expected[0])
    # the modality block right after it went through the adapter, so it differs
    assert not torch.allclose(inputs["inputs_embeds"][0, at + tokens:at + 2 * tokens], expected[0], atol=1e-3)


@pytest.mark.filterwarnings("ignore:Adapter .* was active")
def test_two_modalities_make_two_blocks_in_order(backbone, tmp_path):
    clip = write_clip(tmp_path / "v.mp4", (200, 100, 0))
    for name in ("audio", "depth"):
        add_vision_adapter(backbone, name)
    add_llm_adapter(backbone)
    randomize_adapter(backbone, "audio", 3)
    randomize_adapter(backbone, "depth", 4)
    assert adapter_names(backbone) == ["audio", "depth", "llm"]
    frames = 2
    streams = read_streams(backbone, clip, {}, {"audio": Negative(), "depth": Mirror()}, num_frames=frames)
    batch = {key: value[None] for key, value in streams.items()}
    chat = tokenize_chat(backbone, [{"role": "user", "content": "<image>\nwhich sound ?"},
                                    {"role": "assistant", "content": "a drum"}])
    inputs = splice_blocks(backbone, [chat.input_ids], encode_blocks(backbone, batch, ["audio", "depth"]),
                           [chat.labels])
    tokens = frames * 4 + 1  # 4x4 patch grid pooled to 2x2 per frame, + one newline token
    assert inputs["inputs_embeds"].shape == (1, len(chat.input_ids) - 1 + 3 * tokens, 64)

    # Independent expectations: each modality block from a copy of the model with only that LoRA merged.
    def merged_block(name, stream):
        model = copy.deepcopy(backbone.peft_model)
        for other in ("audio", "depth", "llm"):
            if other != name:
                model.delete_adapter(other)
        merged = model.merge_and_unload()
        return merged.model.get_video_features(pixel_values_videos=stream, return_dict=True).pooler_output[0]

    at = chat.input_ids.index(4)
    embed = backbone.model.get_input_embeddings()
    text = embed(torch.tensor(chat.input_ids))
    embeds = inputs["inputs_embeds"][0]
    assert torch.equal(embeds[:at], text[:at])
    assert torch.equal(embeds[at + 3 * tokens:], text[at + 1:])
    base = load_backbone("tiny", seed=0)
    video = base.model.model.get_video_features(pixel_values_videos=batch["video"], return_dict=True).pooler_output[0]
    assert torch.equal(embeds[at:at + tokens], video)
    torch.testing.assert_close(embeds[at + tokens:at + 2 * tokens], merged_block("audio", batch["audio"]),
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(embeds[at + 2 * tokens:at + 3 * tokens], merged_block("depth", batch["depth"]),
                               atol=1e-5, rtol=1e-4)
    labels = inputs["labels"][0].tolist()
    assert labels[at:at + 3 * tokens] == [IGNORE_INDEX] * (3 * tokens)
    assert labels[:at] + labels[at + 3 * tokens:] == chat.labels[:at] + chat.labels[at + 1:]


def test_padding_sides(backbone, tmp_path):
    clip = write_clip(tmp_path / "v.mp4", (0, 90, 200))
    streams = read_streams(backbone, clip, {}, {}, num_frames=1)
    batch = {key: torch.stack([value, value]) for key, value in streams.items()}
    short, long = tokenize_question(backbone, "what ?"), tokenize_question(backbone, "what colour is the ball ?")
    blocks = encode_blocks(backbone, batch, [])
    left = splice_blocks(backbone, [short, long], blocks, padding_side="left")
    right = splice_blocks(backbone, [short, long], blocks, padding_side="right")
    gap = len(long) - len(short)
    assert left["attention_mask"][0].tolist() == [0] * gap + [1] * (len(short) - 1 + 5)
    assert right["attention_mask"][0].tolist() == [1] * (len(short) - 1 + 5) + [0] * gap
    assert torch.equal(left["inputs_embeds"][0, gap:], right["inputs_embeds"][0, :-gap])
    assert torch.equal(left["inputs_embeds"][1], right["inputs_embeds"][1])
