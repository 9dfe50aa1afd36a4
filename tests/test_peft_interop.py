"""PEFT interop: the recipes of docs/peft.md, run exactly as written there, against independent computations.

Each test reads its snippet(s) from docs/peft.md (the fenced block under `<!-- snippet: NAME ... -->`)
and executes it on a tiny LLaVA-OneVision with non-zero LoRA weights, then checks the results
against the unmodified transformers model, LoRA folded into the weights by hand, and vlynx itself.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from vlynx.adapters import LoraSettings, add_llm_adapter, add_vision_adapter, encode, load_adapter, save_adapters
from vlynx.backbones import load_backbone
from vlynx.bundle import VLynx
from vlynx.conversation import encode_blocks, splice_blocks, tokenize_question

DOC = Path(__file__).resolve().parent.parent / "docs" / "peft.md"
VISION_LINEARS = 2 * 6  # tiny preset: 2 encoder layers x (q, k, v, out_proj, fc1, fc2)


def snippet(name: str) -> str:
    match = re.search(rf"<!-- snippet: {re.escape(name)}\b[^>]*-->\s*```python\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/peft.md has no snippet '{name}'"
    return match.group(1)


def run_snippets(names: list[str], **given) -> dict:
    """Execute the doc snippets in order in one namespace preset with `given`; return the namespace."""
    namespace = dict(given)
    for name in names:
        exec(compile(snippet(name), f"docs/peft.md[{name}]", "exec"), namespace)
    return namespace


def perturb(backbone, name: str, seed: int, scale: float) -> None:
    """Non-zero LoRA A and B for adapter `name` (PEFT starts B at zero, which would hide every bug here)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, parameter in backbone.model.named_parameters():
            if f".{name}." in key and "lora_" in key:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


@pytest.fixture(scope="module")
def saved(tiny_checkpoint, tmp_path_factory):
    """An alignment-output folder for `audio` and a bundle with `audio`, `depth` and `llm`, written by vlynx.

    The alignment folder holds what `vlynx align` writes as its PEFT adapter (the adapter saved
    alone with `save_pretrained(selected_adapters=[modality])`, the folder itself being the adapter),
    without a training run; tests/test_align.py loads a real `run_align` output with `PeftModel`.
    """
    root = tmp_path_factory.mktemp("peft-interop")
    backbone = load_backbone(tiny_checkpoint)
    add_vision_adapter(backbone, "audio", LoraSettings(rank=4, alpha=8))  # dropout 0.05: eval must switch it off
    perturb(backbone, "audio", seed=1, scale=0.3)
    save_adapters(backbone, root / "align", ["audio"])  # PEFT puts a named adapter in its own subfolder
    add_vision_adapter(backbone, "depth", LoraSettings(rank=2, alpha=4))
    perturb(backbone, "depth", seed=2, scale=0.3)
    add_llm_adapter(backbone, LoraSettings(rank=4, alpha=16))
    perturb(backbone, "llm", seed=3, scale=0.1)
    VLynx(backbone, ["audio", "depth"], num_frames=2).save_pretrained(root / "bundle")
    return SimpleNamespace(base=str(tiny_checkpoint), align=root / "align" / "audio", bundle=root / "bundle")


@pytest.fixture(scope="module")
def pixels():
    generator = torch.Generator().manual_seed(7)
    video, audio, depth = (torch.rand((1, 2, 3, 32, 32), generator=generator) * 2 - 1  # (B, F, 3, S, S)
                           for _ in range(3))
    return SimpleNamespace(video=video, audio=audio, depth=depth)


@pytest.fixture(scope="module")
def unmodified(saved, pixels):
    """The plain transformers model, never wrapped by PEFT: its own video path and LLM."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(saved.base).eval()

    def features(frames):
        with torch.no_grad():
            return model.model.get_video_features(pixel_values_videos=frames).pooler_output

    return SimpleNamespace(model=model, features=features, video=features(pixels.video), audio=features(pixels.audio))


@pytest.fixture(scope="module")
def vlynx_run(saved, pixels):
    """What vlynx itself computes from the bundle (adapters unmerged, its own routing and splicing)."""
    model = VLynx.from_pretrained(saved.bundle)
    assert model.modalities == ["audio", "depth"]
    backbone = model.backbone
    input_ids = tokenize_question(backbone, "what colour is the ball ?")
    with torch.no_grad():
        streams = {"video": pixels.video, "audio": pixels.audio, "depth": pixels.depth}
        blocks = encode_blocks(backbone, streams, model.modalities)  # [video, audio, depth]
        inputs = splice_blocks(backbone, [input_ids], blocks)
        logits = backbone.model(**inputs).logits
        new_tokens = backbone.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    return SimpleNamespace(input_ids=input_ids, audio=blocks[1], depth=blocks[2], inputs=inputs, logits=logits,
                           new_tokens=new_tokens)


def test_alignment_output_loads_with_plain_peft(saved, pixels, unmodified):
    from transformers import AutoModelForImageTextToText

    assert (saved.align / "adapter_config.json").is_file()
    ns = run_snippets(["align-output"], BASE_MODEL=saved.base, ALIGN_OUT=str(saved.align),
                      video_pixels=pixels.video, audio_pixels=pixels.audio)
    assert not ns["model"].training
    assert torch.equal(ns["video_tokens"], unmodified.video)  # bit for bit
    assert (ns["audio_tokens"] - unmodified.audio).abs().max() > 1e-2  # the adapter does something

    # vlynx's own routed encoder on the same adapter folder
    backbone = load_backbone(saved.base)
    load_adapter(backbone, saved.align, "audio")
    with torch.no_grad():
        torch.testing.assert_close(ns["audio_tokens"], encode(backbone, pixels.audio, "audio"))

    # Independent: fold ΔW = (alpha/r)·B·A from the saved file into a plain model's weights.
    config = json.loads((saved.align / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    state = load_file(saved.align / "adapter_model.safetensors")
    folded = AutoModelForImageTextToText.from_pretrained(saved.base).eval()
    prefix, suffix = "base_model.model.", ".lora_A.weight"
    targets = [key[len(prefix):-len(suffix)] for key in state if key.endswith(suffix)]
    assert len(targets) == VISION_LINEARS and all(".vision_tower." in t for t in targets)
    with torch.no_grad():
        for target in targets:
            delta = state[f"{prefix}{target}.lora_B.weight"] @ state[f"{prefix}{target}{suffix}"]
            folded.get_submodule(target).weight += scale * delta
        expected = folded.model.get_video_features(pixel_values_videos=pixels.audio).pooler_output
    torch.testing.assert_close(ns["audio_tokens"], expected, rtol=1e-5, atol=1e-5)


def snippet_inputs(saved, pixels, vlynx_run) -> dict:
    return dict(BASE_MODEL=saved.base, BUNDLE=str(saved.bundle), video_pixels=pixels.video,
                audio_pixels=pixels.audio, depth_pixels=pixels.depth, input_ids=vlynx_run.input_ids)


def check_routing(tokens, pixels, unmodified, vlynx_run) -> None:
    """Each stream through `tokens`, in an order unlike the prompt's: base encoder for video, own LoRA only."""
    with torch.no_grad():
        depth = tokens(pixels.depth, "depth")
        audio = tokens(pixels.audio, "audio")
        video = tokens(pixels.video)
        depth_after_audio = tokens(pixels.depth, "depth")
    assert torch.equal(video, unmodified.video)  # bit for bit
    torch.testing.assert_close(audio, vlynx_run.audio)
    torch.testing.assert_close(depth, vlynx_run.depth)
    assert torch.equal(depth_after_audio, depth)
    assert (audio - unmodified.audio).abs().max() > 1e-2  # the adapters do something
    assert (depth - unmodified.features(pixels.depth)).abs().max() > 1e-2


def test_bundle_loads_with_plain_peft_and_routes_by_hand(saved, pixels, unmodified, vlynx_run):
    ns = run_snippets(["splice", "bundle"], **snippet_inputs(saved, pixels, vlynx_run))
    model, tokens = ns["model"], ns["tokens"]
    assert {a for layer in lora_layers(model).values() for a in layer.lora_A} == {"llm", "audio", "depth"}
    # inference_mode=True: nothing becomes trainable, not even while a modality is routed
    trainable = []
    hook = model.base_model.model.model.vision_tower.register_forward_pre_hook(
        lambda *_: trainable.append(any(p.requires_grad for p in model.parameters())))
    check_routing(tokens, pixels, unmodified, vlynx_run)
    hook.remove()
    assert trainable and not any(trainable)
    # After a modality call the model is back at rest: the encoder itself is the base encoder.
    with torch.no_grad():
        tokens(pixels.audio, "audio")
        rest = model.base_model.model.model.get_video_features(pixel_values_videos=pixels.audio).pooler_output
    assert torch.equal(rest, unmodified.audio)

    torch.testing.assert_close(ns["inputs_embeds"], vlynx_run.inputs["inputs_embeds"])
    torch.testing.assert_close(ns["logits"], vlynx_run.logits)
    assert torch.equal(ns["new_tokens"], vlynx_run.new_tokens)
    # The LLM LoRA was on: the plain LLM on the same inputs gives other logits.
    with torch.no_grad():
        plain = unmodified.model(inputs_embeds=ns["inputs_embeds"], attention_mask=ns["attention_mask"]).logits
    assert (plain - ns["logits"]).abs().max() > 1e-2
    # As the doc says (peft 0.21.2): PeftModel.set_adapter takes one name only; the LoraModel takes a list,
    # and without inference_mode=True it makes the activated adapters trainable.
    with pytest.raises(TypeError, match="unhashable"):
        model.set_adapter(["llm", "audio"])
    model.base_model.set_adapter(["llm", "audio"])
    assert any(p.requires_grad for n, p in model.named_parameters() if ".audio." in n)


def test_merge_with_adapter_names_drops_the_vision_lora(saved, pixels, unmodified, vlynx_run):
    ns = run_snippets(["merge-pitfall"], BASE_MODEL=saved.base, BUNDLE=str(saved.bundle))
    merged = ns["merged"].eval()
    # Current PEFT behaviour (measured with peft 0.21.2), asserted so that a change shows up here:
    # merge_and_unload(adapter_names=["llm"]) merges llm and unloads *every* LoRA layer, so the
    # audio adapter is gone without an error. If this fails, PEFT changed; revisit docs/peft.md §2.
    assert lora_layers(merged) == {}
    with torch.no_grad():
        audio = merged.model.get_video_features(pixel_values_videos=pixels.audio).pooler_output
        logits = merged(**vlynx_run.inputs).logits  # vlynx's inputs, modality tokens made with the adapters
    assert torch.equal(audio, unmodified.audio)  # the audio frames no longer see their adapter
    torch.testing.assert_close(logits, vlynx_run.logits, rtol=1e-5, atol=1e-5)  # ... while llm was merged


def test_merged_llm_with_gated_vision_lora_matches_vlynx(saved, pixels, unmodified, vlynx_run):
    ns = run_snippets(["splice", "merge-llm"], **snippet_inputs(saved, pixels, vlynx_run))
    model, tokens = ns["model"], ns["tokens"]
    layers = lora_layers(model)
    assert len(layers) == VISION_LINEARS and all(".vision_tower." in name for name in layers)  # none in the LLM
    assert {a for layer in layers.values() for a in layer.lora_A} == {"audio", "depth"}
    check_routing(tokens, pixels, unmodified, vlynx_run)
    # Merged (W + ΔW)·x against vlynx's unmerged W·x + B·A·x: equal up to float32 rounding.
    torch.testing.assert_close(ns["logits"], vlynx_run.logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(ns["new_tokens"], vlynx_run.new_tokens)
    with torch.no_grad():  # not trivially so: the merged LLM is not the plain one
        plain = unmodified.model(inputs_embeds=ns["inputs_embeds"], attention_mask=ns["attention_mask"]).logits
    assert (plain - ns["logits"]).abs().max() > 1e-2
