"""Adapter routing: video through the base encoder (bit-identical), a modality through its own LoRA."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from vlynx.adapters import (
    LLM_ADAPTER,
    LoraSettings,
    adapter_names,
    add_llm_adapter,
    add_vision_adapter,
    encode,
    route,
    set_trainable,
)
from vlynx.errors import VlynxError


@pytest.fixture
def pixels(tiny_backbone):
    frames = np.random.default_rng(3).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    return torch.stack([tiny_backbone.preprocess_frames(video) for video in frames])  # (B=2, F=3, 3, 32, 32)


def randomize_lora(backbone, seed: int = 0) -> None:
    """Give every LoRA matrix non-zero weights (PEFT starts B at zero, which would hide routing bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in backbone.model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def attach_all(backbone) -> None:
    add_vision_adapter(backbone, "audio", LoraSettings(rank=4, alpha=8))
    add_vision_adapter(backbone, "depth", LoraSettings(rank=2, alpha=4))
    add_llm_adapter(backbone, LoraSettings(rank=4, alpha=16))
    randomize_lora(backbone)


def test_video_tokens_are_bit_identical_with_adapters(tiny_backbone, pixels):
    with torch.no_grad():
        before = tiny_backbone.encode_frames(pixels)
    attach_all(tiny_backbone)
    assert adapter_names(tiny_backbone) == ["audio", "depth", LLM_ADAPTER]
    for training in (False, True):  # dropout must not leak into the video path either
        tiny_backbone.model.train(training)
        with torch.no_grad():
            after = encode(tiny_backbone, pixels, None)
        assert torch.equal(before, after)
    with torch.no_grad():
        audio = encode(tiny_backbone, pixels, "audio")
        depth = encode(tiny_backbone, pixels, "depth")
        assert torch.equal(encode(tiny_backbone, pixels, None), before)  # routing is restored after each call
    assert not torch.allclose(audio, before)
    assert not torch.allclose(audio, depth)


def test_modality_route_equals_merged_weights(tiny_backbone, pixels):
    """Independent computation: fold ΔW = (α/r)·B·A of the audio LoRA into a plain copy of the model."""
    reference = copy.deepcopy(tiny_backbone)
    attach_all(tiny_backbone)
    scale = 8 / 4
    with torch.no_grad():
        for name, module in tiny_backbone.vision_tower.named_modules():
            if hasattr(module, "lora_A") and "audio" in module.lora_A:
                delta = module.lora_B["audio"].weight @ module.lora_A["audio"].weight * scale
                target = reference.vision_tower.get_submodule(name)
                target.weight += delta
        expected = reference.encode_frames(pixels)
        got = encode(tiny_backbone, pixels, "audio")
    assert torch.allclose(got, expected, atol=1e-5)


def test_llm_adapter_changes_only_the_llm(tiny_backbone, pixels):
    add_llm_adapter(tiny_backbone, LoraSettings(rank=4, alpha=16))
    randomize_lora(tiny_backbone)
    ids = torch.tensor([[2, 7, 8, 9]])
    with torch.no_grad():
        with_adapter = tiny_backbone.model(input_ids=ids).logits
        with tiny_backbone.peft_model.disable_adapter():
            without = tiny_backbone.model(input_ids=ids).logits
    assert not torch.allclose(with_adapter, without)


def test_trainability_is_set_explicitly_and_routing_leaves_it_alone(tiny_backbone, pixels):
    attach_all(tiny_backbone)
    set_trainable(tiny_backbone, ["audio"])
    trainable = {n for n, p in tiny_backbone.model.named_parameters() if p.requires_grad}
    assert trainable and all(".audio." in n and "lora_" in n for n in trainable)
    with route(tiny_backbone, "depth"):
        assert {n for n, p in tiny_backbone.model.named_parameters() if p.requires_grad} == trainable
    with route(tiny_backbone, None):
        assert {n for n, p in tiny_backbone.model.named_parameters() if p.requires_grad} == trainable

    tiny_backbone.model.train()
    encode(tiny_backbone, pixels, "audio").square().mean().backward()
    with_grad = {n for n, p in tiny_backbone.model.named_parameters() if p.grad is not None}
    assert with_grad == trainable


def test_unknown_or_reserved_names_are_refused(tiny_backbone, pixels):
    add_vision_adapter(tiny_backbone, "audio", LoraSettings(rank=2, alpha=4))
    with pytest.raises(VlynxError, match="no vision adapter for modality 'thermal'"):
        encode(tiny_backbone, pixels, "thermal")
    with pytest.raises(VlynxError, match="already attached"):
        add_vision_adapter(tiny_backbone, "audio")
    with pytest.raises(VlynxError, match="reserved"):
        add_vision_adapter(tiny_backbone, LLM_ADAPTER)


def test_saved_adapters_reload_with_plain_peft(tiny_backbone, pixels, tmp_path):
    from peft import PeftModel

    from vlynx.backbones import load_backbone

    attach_all(tiny_backbone)
    with torch.no_grad():
        expected = encode(tiny_backbone, pixels, "audio")
    tiny_backbone.peft_model.save_pretrained(tmp_path)
    fresh = load_backbone("tiny", seed=0)
    peft_model = PeftModel.from_pretrained(fresh.model, tmp_path / "audio", adapter_name="audio")
    with torch.no_grad():
        got = peft_model.base_model.model.model.get_video_features(pixel_values_videos=pixels).pooler_output
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("name", ["llm", "video", "default"])
def test_reserved_names_cannot_name_a_modality(tiny_backbone, name):
    """`default` too: PEFT saves an adapter of that name without its own subfolder, so a bundle would lose it."""
    with pytest.raises(VlynxError, match="reserved name"):
        add_vision_adapter(tiny_backbone, name)


def test_an_adapter_of_another_architecture_is_one_clear_line(tiny_backbone, tmp_path):
    """Saved on an encoder with a wider MLP: PEFT's 'Error(s) in loading state_dict' is summarised, not cut off."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from vlynx.adapters import load_adapter, save_adapters
    from vlynx.backbones import load_backbone, preset_config

    config = preset_config("tiny")
    config.vision_config.intermediate_size *= 2
    LlavaOnevisionForConditionalGeneration(config).save_pretrained(tmp_path / "wider")
    wider = load_backbone(tmp_path / "wider")
    add_vision_adapter(wider, "audio", LoraSettings(rank=2, alpha=4))
    save_adapters(wider, tmp_path / "adapters")
    mlp = tiny_backbone.model.config.vision_config.intermediate_size
    with pytest.raises(VlynxError) as caught:
        load_adapter(tiny_backbone, tmp_path / "adapters" / "audio", "audio")
    message = str(caught.value)
    assert "adapter 'audio' does not fit this model: 4 weight(s) have other shapes" in message  # fc1/fc2, 2 layers
    assert f"saved [{2 * mlp}, 2], model [{mlp}, 2]" in message or f"saved [2, {2 * mlp}], model [2, {mlp}]" in message
    assert "\n" not in message
