"""MUSIC-AVQA (Li et al., 2022) as released at gewu-lab.github.io/MUSIC-AVQA.

Layout read (PAVE `tools/audio/music-avqa/clean_and_check_the_annotation.py` and
`convert_annotation_to_training_format_duplicate_audio_related.py`; lynx `docs/data_preparation/music_avqa.md`):

    RELEASE/avqa-{train,val,test}.json       (also found under RELEASE/data/json/)
        [{"video_id": "00000272", "question_id": 2,
          "type": "[\\"Audio\\", \\"Counting\\"]",          # a JSON-encoded [group, question type]
          "question_content": "Is the <Object> on the <LR> louder?",
          "templ_values": "[\\"cello\\", \\"left\\"]",      # JSON-encoded, one value per placeholder
          "anser": "yes", ...}]
    MEDIA/MUSIC-AVQA-videos-Real/<video_id>.mp4         video ids that start with a digit
    MEDIA/MUCIS-AVQA-videos-Synthetic/<video_id>.mp4    the others (the release spells it MUCIS)
    MEDIA/<video_id>.mp4                                 accepted too (all videos in one folder)

The placeholders (`<Object>`, `<LR>`, `<FL>`, `<TH>`, ...) are filled in order from `templ_values`
(`vlynx.metrics.tasks.fill_template`, as the dataset's own code does). The video carries the audio
track, so entries have no separate `audio`. PAVE lists audio questions twice in its training file;
here every question is one entry (ids stay unique; repeat entries in the training recipe if wanted).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from vlynx.errors import VlynxError
from vlynx.prepare.base import Item, Preparer, need, read_release_json, record_list, release_file

REAL_VIDEOS = "MUSIC-AVQA-videos-Real"
SYNTHETIC_VIDEOS = "MUCIS-AVQA-videos-Synthetic"


def video_candidates(media_root: Path, video_id: str) -> list[Path]:
    """Where a MUSIC-AVQA video may lie: its real/synthetic folder, else the media root itself."""
    folder = REAL_VIDEOS if video_id[:1].isdigit() else SYNTHETIC_VIDEOS
    return [media_root / folder / f"{video_id}.mp4", media_root / f"{video_id}.mp4"]


def decoded_list(value: object) -> list:
    """A release field stored as a JSON-encoded list (or already a list)."""
    return json.loads(value) if isinstance(value, str) else list(value)  # type: ignore[arg-type]


def items(release: Path, split: str, media_root: Path) -> Iterator[Item]:
    from vlynx.metrics.tasks import fill_template, music_avqa_type

    path = release_file(release, [f"avqa-{split}.json"], ("", "data/json", "json"))
    for index, record in enumerate(record_list(read_release_json(path), path)):
        video_id = str(need(record, "video_id", index, path))
        content = str(need(record, "question_content", index, path))
        try:
            kind = list(music_avqa_type(need(record, "type", index, path)))
            values = decoded_list(record.get("templ_values", "[]"))
            question = fill_template(content, values)
        except (ValueError, TypeError) as error:
            raise VlynxError(f"record {index} (question_id {record.get('question_id')}) {error}", path) from error
        answer = str(need(record, "anser", index, path))
        fields = {"id": str(need(record, "question_id", index, path)), "question_id": record["question_id"],
                  "video_id": video_id, "type": kind, "question_content": content, "templ_values": values,
                  "question": question, "anser": answer}
        yield Item(fields=fields, media={"video": video_candidates(media_root, video_id)}, answer=answer)


PREPARER = Preparer(
    name="music-avqa", splits=("train", "val", "test"), items=items,
    reads="avqa-{train,val,test}.json; videos in MUSIC-AVQA-videos-Real/, MUCIS-AVQA-videos-Synthetic/")
