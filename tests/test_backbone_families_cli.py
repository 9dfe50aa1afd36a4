"""Every stage's command on a tiny checkpoint of each new family, saved to a temp dir and loaded by path:
reference -> align -> tune -> answer -> eval, plus params and preview.

A chain per family (module-scoped): each step reads what the one before wrote. Expectations are
independent of the commands: the reference's shapes from the config, params from the layer shapes
by hand, answer against the library, preview against the encoder's frame size.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlynx.backbones import preset_config
from vlynx.cli import main
from vlynx.media import write_video

QUESTION, ANSWER = "what colour is the ball ?", "red ball"
LEVELS = ["Novice", "Late Expert"]


def _qwen2_5_vl():
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration(preset_config("qwen2.5-vl-tiny"))


def _internvl():
    from transformers import InternVLForConditionalGeneration

    return InternVLForConditionalGeneration(preset_config("internvl2.5-tiny"))


# family -> (tiny model, K/V shape (layers, heads, positions, head_dim), vision LoRA r 64, LLM LoRA r 4)
FAMILIES = {
    # 8x8 patches, 2 layers x 2 heads x 16; vision per block: qkv 64*(32+96), proj 64*(32+32),
    # gate/up 2*64*(32+64), down 64*(64+32) = 30,720; merger 64*(128+128) + 64*(128+64) = 28,672
    "qwen2.5-vl": (_qwen2_5_vl, (2, 2, 64, 16), 2 * 30_720 + 28_672),
    # CLS + 8x8 patches; per layer: q/k/v/projection_layer 4*64*(32+32), fc1/fc2 2*64*(32+64) = 28,672
    "internvl2.5": (_internvl, (2, 2, 1 + 64, 16), 2 * 28_672),
}
# both tiny LLMs (hidden 64, 2 of 4 heads for K/V = 32, MLP 128, 2 layers), rank 4:
# q/o 2*4*(64+64), k/v 2*4*(64+32), gate/up 2*4*(64+128), down 4*(128+64) = 4,096 per layer
LLM_LORA = 2 * 4_096


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def world(request, tmp_path_factory):
    from vlynx.word_tokenizer import build_word_tokenizer

    family = request.param
    root = tmp_path_factory.mktemp(family)
    torch.manual_seed(0)
    FAMILIES[family][0]().save_pretrained(root / "model")
    build_word_tokenizer([QUESTION, ANSWER, *LEVELS]).save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    for index in range(3):
        write_video(root / "media" / f"clip{index}.mp4", rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), fps=4)
    entries = [{"id": f"c{i}", "take_uid": f"c{i}", "video": f"clip{i}.mp4", "egocentric": f"clip{(i + 1) % 3}.mp4",
                "proficiency_score": LEVELS[i % 2],
                "conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": ANSWER}]}
               for i in range(3)]
    (root / "data.json").write_text(json.dumps(entries))
    return family, root


def _run(*args: str) -> None:
    assert main(["-q", *args]) == 0


@pytest.fixture(scope="module")
def bundle(world):
    """reference -> align (egocentric) -> tune, each through the CLI."""
    _, root = world
    model, media = str(root / "model"), str(root / "media")
    _run("reference", "--model", model, "--videos", media, "--frames", "2", "--out", str(root / "ref.safetensors"))
    _run("align", "--model", model, "--modality", "egocentric", "--data", media, "--reference",
         str(root / "ref.safetensors"), "--out", str(root / "adapter"), "--max-steps", "2", "--batch-size", "2",
         "--set", "logging_steps=1")
    _run("tune", "--model", model, "--data", str(root / "data.json"), "--media-root", media,
         "--modality", "egocentric", "--vision-adapter", str(root / "adapter"), "--out", str(root / "bundle"),
         "--frames", "2", "--max-steps", "2", "--batch-size", "3", "--llm-rank", "4")
    return root / "bundle"


def test_reference_has_the_families_shapes(world, bundle):
    from safetensors import safe_open

    family, root = world
    with safe_open(root / "ref.safetensors", "pt") as file:
        keys, mean = file.get_tensor("keys"), file.get_tensor("token_mean")
    assert tuple(keys.shape) == FAMILIES[family][1]
    assert mean.shape == (64,) and torch.isfinite(keys).all()


def test_alignment_trained_the_modality_adapter(world, bundle):
    from safetensors.torch import load_file

    _, root = world
    results = json.loads((root / "adapter" / "vlynx_run.json").read_text())["results"]
    assert (results["adapter_name"], results["steps"]) == ("egocentric", 2)
    assert results["reference"]["counts"]["videos"] == 3
    weights = load_file(next((root / "adapter").rglob("adapter_model.safetensors")))
    assert weights and all(".vision_tower." in k or ".visual." in k for k in weights)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at zero: it moved


def test_answer_cli_equals_the_library(world, bundle, capsys):
    from vlynx.bundle import VLynx

    _, root = world
    clip, ego = root / "media" / "clip0.mp4", root / "media" / "clip1.mp4"
    capsys.readouterr()
    assert main(["answer", "--model", str(bundle), "--video", str(clip), "--input", f"egocentric={ego}",
                 "--json", "--max-new-tokens", "3", QUESTION]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = VLynx.from_pretrained(bundle).answer(video=clip, question=QUESTION, egocentric=ego,
                                                    max_new_tokens=3)
    assert printed["answer"] == expected


def test_eval_answers_and_scores_every_entry(world, bundle):
    _, root = world
    out = root / "eval"
    _run("eval", "--benchmark", "egoexo-proficiency", "--model", str(bundle), "--data", str(root / "data.json"),
         "--media-root", str(root / "media"), "--out", str(out), "--no-meteor")
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["question_id"] for p in predictions) == ["c0", "c1", "c2"]
    assert (out / "results.json").exists()


def test_params_of_the_checkpoint_by_hand(world, capsys):
    family, root = world
    capsys.readouterr()
    assert main(["params", "--model", str(root / "model"), "--llm-rank", "4", "--json"]) == 0
    vision = FAMILIES[family][2]
    assert json.loads(capsys.readouterr().out) == {"vision_lora": vision, "llm_lora": LLM_LORA,
                                                   "total": vision + LLM_LORA}


def test_preview_shows_the_encoders_frame_size(world):
    _, root = world
    out = root / "preview.png"
    _run("preview", "--modality", "egocentric", str(root / "media" / "clip0.mp4"), "--out", str(out),
         "--frames", "1", "--model", str(root / "model"))
    assert np.asarray(Image.open(out).convert("RGB")).shape == (36, 36, 3)  # 32 px frame, 2 px border


def test_tuning_feeds_the_llm_the_familys_own_positions(world, tmp_path, monkeypatch):
    """Qwen2.5-VL's LLM reads M-RoPE positions over the media grid (three rows that differ on media tokens);
    tuning must pass them on rather than let the model number the embeddings 1-D (three equal rows)."""
    import vlynx.backbones
    from vlynx.stage_configs import TuneConfig
    from vlynx.tune import run_tune

    family, root = world
    positions, real = [], vlynx.backbones.load_backbone

    def spy(*args, **kwargs):
        backbone = real(*args, **kwargs)
        backbone.language_model.register_forward_pre_hook(
            lambda module, args, kwargs: positions.append(kwargs.get("position_ids")), with_kwargs=True)
        return backbone

    monkeypatch.setattr(vlynx.backbones, "load_backbone", spy)
    run_tune(TuneConfig(model=str(root / "model"), data=str(root / "data.json"), media_root=str(root / "media"),
                        out=str(tmp_path / "bundle"), frames=2, max_steps=1, batch_size=3, llm_rank=4))
    assert positions
    grid = positions[0]
    if family == "qwen2.5-vl":  # (3, B, L): temporal, height, width rows differ on the media tokens
        assert grid.shape[0] == 3 and not torch.equal(grid[1], grid[2])
    else:  # 1-D positions, the model's own numbering
        assert grid is None or grid.ndim == 2
