"""The Qwen2.5-VL backbone on a tiny config saved with `save_pretrained` and reloaded by path.

Expectations come from transformers' own forward (features, logits), the layer's own output
(captured Q/K/V recombined by hand), a per-patch convolution, or hand derivations.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlynx.backbones import load_backbone, preset_config

TINY = "qwen2.5-vl-tiny"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vlynx.word_tokenizer import build_word_tokenizer

    directory = tmp_path_factory.mktemp("tiny-qwen2.5-vl")
    torch.manual_seed(5)
    model = Qwen2_5_VLForConditionalGeneration(preset_config(TINY))
    model.save_pretrained(directory)
    build_word_tokenizer(["what colour is the ball ?", "red green blue"]).save_pretrained(directory)
    return directory


@pytest.fixture
def backbone(checkpoint):
    return load_backbone(checkpoint)


def pixels(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_checkpoint_loads_through_from_pretrained(checkpoint, backbone):
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(5)
    original = Qwen2_5_VLForConditionalGeneration(preset_config(TINY)).state_dict()
    loaded = backbone.model.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[name], loaded[name]) for name in original)
    assert backbone.tokenizer is not None and backbone.image_size == 32


def test_real_presets_build_without_weights():
    backbone = load_backbone("qwen2.5-vl-3b", empty=True)
    layout = backbone.layout
    # 448 px / 14 px patches = 32 x 32 grid; 1280 / 16 heads = 80
    assert (layout.num_layers, layout.num_heads, layout.head_dim, layout.grid) == (32, 16, 80, (32, 32))
    assert backbone.image_size == 448 and backbone.llm_hidden_size == 2048
    # 8 frames = 4 steps of 16 x 16 merged tokens, plus vision start/end
    assert backbone.tokens_per_video(8) == 4 * 256 + 2
    assert backbone.tokens_per_video(7) == 4 * 256 + 2  # the odd last frame is repeated
    positions = backbone.query_positions()
    assert len(positions) == 256
    assert set((positions // 32).tolist()) == set(range(0, 32, 2)) == set((positions % 32).tolist())
    assert load_backbone("qwen2.5-vl-7b", empty=True).llm_hidden_size == 3584


def test_windowed_layers_mask_the_reference_by_window(backbone):
    # tiny: 8 x 8 patches, windows of 16 px = 4 x 4 patches -> 2 x 2 windows; layer 1 attends fully
    mask = backbone.reference_attention_mask(0)
    assert backbone.reference_attention_mask(1) is None
    window = [(r // 4) * 2 + c // 4 for r in range(8) for c in range(8)]
    expected = torch.tensor([[a == b for b in window] for a in window])
    assert torch.equal(mask, expected)


def test_preprocessing_matches_transformers_image_transforms(backbone):
    from transformers.image_transforms import normalize, rescale, resize
    from transformers.image_utils import PILImageResampling

    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 52, 3), dtype=np.uint8)
    for frame, got in zip(frames, backbone.preprocess_frames(frames)):
        expected = resize(frame, (32, 32), resample=PILImageResampling.BICUBIC)
        expected = normalize(rescale(expected.astype(np.float32), 1 / 255),
                             mean=[0.48145466, 0.4578275, 0.40821073], std=[0.26862954, 0.26130258, 0.27577711])
        assert torch.allclose(got, torch.from_numpy(expected).permute(2, 0, 1).float(), atol=1e-5)


def processor_patches(video: torch.Tensor, patch: int = 4, merge: int = 2, temporal: int = 2) -> torch.Tensor:
    """Qwen2-VL's processor layout written out with loops: step, block row, block col, row/col in block."""
    rows = video.shape[-1] // patch
    out = []
    for step in range(video.shape[0] // temporal):
        for block_row in range(rows // merge):
            for block_col in range(rows // merge):
                for i in range(merge):
                    for j in range(merge):
                        r, c = block_row * merge + i, block_col * merge + j
                        crop = video[step * temporal:(step + 1) * temporal, :, r * patch:(r + 1) * patch,
                                     c * patch:(c + 1) * patch]  # (t, C, p, p)
                        out.append(crop.transpose(0, 1).flatten())  # channels, temporal, p, p
    return torch.stack(out)


def test_tokens_are_what_the_model_feeds_its_llm(backbone):
    video = pixels(2, 4)
    ours = backbone.encode_frames(video)
    assert ours.shape == (2, 2 * 16, 64)
    for row in range(2):
        grid = torch.tensor([[2, 8, 8]])
        theirs = backbone.model.model.get_video_features(pixel_values_videos=processor_patches(video[row]),
                                                         video_grid_thw=grid, return_dict=True).pooler_output[0]
        torch.testing.assert_close(ours[row], theirs, rtol=1e-5, atol=1e-6)


def test_llm_inputs_give_the_models_own_logits(backbone):
    """build_llm_inputs (blocks, vision start/end, M-RoPE ids) against the model's own forward from ids + pixels."""
    config = backbone.model.config
    video = pixels(1, 3)  # odd: the last frame repeats
    text_before, text_after = [9, 10, backbone.image_token_id], [11, 12, 13]
    blocks = [backbone.encode_frames(video)]
    ours = backbone.build_llm_inputs([text_before + text_after], blocks)
    assert ours["position_ids"].shape == (3, 1, 2 + 2 + 32 + 3)
    logits = backbone.model(**ours).logits

    padded = torch.cat([video, video[:, -1:]], dim=1)[0]
    ids = [9, 10, config.vision_start_token_id, *[config.video_token_id] * 32, config.vision_end_token_id, 11, 12, 13]
    ids = torch.tensor([ids])
    expected = backbone.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                              pixel_values_videos=processor_patches(padded), video_grid_thw=torch.tensor([[2, 8, 8]]),
                              mm_token_type_ids=(ids == config.video_token_id).int() * 2).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


def test_left_padding_keeps_each_rows_positions(backbone):
    blocks = [backbone.encode_frames(pixels(2, 2))]
    ids = [[9, backbone.image_token_id, 10], [9, 9, 9, backbone.image_token_id, 10]]
    batch = backbone.build_llm_inputs(ids, blocks, padding_side="left")
    single = backbone.build_llm_inputs(ids[:1], [blocks[0][:1]])
    width = single["position_ids"].shape[-1]
    assert torch.equal(batch["position_ids"][:, 0, -width:], single["position_ids"][:, 0])
    assert batch["attention_mask"][0].tolist() == [0, 0] + [1] * width


def test_capture_is_what_each_layer_attends_with(backbone):
    """Recombining the captured Q/K/V (window mask on windowed layers) gives the layer's own output."""
    from vlynx.losses import recorded_layers

    video = pixels(2, 4)
    with torch.no_grad(), backbone.capture_attention() as capture, recorded_layers(backbone, None) as records:
        backbone.encode_frames(video)
    layout = backbone.layout
    for layer in range(layout.num_layers):
        queries, keys, values = capture.queries[layer], capture.keys[layer], capture.values[layer]
        assert queries.shape == (4, layout.num_heads, 64, layout.head_dim)  # 2 videos x 2 steps
        scores = queries @ keys.transpose(-1, -2) / layout.head_dim ** 0.5
        mask = backbone.reference_attention_mask(layer)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        attended = (scores.softmax(-1) @ values).transpose(1, 2).reshape(4, 64, -1)
        torch.testing.assert_close(attended, records[layer].before, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(backbone.output_projection(layer)(attended), records[layer].after,
                                   rtol=1e-4, atol=1e-5)


def test_captured_values_sit_at_their_grid_positions(backbone):
    """Layer 0's V at (step, row, col) is v(norm1(conv(that patch of the step's two frames))): no RoPE on V."""
    video = pixels(1, 2, seed=3)
    with torch.no_grad(), backbone.capture_attention() as capture:
        backbone.encode_frames(video)
    tower = backbone.vision_tower
    block = tower.blocks[0]
    width = tower.config.hidden_size
    with torch.no_grad():
        for row, col in [(0, 0), (0, 5), (3, 2), (7, 7), (6, 1)]:
            crop = video[0, :, :, 4 * row:4 * row + 4, 4 * col:4 * col + 4].transpose(0, 1)  # (C, t, p, p)
            embedded = tower.patch_embed.proj(crop[None]).flatten()
            value = block.attn.qkv(block.norm1(embedded[None]))[0, 2 * width:].view(2, -1)  # (heads, d)
            torch.testing.assert_close(capture.values[0][0, :, row * 8 + col], value, rtol=1e-4, atol=1e-5)


def test_video_tokens_with_adapters_are_bit_identical(checkpoint, backbone):
    from vlynx.adapters import add_llm_adapter, add_vision_adapter, encode

    video = pixels(1, 4)
    plain = load_backbone(checkpoint).encode_frames(video)
    add_vision_adapter(backbone, "depth")
    add_llm_adapter(backbone)
    with torch.no_grad():
        for name, parameter in backbone.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    names = [n for n, _ in backbone.model.named_parameters() if ".depth." in n]
    assert any(".merger.mlp.0." in n for n in names) and any(".attn.qkv." in n for n in names)
    with torch.no_grad():
        assert torch.equal(encode(backbone, video), plain)
        assert not torch.allclose(encode(backbone, video, "depth"), plain)


def test_two_images_per_frame_are_encoded_as_two_videos_and_averaged(backbone):
    from vlynx.adapters import encode

    stream = pixels(1, 4)  # 2 frames x (image a, image b)
    with torch.no_grad():
        got = encode(backbone, stream, images_per_frame=2)
        first = backbone.encode_frames(stream[:, 0::2])
        second = backbone.encode_frames(stream[:, 1::2])
    torch.testing.assert_close(got, (first + second) / 2)


def test_reference_statistics_equal_a_direct_computation(backbone, tmp_path):
    from vlynx.media import read_video, write_video
    from vlynx.reference import VideoSource, compute_reference

    rng = np.random.default_rng(1)
    paths = [write_video(tmp_path / f"v{i}.mp4", rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), fps=4)
             for i in range(3)]
    stats = compute_reference(backbone, [VideoSource("clips", paths)], 3, batch_size=2)
    keys, values, tokens = [], [], []
    with torch.no_grad():
        for path in paths:
            video = backbone.preprocess_frames(read_video(path, 3).frames)[None]
            with backbone.capture_attention() as capture:
                tokens.append(backbone.encode_frames(video)[0].double())
            keys.append(torch.stack([capture.keys[layer] for layer in range(2)]).double())  # (layers, steps, ...)
            values.append(torch.stack([capture.values[layer] for layer in range(2)]).double())
    keys, values, tokens = torch.cat(keys, 1), torch.cat(values, 1), torch.cat(tokens)
    assert keys.shape[1] == 3 * 2  # 3 frames = 2 steps per video
    torch.testing.assert_close(stats.keys.double(), keys.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stats.values.double(), values.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stats.token_mean.double(), tokens.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stats.token_var.double(), tokens.var(0, unbiased=False), rtol=1e-4, atol=1e-5)


def test_windowed_attention_loss_matches_the_formula_by_hand(backbone):
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
    keep = [r * 8 + c for r in range(0, 8, 2) for c in range(0, 8, 2)]
    window = torch.tensor([(r // 4) * 2 + c // 4 for r in range(8) for c in range(8)])
    distances = []
    for layer in range(2):
        queries, keys, values = capture.queries[layer], capture.keys[layer], capture.values[layer]
        proj = backbone.output_projection(layer)
        with torch.no_grad(), route(backbone, "depth"):
            own = proj(((queries @ keys.transpose(-1, -2) / 4.0 + _window_bias(layer, window)).softmax(-1) @ values)
                       .transpose(1, 2).reshape(1, 64, -1))[:, keep]
            ref_scores = queries[:, :, keep] @ ref_k[layer].transpose(-1, -2) / 4.0 + _window_bias(layer, window)[keep]
            reference = proj((ref_scores.softmax(-1) @ ref_v[layer]).transpose(1, 2).reshape(1, 16, -1))
        distances.append((own - reference).abs().mean())
    torch.testing.assert_close(got["attn"], torch.stack(distances).mean(), rtol=1e-4, atol=1e-6)


def _window_bias(layer: int, window: torch.Tensor) -> torch.Tensor:
    if layer == 1:  # the tiny model's full-attention layer
        return torch.zeros(64, 64)
    return torch.zeros(64, 64).masked_fill(window[:, None] != window[None, :], float("-inf"))


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
    parameters = [p for p in backbone.model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=0.05)
    video = pixels(2, 2)
    losses = []
    for _ in range(3):
        loss = alignment_losses(backbone, "depth", video, ref_k, ref_v, mean, var)["loss"]
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0]


def test_added_parameters_reproduce_table_b3():
    """Qwen2.5-VL-3B, rank 64: r * (in + out) per Linear, summed by hand from the layer shapes."""
    from vlynx.params import count_added_parameters

    r = 64
    # vision block (hidden 1280, MLP 3420): qkv 1280->3840, proj, gate, up, down
    block = r * (1280 + 3840) + r * (1280 + 1280) + 2 * r * (1280 + 3420) + r * (3420 + 1280)
    merger = r * (5120 + 5120) + r * (5120 + 2048)  # 2x2 x 1280 = 5120 -> 5120 -> 2048
    vision = 32 * block + merger
    assert vision == 45_719_552
    # LLM layer (hidden 2048, 2 KV heads x 128 = 256, MLP 11008): q, k, v, o, gate, up, down
    layer = 2 * r * (2048 + 2048) + 2 * r * (2048 + 256) + 3 * r * (2048 + 11008)
    llm = 36 * layer
    assert llm == 119_734_272
    counts = count_added_parameters("qwen2.5-vl-3b")
    assert (counts.vision_lora, counts.llm_lora) == (vision, llm)
    assert counts.total == 165_453_824 and round(counts.total / 1e6, 1) == 165.5  # the paper: +165.5M


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
