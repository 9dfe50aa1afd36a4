"""The LLaVA-OneVision backbone: loading, preprocessing, frames -> tokens, attention capture."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlynx.backbones import load_backbone, preset_config
from vlynx.errors import VlynxError


def random_frames(count: int, height: int = 40, width: int = 52, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def test_checkpoint_loads_through_from_pretrained(tiny_checkpoint):
    from transformers import LlavaOnevisionForConditionalGeneration

    backbone = load_backbone(tiny_checkpoint)
    torch.manual_seed(1)  # the fixture saved a model built with this seed
    original = LlavaOnevisionForConditionalGeneration(preset_config("tiny")).state_dict()
    loaded = backbone.model.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[name], loaded[name]) for name in original)
    assert backbone.tokenizer is not None
    assert backbone.tokenizer.convert_tokens_to_ids("<video>") == backbone.model.config.video_token_id
    assert not backbone.model.training


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(VlynxError, match=r"no such model directory \(presets: .*llava-onevision-0\.5b.*; "
                                         r"shipped: miniworld\)"):
        load_backbone(tmp_path / "nowhere" / "model")


def test_real_presets_build_without_weights():
    backbone = load_backbone("llava-onevision-0.5b", empty=True)
    layout = backbone.layout
    assert (layout.num_layers, layout.num_heads, layout.head_dim, layout.grid) == (26, 16, 72, (27, 27))
    assert backbone.image_size == 384
    assert backbone.llm_hidden_size == 896
    assert backbone.device.type == "meta"
    assert backbone.tokens_per_video(8) == 8 * 14 * 14 + 1  # 196 pooled tokens per frame + one newline
    positions = backbone.pooled_positions()
    assert len(positions) == 196
    rows, cols = positions // 27, positions % 27
    assert set(rows.tolist()) == set(range(0, 27, 2)) == set(cols.tolist())
    assert load_backbone("llava-onevision-7b", empty=True).llm_hidden_size == 3584


def test_preprocessing_matches_transformers_image_transforms(tiny_backbone):
    from transformers.image_transforms import normalize, rescale, resize
    from transformers.image_utils import PILImageResampling

    frames = random_frames(2)
    ours = tiny_backbone.preprocess_frames(frames)
    for frame, got in zip(frames, ours):
        size = tiny_backbone.image_size
        expected = resize(frame, (size, size), resample=PILImageResampling.BICUBIC)
        expected = normalize(rescale(expected.astype(np.float32), 1 / 255), mean=0.5, std=0.5)
        assert torch.allclose(got, torch.from_numpy(expected).permute(2, 0, 1).float(), atol=1e-6)


def test_tokens_are_what_the_model_feeds_its_llm(tiny_backbone):
    """Splicing our tokens into the text embeddings gives the model's own logits for a video prompt."""
    model = tiny_backbone.model
    pixels = tiny_backbone.preprocess_frames(random_frames(3))[None]
    tokens = tiny_backbone.encode_frames(pixels)
    count = tiny_backbone.tokens_per_video(3)
    assert tokens.shape == (1, count, tiny_backbone.llm_hidden_size)

    video_id = model.config.video_token_id
    input_ids = torch.tensor([[2, 7, 8] + [video_id] * count + [9, 10]])
    with torch.no_grad():
        reference = model(input_ids=input_ids, pixel_values_videos=pixels).logits
        embeds = model.get_input_embeddings()(input_ids).clone()
        embeds[0, 3 : 3 + count] = tokens[0]
        ours = model(inputs_embeds=embeds).logits
    assert torch.allclose(ours, reference, atol=1e-6)


def test_tokens_follow_the_pooling_recipe(tiny_backbone):
    """Independent recomputation: encoder -> projector -> 2x bilinear pooling -> + image_newline."""
    pixels = tiny_backbone.preprocess_frames(random_frames(2))
    with torch.no_grad():
        # vision_feature_layer = -1: the last encoder layer's output, before SigLIP's post-layernorm
        hidden = tiny_backbone.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]  # (F, 16, 32)
        projected = tiny_backbone.projector(hidden)
        grid = projected.reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
        pooled = torch.nn.functional.interpolate(grid, size=(2, 2), mode="bilinear").permute(0, 2, 3, 1)
        expected = torch.cat([pooled.reshape(1, 8, -1), tiny_backbone.model.model.image_newline[None, None]], 1)
        ours = tiny_backbone.encode_frames(pixels[None])
    assert torch.allclose(ours, expected, atol=1e-6)


def test_attention_capture_records_the_encoders_own_qkv(tiny_backbone):
    pixels = tiny_backbone.preprocess_frames(random_frames(2))[None]
    layer_inputs = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, i=i: layer_inputs.__setitem__(i, out))
        for i, module in enumerate(layer.layer_norm1 for layer in tiny_backbone.vision_tower.encoder.layers)
    ]
    with torch.no_grad():
        plain = tiny_backbone.encode_frames(pixels)
        with tiny_backbone.capture_attention() as capture:
            captured = tiny_backbone.encode_frames(pixels)
    for hook in hooks:
        hook.remove()
    assert torch.equal(plain, captured)  # capturing does not change the computation
    layout = tiny_backbone.layout
    for layer, attention in enumerate(tiny_backbone.attention_modules()):
        hidden = layer_inputs[layer]  # (frames, positions, width), input of q/k/v projections
        for name, projection in (("queries", attention.q_proj), ("keys", attention.k_proj),
                                 ("values", attention.v_proj)):
            expected = projection(hidden).reshape(2, layout.num_positions, layout.num_heads, layout.head_dim)
            got = getattr(capture, name)[layer]
            assert got.shape == (2, layout.num_heads, layout.num_positions, layout.head_dim)
            assert torch.allclose(got, expected.transpose(1, 2), atol=1e-6)
    # the attention implementation is restored afterwards
    assert tiny_backbone.attention_modules()[0].config._attn_implementation in ("sdpa", "eager")


def test_fingerprint_tells_weights_apart():
    first, second = load_backbone("tiny", seed=0), load_backbone("tiny", seed=1)
    assert first.fingerprint() == load_backbone("tiny", seed=0).fingerprint()
    assert first.fingerprint() != second.fingerprint()
    assert load_backbone("tiny", empty=True).fingerprint()["weights"] is None


def test_one_checkpoint_has_one_fingerprint_in_float32_and_bfloat16(tiny_checkpoint):
    """`--dtype` changes the precision, not the model: reference statistics made from a float32 load
    serve a bfloat16 load and back (the digest hashes weights rounded to bfloat16)."""
    full = load_backbone(tiny_checkpoint, dtype="float32")
    rounded = load_backbone(tiny_checkpoint, dtype="bfloat16", language_model=False)
    assert full.dtype == torch.float32 and rounded.dtype == torch.bfloat16
    assert rounded.fingerprint() == full.fingerprint()
    # one changed weight (well above bfloat16's resolution) is another model
    with torch.no_grad():
        rounded.projector.linear_2.weight[0, 0] += 0.25 * rounded.projector.linear_2.weight[0, 0].abs() + 0.1
    assert rounded.fingerprint()["weights"] != full.fingerprint()["weights"]
    with pytest.raises(VlynxError, match="unknown dtype 'float64'"):
        load_backbone(tiny_checkpoint, dtype="float64")


def test_chat_template_keeps_plain_text_turns(tiny_backbone):
    """A processor-style template (content lists only) would drop text: ChatML is used instead."""
    from vlynx.word_tokenizer import build_word_tokenizer

    tokenizer = build_word_tokenizer(["what is it ?"])
    tokenizer.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }} "
        "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}"
        "{% endfor %}<|im_end|>{% endfor %}"
    )
    tiny_backbone.tokenizer = tokenizer
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "<image>\nwhat is it ?"}],
                                             chat_template=tiny_backbone.chat_template, tokenize=False)
    assert rendered == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                        "<|im_start|>user\n<image>\nwhat is it ?<|im_end|>\n")


def test_streaming_capture_hands_each_layer_to_the_callback(tiny_backbone):
    pixels = tiny_backbone.preprocess_frames(random_frames(2))[None]
    seen = {}
    with torch.no_grad():
        with tiny_backbone.capture_attention() as stored:
            tiny_backbone.encode_frames(pixels)
        with tiny_backbone.capture_attention(on_layer=lambda i, q, k, v: seen.__setitem__(i, (q, k, v))) as streamed:
            tiny_backbone.encode_frames(pixels)
    assert sorted(seen) == list(range(tiny_backbone.layout.num_layers))
    assert not streamed.keys  # nothing kept when a callback takes the tensors
    for layer, (queries, keys, values) in seen.items():
        assert torch.equal(queries, stored.queries[layer])
        assert torch.equal(keys, stored.keys[layer]) and torch.equal(values, stored.values[layer])


def test_a_random_preset_has_one_encoder_whether_or_not_its_llm_is_built():
    """`reference` loads the whole tiny preset, `align` only its encoder: their statistics must fit each other."""
    full, encoder_only = load_backbone("tiny", seed=3), load_backbone("tiny", seed=3, language_model=False)
    assert encoder_only.fingerprint() == full.fingerprint()
    pixels = torch.randn(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(encoder_only.encode_frames(pixels), full.encode_frames(pixels))
    assert not torch.equal(load_backbone("tiny", seed=4).encode_frames(pixels), full.encode_frames(pixels))
