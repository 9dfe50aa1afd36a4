"""Greedy generation through vlynx (`VLynx.generate`) against transformers' own `generate` from ids + pixels.

The prompt-logit tests (tests/test_backbone_*.py) check the first step only; these check every
decoding step after it: for Qwen2.5-VL the new tokens must continue the prompt's 3-D M-RoPE
positions (the text after the video starts at the video's largest position + 1, not at the
prompt's length), which transformers gets from `get_rope_index` / `rope_deltas` and vlynx from the
position ids `build_llm_inputs` hands to `generate`.

Each family's tiny checkpoint is saved and reloaded by path. Its LLM weights are redrawn larger
than transformers' initialisation (std 0.2, not 0.02), so that attention, and with it each token's
position, decides the next token: with the default weights the tiny LLM's answer hardly depends on
its context, and a wrong position would go unseen (`test_wrong_decoding_positions_are_seen`).
The expectation is the model's own input: input_ids with the family's placeholder tokens
expanded (Qwen2.5-VL: <|vision_start|> video tokens <|vision_end|>, InternVL: <img> image tokens
</img>, LLaVA-OneVision: video tokens), pixel values in its processor's layout, `video_grid_thw`.
Both paths decode exactly N tokens (`min_new_tokens` = N keeps the end-of-turn token out).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_backbone_qwen2_5_vl import processor_patches  # Qwen2-VL's processor layout, by loops
from vlynx.adapters import add_vision_adapter
from vlynx.backbones import load_backbone, preset_config
from vlynx.bundle import VLynx
from vlynx.conversation import tokenize_question
from vlynx.media import read_video, write_video

N = 6  # new tokens compared
FRAMES = 3  # odd: Qwen2.5-VL repeats the last frame to fill its second temporal step
QUESTIONS = ["what colour is the ball ?", "ball ?"]  # different lengths: the batch is left-padded
PRESETS = {"qwen2.5-vl": "qwen2.5-vl-tiny", "internvl2.5": "internvl2.5-tiny", "llava-onevision": "tiny"}


def _model_class(family: str):
    import transformers

    return getattr(transformers, {"qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
                                  "internvl2.5": "InternVLForConditionalGeneration",
                                  "llava-onevision": "LlavaOnevisionForConditionalGeneration"}[family])


@pytest.fixture(scope="module", params=sorted(PRESETS))
def checkpoint(request, tmp_path_factory):
    from vlynx.word_tokenizer import build_word_tokenizer

    family = request.param
    directory = tmp_path_factory.mktemp(f"generate-{family}")
    torch.manual_seed(0)
    model = _model_class(family)(preset_config(PRESETS[family]))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # context- and position-sensitive LLM (module docstring)
        for name, parameter in model.named_parameters():
            if (".language_model." in name and parameter.ndim == 2) or name.startswith("lm_head."):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    model.save_pretrained(directory)
    build_word_tokenizer(QUESTIONS).save_pretrained(directory)
    return family, directory


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("generate-clips")
    return [write_video(folder / f"clip{i}.mp4", rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), fps=4)
            for i in range(3)]


def load(directory):
    backbone = load_backbone(directory)
    backbone.model.generation_config.min_new_tokens = N  # no end-of-turn stop: N tokens in both paths
    return backbone


def vlynx_tokens(model: VLynx, requests: list[dict], monkeypatch) -> list[list[int]]:
    """The new token ids `VLynx.generate` got from the model's `generate` (its batched, left-padded path)."""
    outputs = []
    generate = model.backbone.model.generate

    def recording(*args, **kwargs):
        outputs.append(generate(*args, **kwargs))
        return outputs[-1]

    monkeypatch.setattr(model.backbone.model, "generate", recording)
    model.generate(requests, max_new_tokens=N)
    monkeypatch.undo()
    assert len(outputs) == 1
    return outputs[0].tolist()  # inputs_embeds only: generate returns just the new tokens


def reference_tokens(family: str, backbone, question: str, videos: list) -> list[int]:
    """transformers' own greedy generate for one prompt, from input_ids + pixel values (one block per video)."""
    config = backbone.model.config
    prompt = tokenize_question(backbone, question)
    at = prompt.index(backbone.image_token_id)
    frames = [backbone.preprocess_frames(read_video(video, FRAMES).frames) for video in videos]  # (F, 3, S, S)
    inputs: dict[str, torch.Tensor] = {}
    if family == "qwen2.5-vl":
        padded = [torch.cat([f, f[-1:].expand(-f.shape[0] % 2, -1, -1, -1)]) for f in frames]
        grids = [[len(p) // 2, 8, 8] for p in padded]  # steps, patch rows, patch cols (32 px / 4 px)
        blocks = [[config.vision_start_token_id, *[config.video_token_id] * (t * h * w // 4),  # 2x2 merge
                   config.vision_end_token_id] for t, h, w in grids]
        inputs["pixel_values_videos"] = torch.cat([processor_patches(p) for p in padded])
        inputs["video_grid_thw"] = torch.tensor(grids)
    elif family == "internvl2.5":
        per_frame = config.image_seq_length
        blocks = [[config.image_start_token_id, *[config.image_token_id] * (len(f) * per_frame),
                   config.image_end_token_id] for f in frames]
        inputs["pixel_values"] = torch.cat(frames)  # one tile per frame
    else:
        blocks = [[config.video_token_id] * backbone.tokens_per_video(len(f)) for f in frames]
        inputs["pixel_values_videos"] = torch.stack(frames)  # (videos, F, 3, S, S)
    ids = torch.tensor([prompt[:at] + [token for block in blocks for token in block] + prompt[at + 1:]])
    if family == "qwen2.5-vl":
        inputs["mm_token_type_ids"] = (ids == config.video_token_id).int() * 2
    with torch.no_grad():
        output = backbone.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **inputs,
                                         do_sample=False, max_new_tokens=N, min_new_tokens=N)
    return output[0, ids.shape[1]:].tolist()


def test_greedy_answers_are_the_models_own_token_for_token(checkpoint, clips, monkeypatch):
    """A left-padded batch of two requests through `VLynx.generate` = each request alone through transformers."""
    family, directory = checkpoint
    backbone = load(directory)
    requests = [{"video": clips[0], "question": QUESTIONS[0]}, {"video": clips[1], "question": QUESTIONS[1]}]
    ours = vlynx_tokens(VLynx(backbone, [], num_frames=FRAMES), requests, monkeypatch)
    expected = [reference_tokens(family, backbone, r["question"], [r["video"]]) for r in requests]
    assert ours == expected
    assert all(len(row) == N and len(set(row)) > 2 for row in expected)  # a varied answer, not one repeated token
    assert expected[0] != expected[1]  # and one that depends on the request


def test_two_media_blocks_generate_as_two_videos(checkpoint, clips, monkeypatch):
    """Video + a new-modality block (its vision LoRA at its zero start: the base encoder's tokens) = the model
    given both clips as two videos; for Qwen2.5-VL the second block's M-RoPE ids start after the first's."""
    family, directory = checkpoint
    backbone = load(directory)
    add_vision_adapter(backbone, "egocentric")
    backbone.model.eval()
    model = VLynx(backbone, ["egocentric"], num_frames=FRAMES)
    request = {"video": clips[0], "egocentric": clips[2], "question": QUESTIONS[0]}
    ours = vlynx_tokens(model, [request], monkeypatch)
    assert ours == [reference_tokens(family, backbone, QUESTIONS[0], [clips[0], clips[2]])]


def test_wrong_decoding_positions_are_seen(checkpoint, clips, monkeypatch):
    """The check above can fail: numbering Qwen2.5-VL's new tokens by the sequence length, as a 1-D LLM
    would (dropping the video's `rope_deltas`), changes the answer; an offset does so for every family."""
    family, directory = checkpoint
    backbone = load(directory)
    request = {"video": clips[0], "question": QUESTIONS[0]}
    expected = [reference_tokens(family, backbone, QUESTIONS[0], [clips[0]])]
    model_class = type(backbone.model)
    update = model_class._update_model_kwargs_for_generation

    def misnumbered(self, outputs, model_kwargs, *args, **kwargs):
        model_kwargs = update(self, outputs, model_kwargs, *args, **kwargs)
        positions = model_kwargs["position_ids"]  # the prompt's, and the new tokens' appended one at a time
        if positions.dim() == 3:  # M-RoPE, one unpadded row: the sequence length, on all three axes
            positions[..., -1] = positions.shape[-1] - 1
        else:  # 1-D families number by the sequence length anyway: shift the new tokens instead
            positions[..., -1] += 20
        return model_kwargs

    with monkeypatch.context() as patch:
        patch.setattr(model_class, "_update_model_kwargs_for_generation", misnumbered)
        wrong = vlynx_tokens(VLynx(backbone, [], num_frames=FRAMES), [request], monkeypatch)
    assert wrong[0][0] == expected[0][0]  # the prompt's step is untouched
    assert wrong != expected
