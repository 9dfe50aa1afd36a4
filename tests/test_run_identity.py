"""Nothing resumed or reused across different runs: every stage's identity check names what differs; one writer."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.test_align import _config as align_config
from tests.test_align import world as align_world  # noqa: F401  (fixture)
from tests.test_tune import Negative, adapter_weights, world  # noqa: F401  (fixture)
from tests.test_tune import config as tune_config
from vlynx.align import run_align
from vlynx.bundle import VLynx
from vlynx.cli import main
from vlynx.errors import VlynxError
from vlynx.outputs import IDENTITY_FILE, output_lock
from vlynx.tune import run_tune


def test_tune_resume_with_other_settings_is_refused(world, tmp_path):  # noqa: F811
    """The reported case: `tune --max-steps 3 --resume` must not continue a 2-step run's checkpoints."""
    negative = {"negative": Negative()}
    run_tune(tune_config(world, tmp_path / "b", max_steps=2, save_steps=1, batch_size=1), transforms=negative)
    assert (tmp_path / "b.checkpoints" / IDENTITY_FILE).is_file()
    with pytest.raises(VlynxError, match="complete: nothing to resume"):
        run_tune(tune_config(world, tmp_path / "b", max_steps=2, save_steps=1, batch_size=1, resume=True),
                 transforms=negative)
    shutil.rmtree(tmp_path / "b")  # as if killed before the bundle was written
    with pytest.raises(VlynxError, match=r"different run \(settings\.max_steps: recorded 2, now 3\).*--overwrite"):
        run_tune(tune_config(world, tmp_path / "b", max_steps=3, save_steps=1, batch_size=1, resume=True),
                 transforms=negative)
    # the same run continues: killed after its last checkpoint, it only writes the bundle
    again = run_tune(tune_config(world, tmp_path / "b", max_steps=2, save_steps=1, batch_size=1, resume=True),
                     transforms=negative)
    assert again.steps == 2
    straight = run_tune(tune_config(world, tmp_path / "straight", max_steps=2, save_steps=1, batch_size=1),
                        transforms=negative)
    a = adapter_weights(VLynx.from_pretrained(again.bundle, transforms=negative).backbone, "llm")
    b = adapter_weights(VLynx.from_pretrained(straight.bundle, transforms=negative).backbone, "llm")
    assert a.keys() == b.keys() and a and all(torch.equal(a[k], b[k]) for k in a)  # not one step more


def test_tune_resume_with_another_adapter_is_refused(world, tmp_path):  # noqa: F811
    from safetensors.torch import load_file, save_file

    negative = {"negative": Negative()}
    changed = tmp_path / "aligned"
    shutil.copytree(world / "aligned", changed)
    run_tune(tune_config(world, tmp_path / "b", vision_adapters=[str(changed)], max_steps=1, batch_size=1),
             transforms=negative)
    shutil.rmtree(tmp_path / "b")  # as if killed before the bundle was written
    weights = changed / "negative" / "adapter_model.safetensors"
    save_file({k: v + 1e-3 for k, v in load_file(weights).items()}, weights)  # a different adapter, same files
    with pytest.raises(VlynxError, match=r"adapters\.negative: recorded '[0-9a-f]+', now '[0-9a-f]+'"):
        run_tune(tune_config(world, tmp_path / "b", vision_adapters=[str(changed)], max_steps=1, batch_size=1,
                             resume=True), transforms=negative)
    assert torch.is_tensor(load_file(weights)[next(iter(load_file(weights)))])


def test_align_resume_with_other_inputs_or_settings_is_refused(align_world, tmp_path):  # noqa: F811
    run_align(align_config(align_world, tmp_path / "a", max_steps=2, save_steps=1))
    shutil.rmtree(tmp_path / "a")  # as if killed before the adapter was written
    with pytest.raises(VlynxError, match=r"settings\.lr: recorded 0\.005, now 0\.001"):
        run_align(align_config(align_world, tmp_path / "a", max_steps=2, save_steps=1, lr=1e-3, resume=True))
    fewer = tmp_path / "fewer"
    shutil.copytree(align_world["inputs"], fewer)
    next(fewer.glob("*.mp4")).unlink()
    with pytest.raises(VlynxError, match=r"inputs: recorded"):
        run_align(align_config(align_world, tmp_path / "a", max_steps=2, save_steps=1, data=str(fewer),
                               resume=True))


def _eval_files(tmp_path):
    from tests.test_eval import _eval_config_file

    return _eval_config_file(tmp_path)


def test_eval_resume_with_another_model_is_refused(tmp_path, capsys, monkeypatch):
    """The reported case: predictions of model A must not be reported as model B's."""
    from tests.test_eval import BUNDLE_ANSWERS, FakeModel
    from vlynx.bundle import VLynx

    monkeypatch.setattr(VLynx, "from_pretrained", lambda path, **options: FakeModel(BUNDLE_ANSWERS[str(path)]))
    config_file = _eval_files(tmp_path)
    assert main(["eval", "--config", config_file]) == 0
    capsys.readouterr()
    assert main(["eval", "--config", config_file, "--model", "bundle-b", "--resume"]) == 2
    error = capsys.readouterr().err
    assert "different run (model.name: recorded 'bundle-a', now 'bundle-b')" in error and "\n" not in error.strip()
    identity = json.loads((tmp_path / "out" / IDENTITY_FILE).read_text())
    assert identity["model"] == {"name": "bundle-a"}


def test_a_second_writer_of_the_same_output_is_refused(tmp_path, capsys, monkeypatch):
    from tests.test_eval import BUNDLE_ANSWERS, FakeModel
    from vlynx.bundle import VLynx

    monkeypatch.setattr(VLynx, "from_pretrained", lambda path, **options: FakeModel(BUNDLE_ANSWERS[str(path)]))
    config_file = _eval_files(tmp_path)
    with output_lock(tmp_path / "out"):  # another run is writing this output
        assert main(["eval", "--config", config_file]) == 2
        assert "another vlynx process is writing this output" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()  # the refused run did nothing
    assert not (tmp_path / "out.lock").exists()  # released and removed
    assert main(["eval", "--config", config_file]) == 0


def test_miniworld_generate_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    out = tmp_path / "split"
    assert main(["-q", "miniworld", "generate", "--split", "reference", "--n", "1", "--out", str(out)]) == 0
    (out / "stray.txt").write_text("from another run")
    assert main(["-q", "miniworld", "generate", "--split", "reference", "--n", "2", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["-q", "miniworld", "generate", "--split", "reference", "--n", "2", "--out", str(out),
                 "--overwrite"]) == 0
    assert not (out / "stray.txt").exists()
    assert len((out / "videos.txt").read_text().split()) == 2


def test_a_checkpoint_torn_while_saving_is_passed_over(tmp_path, caplog):
    from vlynx.training import last_checkpoint

    assert last_checkpoint(tmp_path) is None  # nothing to resume
    for step, files in ((2, ["trainer_state.json", "optimizer.pt"]), (4, ["trainer_state.json"]),
                        (10, ["optimizer.pt"])):
        (tmp_path / f"checkpoint-{step}").mkdir()
        for name in files:
            (tmp_path / f"checkpoint-{step}" / name).write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")  # 10 and 4 were killed mid-save
    assert "checkpoint-10 is incomplete (no trainer_state.json" in caplog.text
    shutil.rmtree(tmp_path / "checkpoint-2")
    with pytest.raises(VlynxError, match="no complete checkpoint to resume from: pass --overwrite"):
        last_checkpoint(tmp_path)


def test_a_typo_in_a_video_list_is_an_error_not_a_smaller_reference(tmp_path, capsys):
    from tests.test_reference import write_videos

    write_videos(tmp_path / "videos", 2, seed=3)
    listing = tmp_path / "list.txt"
    listing.write_text("videos/video0.mp4\nvideos/video1.mp4\nvideos/vide2.mp4\n")
    code = main(["reference", "--model", "tiny", "--videos", str(listing), "--frames", "2",
                 "--out", str(tmp_path / "ref.safetensors")])
    error = capsys.readouterr().err
    assert code == 2 and "1 of 3 listed files do not exist" in error and "vide2.mp4" in error
    assert not (tmp_path / "ref.safetensors").exists()
