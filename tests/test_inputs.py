"""Input listing: a clip that several annotation entries (questions) name is one input."""
from __future__ import annotations

import json

from vlynx.align import alignment_inputs
from vlynx.inputs import list_media


def _annotation(tmp_path):
    for name in ("a.mp4", "b.mp4", "b.wav"):
        (tmp_path / name).write_bytes(b"x")
    entries = [{"id": "1", "video": "b.mp4"}, {"id": "2", "video": "a.mp4"}, {"id": "3", "video": "b.mp4"},
               {"id": "4", "video": "a.mp4", "audio": "b.wav"}]
    path = tmp_path / "annot.json"
    path.write_text(json.dumps(entries))
    return path


def test_reference_videos_of_an_annotation_file_are_listed_once_in_first_seen_order(tmp_path):
    assert list_media(_annotation(tmp_path)) == [tmp_path / "b.mp4", tmp_path / "a.mp4"]


def test_alignment_inputs_of_an_annotation_file_are_listed_once(tmp_path):
    # entry 4 has its own audio file; the others give their video (its audio track)
    assert alignment_inputs(_annotation(tmp_path), "audio") == [tmp_path / "b.mp4", tmp_path / "a.mp4",
                                                                tmp_path / "b.wav"]
