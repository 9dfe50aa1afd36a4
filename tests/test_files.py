"""Atomic writing: a failed write leaves the previous file or folder and no temporary behind."""
from __future__ import annotations

import os
import stat

import pytest

from vlynx.files import atomic_directory, atomic_path, write_text_atomic


def test_interrupted_write_keeps_the_old_file(tmp_path):
    target = write_text_atomic(tmp_path / "sub" / "out.txt", "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new"


def old_folder(root):
    (root / "out" / "sub").mkdir(parents=True)
    (root / "out" / "stale.txt").write_text("old")
    (root / "out" / "sub" / "deep.txt").write_text("old")
    return root / "out"


def test_completed_directory_replaces_the_old_one_whole(tmp_path):
    target = old_folder(tmp_path)
    with atomic_directory(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".") and not any(staging.iterdir())
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or moved-aside folder left
    with atomic_directory(tmp_path / "fresh" / "dir") as staging:  # missing parents are made
        (staging / "a.txt").write_text("a")
    assert (tmp_path / "fresh" / "dir" / "a.txt").read_text() == "a"


def test_interrupted_directory_keeps_the_old_one(tmp_path):
    target = old_folder(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target) as staging:
            (staging / "half.txt").write_text("half")
            raise KeyboardInterrupt
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["stale.txt", "sub", "sub/deep.txt"]
    assert (target / "stale.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_directory_permissions_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with atomic_directory(tmp_path / "out") as staging:
            (staging / "script.sh").write_text("echo\n")
            (staging / "script.sh").chmod(0o750)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "out" / "script.sh").stat().st_mode) == 0o750


def test_settings_files_and_assignments(tmp_path):
    from vlynx.errors import VlynxError
    from vlynx.config import parse_assignments, read_settings_file

    (tmp_path / "a.yaml").write_text("lr: 0.001\nmodality_settings: {n_mels: 32}\n")
    (tmp_path / "b.json").write_text('{\n\t"lr": 0.002\n}')  # tab-indented JSON is not valid YAML
    (tmp_path / "c.yaml").write_text("- 1\n- 2\n")
    assert read_settings_file(tmp_path / "a.yaml") == {"lr": 0.001, "modality_settings": {"n_mels": 32}}
    assert read_settings_file(tmp_path / "b.json") == {"lr": 0.002}
    with pytest.raises(VlynxError, match="expected a mapping"):
        read_settings_file(tmp_path / "c.yaml")
    assert parse_assignments(["n_mels=32", "f_max=8000.0", "flag=true", "pair=[0, 1]"]) == {
        "n_mels": 32, "f_max": 8000.0, "flag": True, "pair": [0, 1]}
    with pytest.raises(VlynxError, match="KEY=VALUE"):
        parse_assignments(["novalue"])
