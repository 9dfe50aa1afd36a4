"""2 ranks under torchrun (gloo, CPU) give the statistics of 1 process; the CLI end to end."""
from __future__ import annotations

import os
import subprocess
import sys

import torch

from tests.conftest import free_port
from tests.test_reference import FRAMES, write_videos
from vlynx.reference import VideoSource, compute_reference, load_reference


def test_two_ranks_equal_one_process(tiny_checkpoint, tmp_path):
    from vlynx.backbones import load_backbone

    first = write_videos(tmp_path / "first", 3, seed=7)
    second = write_videos(tmp_path / "second", 2, seed=8)
    (tmp_path / "second" / "broken.mp4").write_bytes(os.urandom(2000))
    out = tmp_path / "out" / "ref.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "vlynx", "reference", "--model", str(tiny_checkpoint),
               "--videos", str(tmp_path / "first"), "--videos", str(tmp_path / "second"),
               "--source", "first", "--source", "second", "--frames", str(FRAMES), "--out", str(out),
               "--batch-size", "2", "--workers", "0", "--checkpoint-every", "1", "--device", "cpu"]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "5 videos" in finished.stdout and "broken.mp4" in finished.stdout

    backbone = load_backbone(tiny_checkpoint)
    distributed = load_reference(out, backbone, frames_per_video=FRAMES)
    sources = [VideoSource("first", tuple(first)),
               VideoSource("second", tuple(sorted(second + [tmp_path / "second" / "broken.mp4"])))]
    single = compute_reference(backbone, sources, FRAMES, batch_size=2)
    for name in ("keys", "values"):
        torch.testing.assert_close(getattr(distributed, name), getattr(single, name), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(distributed.source_keys["second"], single.source_keys["second"],
                                   rtol=1e-5, atol=1e-6)
    for name in ("token_mean", "token_var"):
        torch.testing.assert_close(getattr(distributed, name), getattr(single, name), rtol=1e-10, atol=1e-12)
    assert distributed.counts == single.counts and distributed.sources == single.sources
    assert distributed.skipped == single.skipped and len(single.skipped) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == [  # rank checkpoints removed
        "ref.safetensors", "ref.safetensors.config.yaml", "ref.safetensors.run.json"]
