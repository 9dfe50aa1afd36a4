"""`vlynx reference` on the command line: compute, report, config files, the output policy, one-line errors."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.test_reference import FRAMES, write_videos
from vlynx.cli import main
from vlynx.media import read_video
from vlynx.reference import load_reference, stability_report
from vlynx.stage_configs import ReferenceConfig


def test_compute_then_report(tiny_checkpoint, tmp_path, capsys):
    write_videos(tmp_path / "one", 2, seed=11)
    write_videos(tmp_path / "two", 2, seed=12)
    listing = tmp_path / "two.txt"
    listing.write_text("# the second source as a list file\ntwo/video0.mp4\ntwo/video1.mp4\n")
    out = tmp_path / "ref.safetensors"
    code = main(["-q", "reference", "--model", str(tiny_checkpoint), "--videos", str(tmp_path / "one"),
                 "--videos", str(listing), "--frames", str(FRAMES), "--out", str(out), "--workers", "1",
                 "--device", "cpu"])
    assert code == 0
    assert f"{out}: 4 videos, {4 * FRAMES} frames" in capsys.readouterr().out
    reference = load_reference(out)
    assert list(reference.sources) == ["one", "two"]  # default names: the folder and the list file
    assert not (tmp_path / "ref.safetensors.checkpoints").exists()

    assert main(["reference", "--report", str(out)]) == 0
    report = capsys.readouterr().out.splitlines()
    layer_one = stability_report(reference)[0]
    cells = report[report.index(next(l for l in report if l.lstrip().startswith("layer"))) + 1].split()
    assert cells[0] == "1" and float(cells[2]) == round(layer_one.key_magnitude, 3)
    assert float(cells[3]) == round(layer_one.key_variance, 6)


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["reference", "--model", "tiny", "--frames", "2"]) == 2
    assert "missing --videos, --out" in capsys.readouterr().err
    write_videos(tmp_path, 1, seed=3)
    assert main(["reference", "--report", str(tmp_path / "video0.mp4")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("vlynx reference: error:") and "video0.mp4" in error and "\n" not in error

    # zero frames is a bad value, not a missing one
    assert main(["reference", "--model", "tiny", "--videos", str(tmp_path), "--frames", "0",
                 "--out", str(tmp_path / "ref.safetensors")]) == 2
    error = capsys.readouterr().err.strip()
    assert "frames" in error and ">= 1" in error and "missing" not in error and "\n" not in error


@pytest.fixture
def job(tiny_checkpoint, tmp_path) -> dict:
    """The settings of a small two-source run, as a config file would hold them."""
    write_videos(tmp_path / "first", 3, seed=21)
    write_videos(tmp_path / "second", 2, seed=22)
    return {"model": str(tiny_checkpoint), "videos": [str(tmp_path / "first"), str(tmp_path / "second")],
            "sources": ["first", "second"], "frames": FRAMES, "out": str(tmp_path / "out" / "ref.safetensors"),
            "workers": 0, "device": "cpu"}


def reference(*args: str) -> int:
    return main(["-q", "reference", *args])


def test_config_file_round_trip_repeats_the_run(job, tmp_path, capsys):
    settings = tmp_path / "reference.yaml"
    settings.write_text(yaml.safe_dump({**job, "batch_size": 2, "checkpoint_every": 1}))
    assert reference("--config", str(settings)) == 0
    out = tmp_path / "out" / "ref.safetensors"
    assert f"{out}: 5 videos" in capsys.readouterr().out

    saved = out.with_name("ref.safetensors.config.yaml")
    used = ReferenceConfig.from_file(settings).resolved()
    assert ReferenceConfig.from_file(saved) == used
    record = json.loads(out.with_name("ref.safetensors.run.json").read_text())
    first = load_reference(out)
    assert record["stage"] == "reference" and record["results"]["counts"] == first.counts
    assert record["results"]["skipped"] == 0 and record["results"]["fingerprint"] == first.fingerprint
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "ref.safetensors", "ref.safetensors.config.yaml", "ref.safetensors.run.json"]  # checkpoints removed

    # the saved config repeats the run: the same statistics, to the bit
    assert reference("--config", str(saved), "--overwrite") == 0
    again = load_reference(out)
    for name in ("keys", "values", "token_mean", "token_var"):
        assert torch.equal(getattr(again, name), getattr(first, name))
    assert again.sources == first.sources


def test_set_and_flags_override_the_config_file(job, tmp_path):
    settings = tmp_path / "reference.yaml"
    settings.write_text(yaml.safe_dump({**job, "batch_size": 4, "frames": 5}))
    assert reference("--config", str(settings), "--set", "batch_size=2", "--set", "checkpoint_every=0",
                     "--frames", str(FRAMES)) == 0
    saved = ReferenceConfig.from_file(tmp_path / "out" / "ref.safetensors.config.yaml")
    assert (saved.batch_size, saved.checkpoint_every, saved.frames) == (2, 0, FRAMES)
    assert load_reference(tmp_path / "out" / "ref.safetensors").frames_per_video == FRAMES


def test_unknown_setting_is_rejected_with_the_known_ones(job, tmp_path, capsys):
    flags = ["--model", job["model"], "--videos", job["videos"][0], "--frames", str(FRAMES), "--out", job["out"]]
    assert reference(*flags, "--set", "batch=2") == 2
    error = capsys.readouterr().err.strip()
    assert "unknown setting(s) batch " in error and "\n" not in error
    known = error[error.index("known: ") + len("known: "):].rstrip(")").split(", ")
    assert "batch_size" in known and "checkpoint_every" in known and "sources" in known

    settings = tmp_path / "typo.yaml"
    settings.write_text(yaml.safe_dump({**job, "frame": 3}))
    assert reference("--config", str(settings)) == 2
    error = capsys.readouterr().err
    assert str(settings) in error and "unknown setting(s) frame " in error
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_without_overwrite(job, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out" / "ref.safetensors"
    first = ["--model", job["model"], "--videos", job["videos"][0], "--frames", str(FRAMES), "--out", str(out),
             "--workers", "0", "--device", "cpu"]
    assert reference(*first) == 0
    written = out.read_bytes()

    def no_model(*args, **kwargs):
        raise AssertionError("the model is loaded only after the output policy allowed the run")

    monkeypatch.setattr("vlynx.backbones.load_backbone", no_model)
    assert reference(*first) == 2
    error = capsys.readouterr().err.strip()
    assert "output already exists" in error and "--overwrite" in error and str(out) in error
    assert out.read_bytes() == written
    monkeypatch.undo()

    assert reference(*first[:2], "--videos", job["videos"][1], *first[4:], "--overwrite") == 0
    assert load_reference(out).counts["videos"] == 2  # the second source's, no longer the first's 3


def test_checkpoints_are_refused_without_resume_and_resumed_with_it(job, tmp_path, capsys, monkeypatch):
    import vlynx.reference.compute as compute_module  # where videos are read

    flags = ["--config", str(tmp_path / "job.yaml"), "--batch-size", "1", "--checkpoint-every", "1"]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    out = tmp_path / "out" / "ref.safetensors"
    checkpoints = tmp_path / "out" / "ref.safetensors.checkpoints"
    reads = []

    def interrupted_read(path, num_frames):
        if len(reads) == 3:  # the 4th video: killed after 3 videos were checkpointed
            raise KeyboardInterrupt
        reads.append(path)
        return read_video(path, num_frames)

    monkeypatch.setattr(compute_module, "read_video", interrupted_read)
    assert reference(*flags) == 130
    assert (checkpoints / "rank0-of-1.safetensors").is_file() and not out.exists()
    assert "interrupted; progress saved: rerun the same command with --resume" in capsys.readouterr().err

    reads.clear()
    monkeypatch.setattr(compute_module, "read_video", lambda path, n: reads.append(path) or read_video(path, n))
    assert reference(*flags) == 2
    error = capsys.readouterr().err.strip()
    assert "checkpoints of an earlier run" in error and "--resume" in error and "\n" not in error
    assert reads == [] and (checkpoints / "rank0-of-1.safetensors").is_file()
    assert reference(*flags, "--frames", str(FRAMES + 1), "--resume") == 2  # another job's checkpoint
    assert "different run (settings.frames: recorded 3, now 4)" in capsys.readouterr().err

    assert reference(*flags, "--resume") == 0
    assert [p.parent.name for p in reads] == ["second", "second"]  # only what the checkpoint did not cover
    assert not checkpoints.exists()
    resumed = load_reference(out)
    assert reference(*flags, "--out", str(tmp_path / "uninterrupted.safetensors")) == 0
    uninterrupted = load_reference(tmp_path / "uninterrupted.safetensors")
    for name in ("keys", "values", "token_mean", "token_var"):
        torch.testing.assert_close(getattr(resumed, name), getattr(uninterrupted, name), rtol=0, atol=1e-12)
    assert resumed.counts == uninterrupted.counts and resumed.sources == uninterrupted.sources
