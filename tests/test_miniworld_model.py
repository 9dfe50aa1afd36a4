"""The miniworld Video LLM: pretraining data layout, a quick pretraining run, the shipped checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlynx.miniworld import checkpoint_dir, generate_split
from vlynx.miniworld.pretraining import (IGNORE_INDEX, MOTION, PretrainConfig, StageSettings, build_model,
                                         load_video_qa, pretraining_stages, train_loop)


@pytest.fixture(scope="module")
def pretrain_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    return generate_split(out, "pretrain", 3, seed=0)


def test_pretraining_examples_expand_video_and_supervise_only_the_answer(pretrain_split):
    backbone = build_model(seed=0)
    data = load_video_qa(backbone, pretrain_split, num_frames=8)
    entries = json.loads(pretrain_split.read_text())
    assert all(e["category"] == "video" and "audio" not in e for e in entries)  # never any sound
    assert data.pixels.shape == (3, 8, 3, 32, 32)
    tokenizer = backbone.tokenizer
    video_id, end_id = tokenizer.convert_tokens_to_ids("<video>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    for ids, labels, entry in zip(data.input_ids, data.labels, entries):
        # 32 px / 8 px patches = 4x4 grid, pooled 2x -> 2x2 = 4 tokens per frame; 8 frames + 1 newline.
        assert ids.count(video_id) == 8 * 4 + 1
        answer = entry["conversations"][1]["value"]
        supervised = [token for token in labels if token != IGNORE_INDEX]
        assert supervised == [tokenizer.convert_tokens_to_ids(w) for w in answer.split()] + [end_id]
        assert ids[-len(supervised):] == supervised
        assert tokenizer.decode(ids[: len(ids) - len(supervised)]).endswith("assistant")


TINY_STAGES = (StageSettings("single frames", 3, frames=1, motion_share=0.0, batch_size=4),
               StageSettings("every question", 3, batch_size=8),
               StageSettings("motion", 2, motion_share=1.0, llm_only=True, decay=False, batch_size=8),
               StageSettings("every question, LLM", 3, llm_only=True, batch_size=8))


def test_quick_pretraining_lowers_the_loss_and_is_deterministic(pretrain_split, tmp_path):
    from vlynx.backbones import load_backbone
    from vlynx.miniworld.pretraining import save_checkpoint

    config = PretrainConfig(stages=TINY_STAGES, warmup_steps=1, learning_rate=3e-3)
    runs = []
    for _ in range(2):
        backbone = build_model(seed=0)
        data = {frames: load_video_qa(backbone, pretrain_split, frames) for frames in (1, 8)}
        initial = {name: tensor.clone() for name, tensor in backbone.model.state_dict().items()}
        runs.append((backbone, train_loop(backbone, pretraining_stages(config, data), config)))
    (backbone, losses), (_, again) = runs
    assert losses == again and len(losses) == 11
    assert np.mean(losses[-2:]) < losses[0]
    # every parameter moved (the first two stages train all; the encoder's post-layernorm is unused, as
    # LLaVA-OneVision reads the last hidden state), and all are trainable again afterwards
    assert all(not torch.equal(tensor, initial[name]) for name, tensor in backbone.model.state_dict().items()
               if "post_layernorm" not in name)
    assert all(parameter.requires_grad for parameter in backbone.model.parameters())
    save_checkpoint(backbone, tmp_path, {"metrics": {}})
    reloaded = load_backbone(tmp_path)
    for name, tensor in backbone.model.state_dict().items():
        assert torch.equal(tensor, reloaded.model.state_dict()[name]), name


def test_an_llm_only_stage_leaves_the_encoder_and_projector_unchanged(pretrain_split):
    backbone = build_model(seed=0)
    config = PretrainConfig(stages=TINY_STAGES[2:], warmup_steps=1, learning_rate=3e-3)
    before = {name: tensor.clone() for name, tensor in backbone.model.state_dict().items()}
    train_loop(backbone, pretraining_stages(config, {8: load_video_qa(backbone, pretrain_split, 8)}), config)
    after = backbone.model.state_dict()
    vision = [name for name in before if "vision_tower" in name or "multi_modal_projector" in name]
    assert vision and all(torch.equal(before[name], after[name]) for name in vision)
    assert not torch.equal(before["lm_head.weight"], after["lm_head.weight"])


def test_stages_draw_their_share_of_motion_questions_from_their_frames(pretrain_split):
    backbone = build_model(seed=0)
    data = {frames: load_video_qa(backbone, pretrain_split, frames) for frames in (1, 8)}
    assert data[1].pixels.shape[1] == 1 and data[8].pixels.shape[1] == 8
    frames, motion_only, last = pretraining_stages(PretrainConfig(), data)
    for stage, expected_frames, expected_counts in ((frames, 1, (0, 32)), (motion_only, 8, (16, 0)),
                                                    (last, 8, (5, 11))):
        (motion, in_motion), (rest, others) = stage.pools
        assert stage.data is data[expected_frames]
        assert (in_motion, others) == expected_counts  # round(16 / 3) = 5 motion questions per batch of 16
        assert {stage.data.kinds[i] for i in motion} == {MOTION}
        assert MOTION not in {stage.data.kinds[i] for i in rest}
        assert sorted(motion + rest) == list(range(len(stage.data.kinds)))
    assert [(s.settings.llm_only, s.settings.decay) for s in (frames, motion_only, last)] == [
        (False, True), (True, False), (False, True)]


def test_shipped_checkpoint_loads_by_name_with_the_worlds_tokenizer():
    from vlynx.backbones import load_backbone
    from vlynx.miniworld import all_texts, build_tokenizer

    assert (checkpoint_dir() / "model.safetensors").stat().st_size < 5_000_000
    backbone = load_backbone("miniworld")
    assert backbone.tokenizer is not None and backbone.image_size == 32
    assert backbone.tokenizer.get_vocab() == build_tokenizer().get_vocab()
    for text in all_texts():
        assert backbone.tokenizer.decode(backbone.tokenizer(text, add_special_tokens=False).input_ids) == text


@torch.no_grad()
def _first_word_answers(backbone, annotations, entries):
    """Greedy first answer word per question, through the HF forward with `<video>` tokens."""
    from vlynx.media.video import read_video

    tokenizer = backbone.tokenizer
    answers = []
    for entry in entries:
        question = entry["conversations"][0]["value"].replace("<image>", "<video>")
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
        text = text.replace("<video>", "<video>" * backbone.tokens_per_video(8))
        ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
        frames = read_video(annotations.parent / entry["video"], 8).frames
        logits = backbone.model(input_ids=ids, pixel_values_videos=backbone.preprocess_frames(frames)[None]).logits
        answers.append(tokenizer.convert_ids_to_tokens(int(logits[0, -1].argmax())))
    return answers


def test_shipped_model_answers_video_questions_but_not_audio_ones(tmp_path):
    from vlynx.backbones import load_backbone

    backbone = load_backbone("miniworld")
    annotations = generate_split(tmp_path, "test", 30, seed=123)
    entries = [e for e in json.loads(annotations.read_text()) if e["kind"] in ("colour-of-shape", "sound-name", "beep-count")]
    predicted = _first_word_answers(backbone, annotations, entries)
    hits = {}
    for entry, answer in zip(entries, predicted):
        hits.setdefault(entry["category"], []).append(answer == entry["conversations"][1]["value"])
    # Colour questions have 4 possible answers (chance 0.25); the model saw colours, never sounds.
    assert np.mean(hits["video"]) >= 0.5
    assert np.mean(hits["audio"]) <= 0.3


def test_pretrain_api_writes_a_loadable_checkpoint_with_its_record(tmp_path):
    import vlynx.miniworld
    from vlynx.backbones import load_backbone

    threads = torch.get_num_threads()
    out = vlynx.miniworld.pretrain(tmp_path / "ckpt", seed=1, stage_steps=[1, 1, 2], scenes=2, eval_scenes=2)
    assert torch.get_num_threads() == threads  # the run's thread setting does not leak
    record = json.loads((out / "pretrain.json").read_text())
    assert [stage["steps"] for stage in record["config"]["stages"]] == [1, 1, 2] and record["config"]["seed"] == 1
    assert 0 <= record["metrics"]["held_out_accuracy"]["overall"] <= 1
    assert load_backbone(out).tokenizer is not None


def test_pretrain_refuses_to_replace_a_folder_that_is_no_checkpoint(tmp_path):
    import vlynx.miniworld
    from vlynx.errors import VlynxError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(VlynxError, match="not a miniworld checkpoint"):
        vlynx.miniworld.pretrain(tmp_path, stage_steps=[0, 0, 2], scenes=2, eval_scenes=2)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_question_longer_than_the_shipped_models_context_is_a_one_line_error(tmp_path, capsys):
    from vlynx.cli import main

    annotations = generate_split(tmp_path, "test", 1, seed=0)
    video = annotations.parent / json.loads(annotations.read_text())[0]["video"]
    question = "what colour is the box ? " * 4000  # 4,000 times 6 words
    assert len(question) == 100_000
    assert main(["answer", "--model", "miniworld", "--video", str(video), question]) == 2
    error = capsys.readouterr().err.strip()
    # text: 24,000 words + 14 ChatML tokens around them; media: 8 frames x 2x2 pooled patches + newline = 33
    assert error.splitlines() == ["vlynx answer: error: prompt is 24047 tokens (text 24014 + media 33), the model's "
                                  "context is 512: shorten the question or use fewer frames"]
