"""Atomic writing: a failed write leaves the previous file and no temporary behind."""
from __future__ import annotations

import pytest

from vlynx.files import atomic_path, write_text_atomic


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


def test_settings_files_and_assignments(tmp_path):
    from vlynx.errors import VlynxError
    from vlynx.settings import parse_assignments, read_settings_file

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
