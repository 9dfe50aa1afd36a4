"""`vlynx align --eval-data --eval-steps`: the interface gap logged during alignment, and nothing else changed."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vlynx.align import AlignConfig, run_align

MODALITY = "egocentric"


def _clips(directory, count, seed, shift=0):
    from vlynx.media.video import write_video

    directory.mkdir()
    rng = np.random.default_rng(seed)
    for index in range(count):
        frames = np.clip(rng.integers(0, 200, size=(4, 32, 32, 3)) + shift, 0, 255).astype(np.uint8)
        write_video(directory / f"clip{index}.mp4", frames, fps=4)
    return directory


@pytest.fixture(scope="module")
def world(tiny_checkpoint, tmp_path_factory):
    from vlynx.backbones import load_backbone
    from vlynx.reference import compute_reference, save_reference, video_sources

    root = tmp_path_factory.mktemp("monitor")
    videos = _clips(root / "videos", 3, seed=0)
    reference = compute_reference(load_backbone(tiny_checkpoint), video_sources([videos]), frames_per_video=2)
    return {"root": root, "inputs": _clips(root / "inputs", 4, seed=1, shift=60),
            "heldout": _clips(root / "heldout", 2, seed=2, shift=60),
            "reference": save_reference(reference, root / "ref.safetensors"), "checkpoint": tiny_checkpoint}


def _config(world, out, **overrides):
    return AlignConfig(model=str(world["checkpoint"]), modality=MODALITY, data=str(world["inputs"]),
                       reference=str(world["reference"]), out=str(out), vision_rank=4, vision_alpha=8,
                       vision_dropout=0.1, batch_size=2, lr=5e-3, max_steps=4, logging_steps=2, save_steps=1000,
                       seed=0, **overrides)


def test_gap_curve_is_logged_equals_diagnose_and_changes_no_weight(world, tmp_path):
    from vlynx.backbones import load_backbone
    from vlynx.diagnose.gap import VideoReference, interface_gap, pixel_batches, token_pass
    from vlynx.modalities import get_modality
    from vlynx.reference import load_reference

    monitored = run_align(_config(world, tmp_path / "monitored", eval_data=str(world["heldout"]), eval_steps=3))
    plain = run_align(_config(world, tmp_path / "plain"))
    # observing does not change training: the same adapter, bit for bit (dropout on: the RNG is untouched too)
    first = load_file(monitored.out / "adapter_model.safetensors")
    second = load_file(plain.out / "adapter_model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    curve = json.loads((monitored.out / "vlynx_run.json").read_text())["results"]["interface_gap"]
    assert [point["step"] for point in curve] == [0, 3, 4]  # start, every 3 steps, the last step
    layers = load_backbone(world["checkpoint"], language_model=False).layout.num_layers
    assert all(f"attention_term_layer_{layer}" in point for point in curve for layer in range(layers))
    assert curve[-1]["attention_term"] != pytest.approx(curve[0]["attention_term"], rel=1e-4)  # it trained

    # step 0 is the fresh adapter (LoRA B = 0): the base encoder, i.e. diagnose's "before" on these inputs
    backbone = load_backbone(world["checkpoint"], language_model=False)
    stored = load_reference(world["reference"])
    reference = VideoReference(stored.keys, stored.values, stored.token_mean, stored.token_var)
    paths = sorted(world["heldout"].glob("*.mp4"))
    transform = get_modality(MODALITY)
    before = interface_gap(token_pass(backbone, pixel_batches(paths, lambda p: transform.frames(p, 2),
                                                              backbone.preprocess_frames, 8, []),
                                      reference=reference), reference)
    assert curve[0]["attention_term"] == pytest.approx(before["attention_term"], rel=1e-5)
    assert curve[0]["distribution_term"] == pytest.approx(before["distribution_term"], rel=1e-5)


def test_eval_steps_must_be_positive(world, tmp_path):
    from vlynx.errors import VlynxError

    with pytest.raises(VlynxError, match="eval_steps"):
        run_align(_config(world, tmp_path / "bad", eval_data=str(world["heldout"]), eval_steps=0))
