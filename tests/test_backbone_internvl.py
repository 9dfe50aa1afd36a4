"""The InternVL-2.5 backbone on a tiny config saved with `save_pretrained` and reloaded by path.

Expectations come from transformers' own forward (logits), the encoder's hidden states put through
a pixel shuffle written out with loops, the layer's own output (captured Q/K/V recombined by hand),
a per-patch convolution, or hand derivations of the parameter counts.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlynx.backbones import load_backbone, preset_config

TINY = "internvl2.5-tiny"
GRID, CLS = 8, 1  # tiny: 32 px / 4 px patches; one CLS token before the grid


def build_model():
    from transformers import InternVLForConditionalGeneration

    torch.manual_seed(7)
    model = InternVLForConditionalGeneration(preset_config(TINY))
    with torch.no_grad():  # transformers initialises these to zeros; random values make the tests see them
        embeddings = model.model.vision_tower.embeddings
        embeddings.cls_token.normal_()
        embeddings.position_embeddings.normal_()
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from vlynx.word_tokenizer import build_word_tokenizer

    directory = tmp_path_factory.mktemp("tiny-internvl")
    build_model().save_pretrained(directory)
    build_word_tokenizer(["what colour is the ball ?", "red green blue"]).save_pretrained(directory)
    return directory


@pytest.fixture
def backbone(checkpoint):
    return load_backbone(checkpoint)


def pixels(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_checkpoint_loads_through_from_pretrained(checkpoint, backbone):
    original = build_model().state_dict()
    loaded = backbone.model.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[name], loaded[name]) for name in original)
    assert backbone.tokenizer is not None and backbone.image_size == 32


def test_real_presets_build_without_weights():
    backbone = load_backbone("internvl2.5-4b", empty=True)
    layout = backbone.layout
    # 448 px / 14 px = 32 x 32 patches after the CLS token; 1024 / 16 heads = 64
    assert (layout.num_layers, layout.num_heads, layout.head_dim, layout.grid) == (24, 16, 64, (32, 32))
    assert layout.num_positions == 1 + 1024
    assert backbone.image_size == 448 and backbone.llm_hidden_size == 2048
    # one 448 px tile per frame, 16 x 16 tokens after the 2x2 pixel shuffle, plus <img> and </img>
    assert backbone.tokens_per_video(8) == 8 * 256 + 2
    positions = backbone.query_positions() - 1
    assert len(positions) == 256
    assert set((positions // 32).tolist()) == set(range(0, 32, 2)) == set((positions % 32).tolist())
    eight = load_backbone("internvl2.5-8b", empty=True)
    assert eight.llm_hidden_size == 4096 and eight.model.config.text_config.model_type == "llama"


def test_other_feature_layers_are_refused(checkpoint, tmp_path):
    import json
    import shutil

    from vlynx.errors import VlynxError

    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy)
    config = json.loads((copy / "config.json").read_text())
    config["vision_feature_layer"] = -2
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(VlynxError, match="vision_feature_layer"):
        load_backbone(copy)


def test_preprocessing_matches_transformers_image_transforms(backbone):
    from transformers.image_transforms import normalize, rescale, resize
    from transformers.image_utils import PILImageResampling

    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 52, 3), dtype=np.uint8)
    for frame, got in zip(frames, backbone.preprocess_frames(frames)):
        expected = resize(frame, (32, 32), resample=PILImageResampling.BICUBIC)
        expected = normalize(rescale(expected.astype(np.float32), 1 / 255),
                             mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        assert torch.allclose(got, torch.from_numpy(expected).permute(2, 0, 1).float(), atol=1e-5)


def test_tokens_are_the_encoder_output_shuffled_and_projected_by_hand(backbone):
    """Token (i, j) of a frame = projector(patches (2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1) concatenated)."""
    video = pixels(2, 3)
    with torch.no_grad():
        ours = backbone.encode_frames(video)
        assert ours.shape == (2, 3 * 16, 64)
        hidden = backbone.vision_tower(pixel_values=video.flatten(0, 1)).last_hidden_state  # (6, 1 + 64, 32)
        for frame in range(6):
            patches = hidden[frame, CLS:].reshape(GRID, GRID, -1)
            for i in range(GRID // 2):
                for j in range(GRID // 2):
                    block = torch.cat([patches[2 * i, 2 * j], patches[2 * i, 2 * j + 1],
                                       patches[2 * i + 1, 2 * j], patches[2 * i + 1, 2 * j + 1]])
                    expected = backbone.projector(block[None])[0]
                    got = ours[frame // 3, (frame % 3) * 16 + i * 4 + j]
                    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_llm_inputs_give_the_models_own_logits(backbone):
    """build_llm_inputs (blocks inside <img> ... </img>) against the model's own forward from ids + pixel values."""
    config = backbone.model.config
    video = pixels(1, 2)
    before, after = [9, 10, backbone.image_token_id], [11, 12, 13]
    ours = backbone.build_llm_inputs([before + after], [backbone.encode_frames(video)])
    assert "position_ids" not in ours and ours["inputs_embeds"].shape[1] == 2 + 2 + 32 + 3
    logits = backbone.model(**ours).logits

    ids = torch.tensor([[9, 10, config.image_start_token_id, *[config.image_token_id] * 32,
                         config.image_end_token_id, 11, 12, 13]])
    expected = backbone.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=video[0]).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


def test_tokenizer_delimiters_win_over_the_config(backbone):
    from vlynx.word_tokenizer import build_word_tokenizer

    backbone.tokenizer = build_word_tokenizer(["red"], extra_words=["<img>", "</img>"])
    assert backbone._image_delimiters() == (8, 7)  # specials 0-5, ".", then "</img>" < "<img>" in sorted order
    backbone.tokenizer = build_word_tokenizer(["red"])  # knows neither: the tiny config's ids
    assert backbone._image_delimiters() == (6, 7)


def test_capture_is_what_each_layer_attends_with(backbone):
    """Recombining the captured Q/K/V (CLS included, full attention) gives the layer's own output."""
    from vlynx.losses import recorded_layers

    video = pixels(2, 2)
    with torch.no_grad(), backbone.capture_attention() as capture, recorded_layers(backbone, None) as records:
        backbone.encode_frames(video)
    layout = backbone.layout
    for layer in range(layout.num_layers):
        queries, keys, values = capture.queries[layer], capture.keys[layer], capture.values[layer]
        assert queries.shape == (4, layout.num_heads, CLS + GRID * GRID, layout.head_dim)  # 2 videos x 2 frames
        attended = ((queries @ keys.transpose(-1, -2) / layout.head_dim ** 0.5).softmax(-1) @ values)
        attended = attended.transpose(1, 2).reshape(4, CLS + GRID * GRID, -1)
        torch.testing.assert_close(attended, records[layer].before, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(backbone.output_projection(layer)(attended), records[layer].after,
                                   rtol=1e-4, atol=1e-5)


def test_captured_values_sit_at_their_positions(backbone):
    """Layer 0's V at 1 + row*8 + col is v(norm(conv(that patch) + its position embedding)); V at 0 is the CLS's."""
    video = pixels(1, 1, seed=3)
    with torch.no_grad(), backbone.capture_attention() as capture:
        backbone.encode_frames(video)
    tower = backbone.vision_tower
    layer = tower.encoder.layer[0]
    embeddings = tower.embeddings
    position = embeddings.position_embeddings[0]  # (1 + 64, width)
    with torch.no_grad():
        def value(embedded: torch.Tensor) -> torch.Tensor:
            return layer.attention.v_proj(layer.layernorm_before(embedded)).view(2, -1)  # (heads, d)

        torch.testing.assert_close(capture.values[0][0, :, 0], value(embeddings.cls_token[0, 0] + position[0]),
                                   rtol=1e-4, atol=1e-5)
        for row, col in [(0, 0), (0, 5), (3, 2), (7, 7), (6, 1)]:
            crop = video[0, 0, :, 4 * row:4 * row + 4, 4 * col:4 * col + 4]
            embedded = embeddings.patch_embeddings.projection(crop[None]).flatten() + position[1 + row * 8 + col]
            torch.testing.assert_close(capture.values[0][0, :, 1 + row * 8 + col], value(embedded),
                                       rtol=1e-4, atol=1e-5)


def test_video_tokens_with_adapters_are_bit_identical(checkpoint, backbone):
    from vlynx.adapters import add_llm_adapter, add_vision_adapter, encode

    video = pixels(1, 3)
    plain = load_backbone(checkpoint).encode_frames(video)
    add_vision_adapter(backbone, "depth")
    add_llm_adapter(backbone)
    with torch.no_grad():
        for name, parameter in backbone.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    names = [n for n, _ in backbone.model.named_parameters() if ".depth." in n]
    assert all(".vision_tower.encoder.layer." in n for n in names)
    for linear in ("q_proj", "k_proj", "v_proj", "projection_layer", "fc1", "fc2"):
        assert sum(f".{linear}." in n for n in names) == 2 * 2  # 2 layers x (A, B)
    with torch.no_grad():
        assert torch.equal(encode(backbone, video), plain)
        assert not torch.allclose(encode(backbone, video, "depth"), plain)


def test_reference_statistics_equal_a_direct_computation(backbone, tmp_path):
    from vlynx.media import read_video, write_video
    from vlynx.reference import VideoSource, compute_reference

    rng = np.random.default_rng(1)
    paths = [write_video(tmp_path / f"v{i}.mp4", rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), fps=4)
             for i in range(3)]
    stats = compute_reference(backbone, [VideoSource("clips", paths)], 2, batch_size=2)
    keys, values, tokens = [], [], []
    with torch.no_grad():
        for path in paths:
            video = backbone.preprocess_frames(read_video(path, 2).frames)[None]
            with backbone.capture_attention() as capture:
                tokens.append(backbone.encode_frames(video)[0].double())
            keys.append(torch.stack([capture.keys[layer] for layer in range(2)]).double())  # (layers, frames, ...)
            values.append(torch.stack([capture.values[layer] for layer in range(2)]).double())
    keys, values, tokens = torch.cat(keys, 1), torch.cat(values, 1), torch.cat(tokens)
    assert keys.shape[1] == 3 * 2 and keys.shape[3] == CLS + GRID * GRID
    torch.testing.assert_close(stats.keys.double(), keys.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stats.values.double(), values.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stats.token_mean.double(), tokens.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stats.token_var.double(), tokens.var(0, unbiased=False), rtol=1e-4, atol=1e-5)


def test_attention_loss_matches_the_formula_by_hand(backbone):
    """Eq. (4)-(6) with the CLS key among the reference keys and one query per 2x2 block."""
    from vlynx.adapters import add_vision_adapter, route
    from vlynx.losses import AlignmentLossSettings, alignment_losses

    add_vision_adapter(backbone, "depth")
    layout = backbone.layout
    shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
    generator = torch.Generator().manual_seed(2)
    ref_k, ref_v = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    video = pixels(1, 2)
    settings = AlignmentLossSettings(no_dist=True)
    with torch.no_grad():
        got = alignment_losses(backbone, "depth", video, ref_k, ref_v, torch.zeros(64), torch.ones(64), settings)
        with route(backbone, "depth"), backbone.capture_attention() as capture:
            backbone.encode_frames(video)
    keep = [1 + r * 8 + c for r in range(0, 8, 2) for c in range(0, 8, 2)]
    distances = []
    for layer in range(2):
        queries, keys, values = capture.queries[layer], capture.keys[layer], capture.values[layer]
        proj = backbone.output_projection(layer)
        with torch.no_grad(), route(backbone, "depth"):
            own = proj(((queries @ keys.transpose(-1, -2) / 4.0).softmax(-1) @ values)
                       .transpose(1, 2).reshape(2, 65, -1))[:, keep]
            reference = proj(((queries[:, :, keep] @ ref_k[layer].transpose(-1, -2) / 4.0).softmax(-1) @ ref_v[layer])
                             .transpose(1, 2).reshape(2, 16, -1))
        distances.append((own - reference).abs().mean())
    torch.testing.assert_close(got["attn"], torch.stack(distances).mean(), rtol=1e-4, atol=1e-6)


def test_an_alignment_step_lowers_the_loss(backbone):
    from vlynx.adapters import add_vision_adapter
    from vlynx.losses import alignment_losses

    add_vision_adapter(backbone, "depth")
    layout = backbone.layout
    shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
    generator = torch.Generator().manual_seed(4)
    ref_k, ref_v = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    mean, var = torch.randn(64, generator=generator), torch.rand(64, generator=generator)
    backbone.model.eval()  # no LoRA dropout: the two losses differ by the step alone
    optimizer = torch.optim.SGD([p for p in backbone.model.parameters() if p.requires_grad], lr=0.05)
    video = pixels(2, 2)
    losses = []
    for _ in range(3):
        loss = alignment_losses(backbone, "depth", video, ref_k, ref_v, mean, var)["loss"]
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0]


def test_added_parameters_and_the_papers_fused_qkv_count():
    """InternVL-2.5-4B, rank 64: r * (in + out) per Linear, summed by hand from the layer shapes."""
    from vlynx.params import count_added_parameters

    r = 64
    # InternViT-300M layer (hidden 1024, MLP 4096), transformers' split layout: q, k, v, projection_layer, fc1, fc2
    split_layer = 3 * r * (1024 + 1024) + r * (1024 + 1024) + r * (1024 + 4096) + r * (4096 + 1024)
    # the original InternViT's fused qkv (1024 -> 3072) instead of q, k, v
    fused_layer = r * (1024 + 3072) + r * (1024 + 1024) + r * (1024 + 4096) + r * (4096 + 1024)
    split, fused = 24 * split_layer, 24 * fused_layer
    assert (split, fused) == (28_311_552, 25_165_824)
    # Qwen2.5-3B layer (hidden 2048, 2 KV heads x 128 = 256, MLP 11008): q, k, v, o, gate, up, down
    llm = 36 * (2 * r * (2048 + 2048) + 2 * r * (2048 + 256) + 3 * r * (2048 + 11008))
    assert llm == 119_734_272
    counts = count_added_parameters("internvl2.5-4b")
    assert (counts.vision_lora, counts.llm_lora) == (split, llm)
    assert counts.total == 148_045_824
    assert fused + llm == 144_900_096 and round((fused + llm) / 1e6, 1) == 144.9  # the paper: +144.9M
    assert counts.vision_layout == "q_proj, k_proj, v_proj, projection_layer, fc1, fc2 (x24 each; 144 Linears)"
    assert f"{split - fused:,d} fewer" in counts.notes[0]
    # InternVL-2.5-8B: the same encoder; InternLM2.5-7B (hidden 4096, 8 KV heads x 128 = 1024, MLP 14336)
    llm_8b = 32 * (2 * r * (4096 + 4096) + 2 * r * (4096 + 1024) + 3 * r * (4096 + 14336))
    assert count_added_parameters("internvl2.5-8b").as_dict() == {
        "vision_lora": split, "llm_lora": llm_8b, "total": split + llm_8b}


def test_gradient_checkpointing_gives_the_same_alignment_gradients(checkpoint):
    from vlynx.adapters import add_vision_adapter, same_routing_in_recomputation
    from vlynx.losses import alignment_losses

    gradients = []
    for checkpointing in (False, True):
        backbone = load_backbone(checkpoint)
        add_vision_adapter(backbone, "depth")
        backbone.model.eval()
        with torch.no_grad():
            for name, parameter in backbone.model.named_parameters():
                if "lora_" in name:  # the same LoRA weights in both runs
                    parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(9)) * 0.1)
        if checkpointing:
            tower = backbone.vision_tower
            tower.train()  # HF checkpoints its layers only in training mode; LoRA dropout stays off
            for module in tower.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.eval()
            tower.activation_checkpointing_enable(activation_checkpointing_kwargs={
                "use_reentrant": False, "context_fn": same_routing_in_recomputation(tower)})
        layout = backbone.layout
        shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
        generator = torch.Generator().manual_seed(4)
        ref_k, ref_v = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
        loss = alignment_losses(backbone, "depth", pixels(1, 2), ref_k, ref_v, torch.zeros(64), torch.ones(64))["loss"]
        loss.backward()
        gradients.append({n: p.grad for n, p in backbone.model.named_parameters() if p.requires_grad})
    assert gradients[0].keys() == gradients[1].keys()
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-4, atol=1e-6)
