"""The interface gap on a tiny model against eq. 6 and eq. 8 computed by hand; `vlynx diagnose --model` end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vlynx.adapters import add_vision_adapter, route
from vlynx.diagnose.gap import VideoReference, interface_gap, token_pass

MODALITY = "egocentric"  # frames as they are
POOLED = [0, 2, 8, 10]  # the tiny model's 4x4 patch grid: rows and columns 0 and 2


def randomize_adapter(backbone, name, seed, scale=0.3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, parameter in backbone.model.named_parameters():
            if f".{name}." in key and "lora_" in key:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


@pytest.fixture(scope="module")
def setup():
    from vlynx.backbones import load_backbone

    backbone = load_backbone("tiny", seed=0)
    add_vision_adapter(backbone, MODALITY)
    randomize_adapter(backbone, MODALITY, seed=1)
    layout = backbone.layout
    generator = torch.Generator().manual_seed(2)
    shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
    reference = VideoReference(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator),
                               torch.randn(backbone.llm_hidden_size, generator=generator, dtype=torch.float64) * 0.1,
                               torch.rand(backbone.llm_hidden_size, generator=generator, dtype=torch.float64))
    pixels = torch.randn(3, 2, 3, 32, 32, generator=generator)  # 3 inputs x 2 frames
    return backbone, reference, pixels


def by_hand(backbone, reference, pixels, modality):
    """Eq. 6 per layer and eq. 8 from hooks on q_proj and out_proj: softmax(Q K̄ᵀ/√d) V̄ written out."""
    layout = backbone.layout
    seen = {}

    def keep_first(key, value):  # the response's own pass through out_proj comes later: not the target
        if key not in seen:
            seen[key] = value

    handles = []
    for layer, module in enumerate(backbone.attention_modules()):
        handles.append(module.q_proj.register_forward_hook(lambda m, i, o, layer=layer: keep_first(("q", layer), o)))
        handles.append(module.out_proj.register_forward_hook(
            lambda m, i, o, layer=layer: keep_first(("out", layer), o)))
    try:
        with torch.no_grad(), route(backbone, modality):
            tokens = backbone.encode_frames(pixels).double().reshape(-1, backbone.llm_hidden_size)
            per_layer = []
            for layer, module in enumerate(backbone.attention_modules()):
                frames = seen[("q", layer)].shape[0]
                queries = seen[("q", layer)].reshape(frames, -1, layout.num_heads, layout.head_dim).transpose(1, 2)
                scores = queries @ reference.keys[layer].transpose(-1, -2) / math.sqrt(layout.head_dim)
                response = torch.softmax(scores, dim=-1) @ reference.values[layer]  # (frames, heads, N, d)
                response = module.out_proj(response.transpose(1, 2).reshape(frames, layout.num_positions, -1))
                target = seen[("out", layer)]
                per_layer.append(float((target[:, POOLED] - response[:, POOLED]).abs().mean()))  # attn_loss l1
    finally:
        for handle in handles:
            handle.remove()
    mean, var = tokens.mean(0), tokens.var(0, unbiased=False)
    dist = float((mean - reference.token_mean).norm() + (var - reference.token_var).norm())  # dist_loss l2norm
    return per_layer, dist


@pytest.mark.parametrize("modality", [None, MODALITY], ids=["before", "after"])
def test_gap_equals_eq6_and_eq8_by_hand(setup, modality):
    backbone, reference, pixels = setup
    stats = token_pass(backbone, [pixels[:2], pixels[2:]], modality=modality, reference=reference)  # streamed
    gap = interface_gap(stats, reference)
    per_layer, dist = by_hand(backbone, reference, pixels, modality)
    assert gap["attention_term_per_layer"] == pytest.approx(per_layer, rel=1e-5)
    assert gap["attention_term"] == pytest.approx(sum(per_layer) / len(per_layer), rel=1e-5)
    assert gap["distribution_term"] == pytest.approx(dist, rel=1e-6)
    assert stats.inputs == 3 and stats.directions.count == 3 * backbone.tokens_per_video(2)


def test_the_adapter_changes_the_gap_and_the_base_path_ignores_it(setup):
    backbone, reference, pixels = setup
    before = interface_gap(token_pass(backbone, [pixels], reference=reference), reference)
    after = interface_gap(token_pass(backbone, [pixels], modality=MODALITY, reference=reference), reference)
    assert before["attention_term"] != pytest.approx(after["attention_term"], rel=1e-3)
    assert before["distribution_term"] != pytest.approx(after["distribution_term"], rel=1e-3)


def test_video_pass_reference_equals_compute_reference(setup, tmp_path):
    from vlynx.media import read_video, write_video
    from vlynx.reference import compute_reference, video_sources

    backbone, _, _ = setup
    rng = np.random.default_rng(0)
    for index in range(3):
        write_video(tmp_path / f"clip{index}.mp4", rng.integers(0, 255, (4, 32, 32, 3)).astype(np.uint8), fps=4)
    paths = sorted(tmp_path.glob("*.mp4"))
    batches = [torch.stack([backbone.preprocess_frames(read_video(p, 2).frames) for p in paths])]
    ours = token_pass(backbone, batches, reference_sums=True).reference()
    theirs = compute_reference(backbone, video_sources([tmp_path]), frames_per_video=2)
    assert torch.allclose(ours.keys, theirs.keys, atol=1e-5) and torch.allclose(ours.values, theirs.values, atol=1e-5)
    assert torch.allclose(ours.token_mean, theirs.token_mean) and torch.allclose(ours.token_var, theirs.token_var)


# ----- the command ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory, setup):
    from vlynx.media import write_video

    backbone = setup[0]
    root = tmp_path_factory.mktemp("diagnose")
    rng = np.random.default_rng(1)
    for folder, shift in (("videos", 0), ("inputs", 70)):
        (root / folder).mkdir()
        for index in range(3):
            frames = np.clip(rng.integers(0, 200, (4, 32, 32, 3)) + shift, 0, 255).astype(np.uint8)
            write_video(root / folder / f"clip{index}.mp4", frames, fps=4)
    backbone.peft_model.save_pretrained(str(root / "adapter"), selected_adapters=[MODALITY])
    return root


def test_cli_writes_table_b1_gap_and_pictures(files, setup, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from vlynx.backbones import load_backbone
    from vlynx.cli import main
    from vlynx.media import read_video

    out = tmp_path / "out"
    code = main(["-q", "diagnose", "--model", "tiny", "--videos", str(files / "videos"), "--frames", "2",
                 "--modality", MODALITY, "--data", str(files / "inputs"), "--adapter", str(files / "adapter"),
                 "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "diagnose.json").read_text())
    # Table B1 by brute force over every pair: the model's embeddings and each video's tokens
    backbone = load_backbone("tiny", seed=0)
    vocab = backbone.model.get_input_embeddings().weight.detach().double()
    vocab = vocab[vocab.norm(dim=1) > 0]
    with torch.no_grad():
        frames = torch.cat([backbone.encode_frames(backbone.preprocess_frames(read_video(p, 2).frames)[None])[0]
                            for p in sorted((files / "videos").glob("*.mp4"))]).double()
    unit_v, unit_f = vocab / vocab.norm(dim=1, keepdim=True), frames / frames.norm(dim=1, keepdim=True)

    def within(unit):
        cos = unit @ unit.T
        return float((1 - cos[~torch.eye(len(unit), dtype=torch.bool)]).mean())

    assert printed["vocab_vocab_cosine"] == pytest.approx(within(unit_v), abs=1e-9)
    assert printed["frame_frame_cosine"] == pytest.approx(within(unit_f), abs=1e-6)
    assert printed["vocab_frame_cosine"] == pytest.approx(float((1 - unit_v @ unit_f.T).mean()), abs=1e-6)
    assert printed["vocab_mean_norm"] == pytest.approx(float(vocab.mean(0).norm()), rel=1e-9)
    assert printed["frame_mean_norm"] == pytest.approx(float(frames.mean(0).norm()), rel=1e-5)
    assert printed["modality_gap"] == pytest.approx(float((unit_v.mean(0) - unit_f.mean(0)).norm()), rel=1e-5)
    gap = printed["interface_gap"]
    assert gap["before"]["attention_term"] != pytest.approx(gap["after"]["attention_term"], rel=1e-3)
    assert len(gap["after"]["attention_term_per_layer"]) == backbone.layout.num_layers
    assert gap["before"]["mmd"] > 0 and gap["before"]["counts"]["inputs"] == 3
    picture = (out / "interface_gap.png").read_bytes()
    assert picture[:8] == b"\x89PNG\r\n\x1a\n" and len(picture) > 10_000
    record = json.loads((out / "vlynx_run.json").read_text())
    assert record["stage"] == "diagnose" and record["results"]["interface_gap"]["after"]["attention_term"] == \
        gap["after"]["attention_term"]


def test_cli_refuses_mismatched_flags_in_one_line(tmp_path, capsys):
    from vlynx.cli import main

    assert main(["diagnose", "--model", "tiny", "--videos", str(tmp_path), "--modality", "audio",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--modality and --data go together" in capsys.readouterr().err
