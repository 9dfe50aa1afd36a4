"""The alignment stage end to end on a tiny checkpoint and synthetic videos."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vlynx.align import AlignConfig, run_align
from vlynx.errors import VlynxError

MODALITY = "egocentric"  # frames as they are: synthetic mp4s are valid inputs


def _clips(directory, count, seed, shift=0):
    from vlynx.media.video import write_video

    rng = np.random.default_rng(seed)
    for index in range(count):
        base = rng.integers(0, 255, size=(1, 32, 32, 3))
        frames = np.clip(base + rng.integers(-20, 20, size=(4, 32, 32, 3)) + shift, 0, 255).astype(np.uint8)
        write_video(directory / f"clip{index}.mp4", frames, fps=4)
    return directory


@pytest.fixture(scope="module")
def world(tiny_checkpoint, tmp_path_factory):
    """Reference videos, differently distributed modality inputs, and the reference statistics file."""
    from vlynx.backbones import load_backbone
    from vlynx.reference import compute_reference, save_reference, video_sources

    root = tmp_path_factory.mktemp("align-world")
    videos = _clips((root / "videos"), 4, seed=0)
    inputs = _clips((root / "inputs"), 4, seed=1, shift=60)
    backbone = load_backbone(tiny_checkpoint)
    reference = compute_reference(backbone, video_sources([videos]), frames_per_video=2)
    path = save_reference(reference, root / "ref.safetensors")
    return {"root": root, "inputs": inputs, "reference": path, "checkpoint": tiny_checkpoint}


def _config(world, out, **overrides):
    settings = dict(model=str(world["checkpoint"]), modality=MODALITY, data=str(world["inputs"]),
                    reference=str(world["reference"]), out=str(out), vision_rank=4, vision_alpha=8, vision_dropout=0.0,
                    batch_size=2, lr=5e-3, logging_steps=1, save_steps=1000, seed=0)
    settings.update(overrides)
    return AlignConfig(**settings)


def test_llm_is_never_allocated(tiny_checkpoint):
    from vlynx.backbones import load_backbone

    full = load_backbone(tiny_checkpoint)
    encoder_only = load_backbone(tiny_checkpoint, language_model=False)
    llm = list(encoder_only.language_model.parameters()) + list(encoder_only.model.get_output_embeddings().parameters())
    assert llm and all(p.is_meta for p in llm)  # architecture kept, no storage
    assert [p.shape for p in encoder_only.language_model.parameters()] == [p.shape for p in full.language_model.parameters()]
    others = [p for n, p in encoder_only.model.named_parameters() if not p.is_meta]
    assert sum(p.numel() for p in others) == sum(p.numel() for p in full.vision_tower.parameters()) + sum(
        p.numel() for p in full.projector.parameters()) + full.llm_hidden_size  # + image_newline
    assert encoder_only.fingerprint() == full.fingerprint()  # same weights digest: references stay valid
    pixels = torch.randn(1, 2, 3, 32, 32)
    assert torch.equal(encoder_only.encode_frames(pixels), full.encode_frames(pixels))


def test_alignment_lowers_loss_writes_peft_adapter_and_keeps_video_path(world, tmp_path):
    from peft import PeftModel
    from transformers import LlavaOnevisionForConditionalGeneration

    from vlynx.adapters import encode
    from vlynx.backbones import load_backbone

    out = tmp_path / "adapter"
    result = run_align(_config(world, out, max_steps=30))
    assert result.steps == 30
    record = json.loads((out / "vlynx_run.json").read_text())
    history = [e for e in record["results"]["final_losses"]]
    assert set(history) == {"loss", "loss_attn", "loss_dist"}
    assert record["results"]["reference"]["fingerprint"] == load_backbone(world["checkpoint"], language_model=False).fingerprint()
    assert AlignConfig.from_file(out / "vlynx_config.yaml") == _config(world, out, max_steps=30)
    assert not any(p.name.startswith(".adapter") for p in tmp_path.iterdir())  # no staging leftovers
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777, (out / "adapter_model.safetensors").stat().st_mode & 0o777) == (
        0o777 & ~umask, 0o666 & ~umask)  # ordinary permissions, not safetensors' private 0600

    # Loss went down: the same batch evaluated with the initial (zero) and the trained adapter.
    from vlynx.align import AlignmentModel, ModalityFrames, alignment_inputs, loss_settings
    from vlynx.modalities import get_modality
    from vlynx.reference import load_reference

    base = load_backbone(world["checkpoint"], language_model=False)
    reference = load_reference(world["reference"], base)
    dataset = ModalityFrames(alignment_inputs(world["inputs"], MODALITY), get_modality(MODALITY), base, 2)
    pixels = torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))])
    trained = load_backbone(world["checkpoint"], language_model=False)
    trained.peft_model = PeftModel.from_pretrained(trained.model, out, adapter_name=MODALITY)
    settings = loss_settings(_config(world, out))
    from vlynx.adapters import add_vision_adapter, LoraSettings

    add_vision_adapter(base, MODALITY, LoraSettings(4, 8, 0.0))
    with torch.no_grad():
        before = AlignmentModel(base, MODALITY, reference, settings)(pixels)
        after = AlignmentModel(trained, MODALITY, reference, settings)(pixels)
    assert after["loss"] < 0.8 * before["loss"], (before, after)

    # Plain peft: the adapter loads onto the HF model; with adapters disabled video tokens are bit-identical.
    hf_model = LlavaOnevisionForConditionalGeneration.from_pretrained(world["checkpoint"])
    reference_tokens = hf_model.model.get_video_features(pixel_values_videos=pixels).pooler_output
    peft_model = PeftModel.from_pretrained(hf_model, out, adapter_name=MODALITY)
    with torch.no_grad():
        adapted = peft_model.base_model.model.model.get_video_features(pixel_values_videos=pixels).pooler_output
        with peft_model.disable_adapter():
            video = peft_model.base_model.model.model.get_video_features(pixel_values_videos=pixels).pooler_output
        routed = encode(trained, pixels, MODALITY)
        video_routed = encode(trained, pixels, None)
    assert torch.equal(video, reference_tokens) and torch.equal(video_routed, reference_tokens)
    assert not torch.allclose(adapted, reference_tokens)
    torch.testing.assert_close(routed, adapted)


def test_resume_after_interruption_matches_uninterrupted_run(world, tmp_path):
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise KeyboardInterrupt

    common = dict(max_steps=8, save_steps=3, vision_dropout=0.05)  # dropout: the RNG state must resume too
    run_align(_config(world, tmp_path / "straight", **common))
    interrupted = _config(world, tmp_path / "resumed", **common)
    with pytest.raises(KeyboardInterrupt):
        run_align(interrupted, callbacks=[Interrupt()])
    assert not (tmp_path / "resumed").exists()  # nothing half-written
    assert (tmp_path / "resumed.checkpoints" / "checkpoint-3").is_dir()
    with pytest.raises(VlynxError, match="--resume"):
        run_align(interrupted)
    run_align(_config(world, tmp_path / "resumed", resume=True, **common))
    straight = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert set(straight) == set(resumed) and straight
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6)
    assert any(t.abs().sum() > 0 for n, t in straight.items() if "lora_B" in n)  # it did train


def test_reference_of_another_model_is_refused(world, tmp_path):
    from transformers import LlavaOnevisionForConditionalGeneration

    from vlynx.backbones import preset_config

    other = tmp_path / "other-model"
    torch.manual_seed(7)
    LlavaOnevisionForConditionalGeneration(preset_config("tiny")).save_pretrained(other)
    with pytest.raises(VlynxError, match="different model"):
        run_align(_config(world, tmp_path / "out", model=str(other), max_steps=1))


def test_cli_config_file_and_flag_overrides(world, tmp_path, capsys):
    import yaml

    from vlynx.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": str(world["checkpoint"]), "modality": MODALITY, "data": str(world["inputs"]),
        "reference": str(world["reference"]), "vision_rank": 2, "vision_dropout": 0.0, "max_steps": 50, "lr": 1e-3,
    }))
    out = tmp_path / "cli-adapter"
    code = main(["align", "--config", str(recipe), "--out", str(out), "--max-steps", "2", "--no-dist",
                 "--attn-loss", "mse", "--set", "logging_steps=1"])
    assert code == 0
    saved = AlignConfig.from_file(out / "vlynx_config.yaml")
    assert (saved.max_steps, saved.no_dist, saved.attn_loss, saved.vision_rank, saved.lr, saved.logging_steps) == (
        2, True, "mse", 2, 1e-3, 1)
    record = json.loads((out / "vlynx_run.json").read_text())
    assert record["results"]["steps"] == 2 and record["results"]["final_losses"]["loss_dist"] == 0.0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 2
    assert main(["align", "--config", str(recipe), "--out", str(out)]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err


def test_shipped_recipe_is_a_valid_config():
    from pathlib import Path

    recipe = Path(__file__).parent.parent / "vlynx" / "configs" / "align_audio.yaml"
    config = AlignConfig.from_file(recipe)
    assert (config.modality, config.lambda_dist, config.vision_rank, config.vision_alpha) == ("audio", 0.01, 64, 128)
    with pytest.raises(VlynxError, match="unknown setting"):
        config.updated({"lamda_dist": 0.1})


def test_two_ranks_under_torchrun_equal_one_process(world, tmp_path):
    """DDP through HF Trainer with no code of ours: 2 ranks x 2 inputs == 1 process x 4 inputs.

    With the attention term alone the loss is a mean over equal-sized per-rank shares, so
    DDP's averaged gradient equals the one-process gradient; every step sees all 4 inputs.
    """
    import os
    import subprocess
    import sys

    from tests.conftest import free_port

    common = ["--model", str(world["checkpoint"]), "--modality", MODALITY, "--data", str(world["inputs"]),
              "--reference", str(world["reference"]), "--max-steps", "2", "--vision-rank", "4", "--vision-alpha", "8",
              "--lr", "5e-3", "--no-dist", "--set", "vision_dropout=0.0", "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "vlynx", "align", *common, "--batch-size", "2",
         "--out", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("wrote") == 1  # one rank reports, one rank writes

    single = run_align(_config(world, tmp_path / "single", max_steps=2, batch_size=4, no_dist=True))
    assert single.steps == 2
    ddp = load_file(tmp_path / "ddp" / "adapter_model.safetensors")
    one = load_file(tmp_path / "single" / "adapter_model.safetensors")
    assert ddp.keys() == one.keys()
    assert any(one[key].abs().max() > 0 for key in one if "lora_B" in key)  # training changed the adapter
    for key in one:
        assert torch.allclose(ddp[key], one[key], atol=1e-6), key


def test_quiet_run_prints_one_line(world, tmp_path, capsys):
    from vlynx.cli import main

    out = tmp_path / "quiet"
    code = main(["-q", "align", "--model", str(world["checkpoint"]), "--modality", MODALITY, "--data",
                 str(world["inputs"]), "--reference", str(world["reference"]), "--out", str(out), "--max-steps", "2",
                 "--vision-rank", "4", "--set", "logging_steps=1"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.strip().splitlines() == [captured.out.strip()] and captured.out.startswith(f"wrote {out}")
    assert "{'loss'" not in captured.out + captured.err


def test_progress_is_one_labelled_bar_and_no_log_dicts(world, tmp_path, capsys):
    from vlynx.cli import main

    out = tmp_path / "loud"
    code = main(["align", "--model", str(world["checkpoint"]), "--modality", MODALITY, "--data", str(world["inputs"]),
                 "--reference", str(world["reference"]), "--out", str(out), "--max-steps", "3", "--lora-rank", "4",
                 "--set", "logging_steps=1"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.strip().splitlines() == [captured.out.strip()] and captured.out.startswith(f"wrote {out}")
    assert "{'loss'" not in captured.out + captured.err
    assert f"align {MODALITY}: 100%" in captured.err and "3/3" in captured.err and "loss=" in captured.err


@pytest.mark.parametrize("no_dist", [False, True])
def test_gradient_checkpointing_gives_the_same_lora_gradients(world, tmp_path, no_dist):
    """Every LoRA gradient of eq. (9) with the encoder checkpointed equals the one without (dropout 0)."""
    from vlynx.adapters import LoraSettings, add_vision_adapter, set_trainable
    from vlynx.align import AlignmentModel, ModalityFrames, alignment_inputs, loss_settings
    from vlynx.backbones import load_backbone
    from vlynx.modalities import get_modality
    from vlynx.reference import load_reference
    from vlynx.training import enable_gradient_checkpointing

    config = _config(world, tmp_path / "out", no_dist=no_dist, gradient_checkpointing=True)

    def gradients(checkpointing):
        backbone = load_backbone(world["checkpoint"], language_model=False)
        reference = load_reference(world["reference"], backbone)
        torch.manual_seed(0)
        add_vision_adapter(backbone, MODALITY, LoraSettings(4, 8, 0.0))
        set_trainable(backbone, [MODALITY])
        with torch.no_grad():  # LoRA B starts at zero, which would leave every A gradient zero
            for parameter in backbone.peft_model.parameters():
                if parameter.requires_grad:
                    parameter.normal_(0.0, 0.05)
        if checkpointing:
            assert enable_gradient_checkpointing(config, backbone.vision_tower)
        dataset = ModalityFrames(alignment_inputs(world["inputs"], MODALITY), get_modality(MODALITY), backbone, 2)
        pixels = torch.stack([dataset[i]["pixel_values"] for i in range(2)])
        model = AlignmentModel(backbone, MODALITY, reference, loss_settings(config)).train()
        calls = []
        hook = backbone.attention_modules()[0].register_forward_hook(lambda *_: calls.append(1))
        model(pixels)["loss"].backward()
        hook.remove()
        assert len(calls) == (2 if checkpointing else 1)  # checkpointing recomputed the layer in backward
        return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    assert sum(grad is not None for grad in plain.values()) > len(plain) // 2
    for name, grad in plain.items():
        # without eq. (8) the last layer's MLP gets no gradient, with or without checkpointing
        assert (grad is None) == (checkpointed[name] is None), name
        if grad is None:
            continue
        # float32 recomputation of the same ops: equal up to summation order
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)


# bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op). Measured first-step losses: float32
# 0.79390; bf16 autocast 0.79400 (1.2e-4); bfloat16 weights (--dtype) 0.79400 (1.2e-4)
BFLOAT16_RUNS = {"autocast": {"bf16": True}, "weights": {"dtype": "bfloat16"}}


@pytest.mark.parametrize("run", list(BFLOAT16_RUNS))
def test_bfloat16_on_cpu_runs_with_finite_losses_close_to_float32(world, tmp_path, run):
    """`bf16=True` (Trainer autocast, the GPU default path) and `dtype=bfloat16` (weights loaded in bfloat16)
    run on CPU too, with first-step losses near float32's. The reference statistics were made from a float32
    load: the same checkpoint loaded in bfloat16 is accepted (one weights digest for both)."""
    from transformers import TrainerCallback

    losses = {}
    for name, overrides in (("float32", {}), (run, BFLOAT16_RUNS[run])):
        logged = losses[name] = []

        class Losses(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    logged.append(logs["loss"])

        run_align(_config(world, tmp_path / name, max_steps=3, gradient_checkpointing=True, **overrides),
                  callbacks=[Losses()])
    assert len(losses[run]) == 3 and all(np.isfinite(losses[run]))
    assert losses[run][0] == pytest.approx(losses["float32"][0], rel=1e-2)
    assert losses[run][0] != losses["float32"][0]  # it did run in bfloat16


def test_weights_load_in_float32_on_cpu_unless_a_dtype_is_given(world, tmp_path, monkeypatch):
    """`dtype` left unset is decided at run time: float32 without CUDA (bfloat16 with it, like `bf16`)."""
    import vlynx.backbones

    loaded, real = [], vlynx.backbones.load_backbone

    def spy(*args, **kwargs):
        loaded.append(kwargs["dtype"])
        return real(*args, **kwargs)

    monkeypatch.setattr(vlynx.backbones, "load_backbone", spy)
    run_align(_config(world, tmp_path / "default", max_steps=1))
    run_align(_config(world, tmp_path / "bfloat16", max_steps=1, dtype="bfloat16"))
    assert loaded == ["float32", "bfloat16"]
