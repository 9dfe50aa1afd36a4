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
