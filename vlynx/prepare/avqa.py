"""AVQA (Yang et al., 2022) as released at mn.cs.tsinghua.edu.cn/avqa, videos from VGGSound.

Layout read (lynx `docs/data_preparation/avqa.md`, `scripts/avqa_eval.py`, `libs/dataset/lynx_sft.py`;
PAVE `doc/avqa_dataset_prep.md`):

    RELEASE/{train,val}_qa.json
        [{"id": 1, "video_name": "-HG3Omg_89c_000030", "question_text": "What is ...?",
          "multi_choice": ["cello", "drum", "piano", "flute"], "answer": 2,     # index 0-3
          "question_type": ..., "question_relation": ...}]
    RELEASE/avqa_from_vid_to_video_name.json   optional: {video_name: video file name}; default
                                               "<video_name>.mp4" (PAVE's mapping of the VGGSound files)
    MEDIA/videos/<file name>                    (or MEDIA/<file name>)

The entry keeps `question` (the release's `question_text`), `multi_choice` and `answer` (the index);
the gpt turn is the answer's letter, which the prompt asks for.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlynx.errors import VlynxError
from vlynx.metrics.choices import LETTERS
from vlynx.prepare.base import Item, Preparer, need, read_release_json, record_list, release_file

VIDEO_NAME_MAPPING = "avqa_from_vid_to_video_name.json"


def video_file_names(release: Path) -> dict[str, str]:
    """video_name -> file name from the optional mapping file (empty when the release has none)."""
    path = release / VIDEO_NAME_MAPPING
    if not path.is_file():
        return {}
    mapping = read_release_json(path)
    if not isinstance(mapping, dict):
        raise VlynxError("expected a JSON object {video_name: video file name}", path)
    return {str(key): str(value) for key, value in mapping.items()}


def items(release: Path, split: str, media_root: Path) -> Iterator[Item]:
    path = release_file(release, [f"{split}_qa.json"])
    file_names = video_file_names(release)
    for index, record in enumerate(record_list(read_release_json(path), path)):
        video_name = str(need(record, "video_name", index, path))
        choices = need(record, "multi_choice", index, path)
        answer = need(record, "answer", index, path)
        if not isinstance(choices, list) or len(choices) != 4:
            raise VlynxError(f"record {index} has 'multi_choice' {choices!r}, not a list of 4 options", path)
        if not (str(answer).strip().isdigit() and 0 <= int(answer) < 4):
            raise VlynxError(f"record {index} has 'answer' {answer!r}, not an option index 0-3", path)
        file_name = file_names.get(video_name, f"{video_name}.mp4")
        fields = {"id": str(need(record, "id", index, path)), "video_name": video_name,
                  "question": str(need(record, "question_text", index, path)),
                  "multi_choice": [str(choice) for choice in choices], "answer": int(answer)}
        for extra in ("question_type", "question_relation"):
            if extra in record:
                fields[extra] = record[extra]
        yield Item(fields=fields, media={"video": [media_root / "videos" / file_name, media_root / file_name]},
                   answer=LETTERS[int(answer)])


PREPARER = Preparer(name="avqa", splits=("train", "val"), items=items,
                    reads="{train,val}_qa.json (+ avqa_from_vid_to_video_name.json); videos in videos/")
