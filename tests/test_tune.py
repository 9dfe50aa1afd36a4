"""Instruction tuning on a tiny model: over-fitting, frozen vision adapters, resume, bundle round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlynx.adapters import add_vision_adapter
from vlynx.backbones import load_backbone, preset_config
from vlynx.bundle import VLynx
from vlynx.errors import VlynxError
from vlynx.media import read_video, write_video
from vlynx.tune import TuneConfig, run_tune
from vlynx.word_tokenizer import build_word_tokenizer

# (video colour, question, answer): the tiny model must learn each answer
EXAMPLES = [
    ((220, 30, 30), "what colour is the ball ?", "red ball"),
    ((30, 200, 40), "which sound do you hear ?", "a loud drum"),
    ((40, 40, 230), "what is it doing now ?", "blue bird sings"),
]
WORDS = " ".join(f"{q} {a}" for _, q, a in EXAMPLES)
FRAMES = 2


class Negative:
    """A stand-in modality transform: the video's frames with inverted colours."""

    def frames(self, source, num_frames, timestamps=None):
        return 255 - read_video(source, num_frames).frames


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny checkpoint with a word tokenizer, three clips, their annotations and an aligned 'negative' adapter."""
    from transformers import LlavaOnevisionForConditionalGeneration

    root = tmp_path_factory.mktemp("tune-world")
    torch.manual_seed(3)
    model = LlavaOnevisionForConditionalGeneration(preset_config("tiny"))
    with torch.no_grad():  # a pretrained LLM's output head is far larger than the random init's (std 0.02)
        model.lm_head.weight.normal_(0, 0.3)
    model.save_pretrained(root / "model")
    build_word_tokenizer([WORDS]).save_pretrained(root / "model")
    entries = []
    for index, (colour, question, answer) in enumerate(EXAMPLES):
        frames = np.zeros((4, 32, 32, 3), np.uint8)
        frames[:] = colour
        frames[:, 8:24, 8 + index * 4:16 + index * 4] = 255  # a white square whose place differs per clip
        write_video(root / "media" / f"clip{index}.mp4", frames, fps=4)
        entries.append({"id": f"c{index}", "video": f"clip{index}.mp4",
                        "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                          {"from": "gpt", "value": answer}]})
    (root / "data.json").write_text(json.dumps(entries))
    # an "aligned" vision adapter as the alignment stage saves it: one PEFT subfolder per adapter
    backbone = load_backbone(root / "model")
    add_vision_adapter(backbone, "negative")
    with torch.no_grad():
        for key, parameter in backbone.model.named_parameters():
            if ".negative." in key and "lora_B" in key:
                parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(7))
    backbone.peft_model.save_pretrained(root / "aligned")
    return root


def config(world, out, **overrides):
    settings = dict(model=str(world / "model"), data=str(world / "data.json"), media_root=str(world / "media"),
                    out=str(out), modalities=["negative"], vision_adapters=[str(world / "aligned")], frames=FRAMES,
                    lr=1e-2, batch_size=3, max_steps=40, warmup_ratio=0.0, logging_steps=5, save_steps=1000,
                    llm_rank=16, llm_alpha=32)
    settings.update(overrides)
    return TuneConfig(**settings)


def adapter_weights(backbone, name):
    return {k: v.detach().clone() for k, v in backbone.model.named_parameters() if f".{name}." in k}


@pytest.fixture(scope="module")
def tuned(world):
    return run_tune(config(world, world / "bundle"), transforms={"negative": Negative()})


def test_tiny_model_overfits_and_answers_the_trained_answers(world, tuned):
    assert tuned.steps == 40
    assert tuned.losses[0] > 1.0  # the untrained model does not know the answers
    assert tuned.losses[-1] < 0.05
    model = VLynx.from_pretrained(tuned.bundle, transforms={"negative": Negative()})
    for index, (_, question, answer) in enumerate(EXAMPLES):
        assert model.answer(video=world / "media" / f"clip{index}.mp4", question=question) == answer


def test_vision_adapter_stays_frozen_and_is_saved_unchanged(world, tuned):
    from peft import PeftModel

    aligned = load_backbone(world / "model")
    aligned.peft_model = PeftModel.from_pretrained(aligned.model, str(world / "aligned" / "negative"),
                                                   adapter_name="negative")
    model = VLynx.from_pretrained(tuned.bundle, transforms={"negative": Negative()})
    before, after = adapter_weights(aligned, "negative"), adapter_weights(model.backbone, "negative")
    assert before.keys() == after.keys() and before
    assert all(torch.equal(before[k], after[k]) for k in before)
    manifest = json.loads((tuned.bundle / "vlynx_bundle.json").read_text())
    assert manifest["modalities"] == ["negative"]
    assert manifest["num_frames"] == FRAMES
    assert manifest["base_model"] == "../model"  # beside the bundle: recorded relative to it, so both can move
    assert set(manifest["adapters"]) == {"negative", "llm"}
    assert TuneConfig.from_file(tuned.bundle / "vlynx_config.yaml").lr == 1e-2


def test_reloaded_bundle_generates_identically_and_batches_match_single(world, tuned, tmp_path):
    model = VLynx.from_pretrained(tuned.bundle, transforms={"negative": Negative()})
    requests = [{"video": world / "media" / f"clip{i}.mp4", "question": q} for i, (_, q, _) in enumerate(EXAMPLES)]
    # a different question so the batch has prompts of different lengths (left padding at work)
    requests.append({"video": world / "media" / "clip0.mp4", "question": "which ball ?"})
    batched = model.generate(requests, max_new_tokens=6)
    single = [model.generate([r], max_new_tokens=6)[0] for r in requests]
    assert batched == single
    model.save_pretrained(tmp_path / "copy")
    again = VLynx.from_pretrained(tmp_path / "copy", transforms={"negative": Negative()})
    assert again.generate(requests, max_new_tokens=6) == batched


def test_resume_continues_exactly_where_training_stopped(world, tmp_path):
    overrides = dict(max_steps=4, save_steps=2, batch_size=1, logging_steps=1)
    whole = run_tune(config(world, tmp_path / "whole", **overrides), transforms={"negative": Negative()})
    parted = config(world, tmp_path / "parted", **overrides)
    run_tune(parted, transforms={"negative": Negative()})
    import shutil

    shutil.rmtree(tmp_path / "parted.checkpoints" / "checkpoint-4")  # as if stopped after step 2,
    shutil.rmtree(tmp_path / "parted")  # before the bundle was written
    resumed = run_tune(config(world, tmp_path / "parted", resume=True, **overrides), transforms={"negative": Negative()})
    assert resumed.steps == 4
    first = VLynx.from_pretrained(whole.bundle, transforms={"negative": Negative()})
    second = VLynx.from_pretrained(resumed.bundle, transforms={"negative": Negative()})
    a, b = adapter_weights(first.backbone, "llm"), adapter_weights(second.backbone, "llm")
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
    assert not all(torch.equal(a[k], torch.zeros_like(a[k])) for k in a if "lora_B" in k)  # it did train


def test_no_alignment_ablation_trains_a_fresh_vision_adapter(world, tmp_path):
    result = run_tune(config(world, tmp_path / "ablation", vision_adapters=[], train_vision_adapter=True, max_steps=2,
                         batch_size=1, vision_rank=4, vision_alpha=8), transforms={"negative": Negative()})
    model = VLynx.from_pretrained(result.bundle, transforms={"negative": Negative()})
    lora_b = [v for k, v in adapter_weights(model.backbone, "negative").items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # PEFT starts B at zero: non-zero means it trained
    assert lora_b[0].shape[1] == 4


def test_modality_without_adapter_is_a_clear_error(world, tmp_path):
    with pytest.raises(VlynxError, match="no vision adapter for modality 'negative'"):
        run_tune(config(world, tmp_path / "x", vision_adapters=[]), transforms={"negative": Negative()})
    fresh = run_tune(config(world, tmp_path / "y", resume=True, max_steps=1), transforms={"negative": Negative()})
    assert fresh.steps == 1  # --resume with nothing to resume starts afresh (one semantics in every stage)


def test_alignment_record_supplies_settings_and_reference_fingerprint(world, tmp_path):
    import shutil

    direct = tmp_path / "align-out"  # `vlynx align` layout: the folder is the adapter, plus its run record
    shutil.copytree(world / "aligned" / "negative", direct)
    record = {"stage": "align", "config": {"modality_settings": {"strength": 3}},
              "results": {"reference": {"fingerprint": {"model": "tiny", "frames": 2}}}}
    (direct / "vlynx_run.json").write_text(json.dumps(record))
    result = run_tune(config(world, tmp_path / "b", vision_adapters=[str(direct)], max_steps=1, batch_size=1),
                  transforms={"negative": Negative()})
    manifest = json.loads((result.bundle / "vlynx_bundle.json").read_text())
    assert manifest["modality_settings"] == {"negative": {"strength": 3}}
    assert manifest["reference_fingerprint"] == {"negative": {"model": "tiny", "frames": 2}}


@pytest.mark.parametrize("train_vision_adapter", [False, True])
def test_gradient_checkpointing_gives_the_same_lora_gradients(world, tmp_path, monkeypatch, train_vision_adapter):
    """One step's LoRA gradients (LLM, and the vision adapter when it trains) equal those without checkpointing."""
    import vlynx.tune

    trainer_class = vlynx.tune.InstructionTrainer

    def first_step(checkpointing):
        record = {}

        class Recording(trainer_class):
            def training_step(self, model, inputs, num_items_in_batch=None):
                modules = [self.backbone.language_model.layers[0].self_attn, self.backbone.attention_modules()[0]]
                calls = [0, 0]
                hooks = [m.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
                         for i, m in enumerate(modules)]
                loss = super().training_step(model, inputs, num_items_in_batch)
                for hook in hooks:
                    hook.remove()
                record.update(calls=calls, grads={name: p.grad.clone() for name, p in model.named_parameters()
                                                  if p.requires_grad})
                return loss

        monkeypatch.setattr(vlynx.tune, "InstructionTrainer", Recording)
        run_tune(config(world, tmp_path / f"out-{checkpointing}", max_steps=1, llm_dropout=0.0, vision_dropout=0.0,
                        train_vision_adapter=train_vision_adapter, gradient_checkpointing=checkpointing),
                 transforms={"negative": Negative()})
        return record

    plain, checkpointed = first_step(False), first_step(True)
    # recomputed in backward: the LLM layer always, the vision layer only when its adapter trains
    assert checkpointed["calls"] == [plain["calls"][0] + 1, plain["calls"][1] + train_vision_adapter]
    assert plain["grads"].keys() == checkpointed["grads"].keys()
    assert any(".negative." in name for name in plain["grads"]) == train_vision_adapter
    for name, grad in plain["grads"].items():
        assert grad.abs().sum() > 0 or "lora_A" in name, name  # the LLM LoRA's B starts at zero, so A's grad is 0
        torch.testing.assert_close(checkpointed["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=name)


# bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op). Measured first-step losses: float32
# 7.4353; bf16 autocast 7.4325 (3.8e-4); bfloat16 weights (--dtype) 7.4346 (1.0e-4)
BFLOAT16_RUNS = {"autocast": {"bf16": True}, "weights": {"dtype": "bfloat16"}}


@pytest.mark.parametrize("run", list(BFLOAT16_RUNS))
def test_bfloat16_on_cpu_runs_with_finite_losses_close_to_float32(world, tmp_path, run):
    """`bf16=True` (Trainer autocast, the GPU default path) and `dtype=bfloat16` (weights loaded in bfloat16)
    run on CPU too, with first-step losses near float32's."""
    losses = {}
    for name, overrides in (("float32", {}), (run, BFLOAT16_RUNS[run])):
        result = run_tune(config(world, tmp_path / name, max_steps=3, logging_steps=1, train_vision_adapter=True,
                                 **overrides), transforms={"negative": Negative()})
        losses[name] = json.loads((result.bundle / "vlynx_run.json").read_text())["results"]["losses"]
    assert len(losses[run]) == 3 and all(np.isfinite(losses[run]))
    assert losses[run][0] == pytest.approx(losses["float32"][0], rel=1e-2)
    assert losses[run][0] != losses["float32"][0]  # it did run in bfloat16
