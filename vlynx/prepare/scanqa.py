"""ScanQA (Azuma et al., 2022) as released at github.com/ATR-DBI/ScanQA, on ScanNet scenes.

Layout read (PAVE `tools/3d/scanqa/convert_annotation_to_training_format.py`,
`build_scanqa_val_question_file.py`; lynx `docs/data_preparation/scanqa.md`):

    RELEASE/ScanQA_v1.0_{train,val,test_w_obj,test_wo_obj}.json   (also under RELEASE/qa/, RELEASE/data/qa/)
        [{"question_id": "train-scene0000-0", "scene_id": "scene0000_00", "question": "What is ...?",
          "answers": ["brown chair", ...], "object_ids": [...], "object_names": [...]}]
      the test files are released without "answers" (and test_wo_obj without objects)
    MEDIA/<scene_id>/                a ScanNet scene folder (color/, depth/, pose/, ... as lynx's
                                      3d/frames_square/<scene_id>/), which is the entry's `video`

The depth modality reads the same scene folder when the entry has no `depth` field. A split
without answers gives entries with only the human turn (for predictions; it cannot be scored).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlynx.prepare.base import Item, Preparer, need, read_release_json, record_list, release_file
from vlynx.progress import log

SPLITS = ("train", "val", "test_w_obj", "test_wo_obj")


def items(release: Path, split: str, media_root: Path) -> Iterator[Item]:
    path = release_file(release, [f"ScanQA_v1.0_{split}.json"], ("", "qa", "data/qa"))
    records = record_list(read_release_json(path), path)
    if any("answers" not in record for record in records):
        log.warning("%s: %d of %d questions have no answers (a test split): entries get no gpt turn",
                    path, sum("answers" not in r for r in records), len(records))
    for index, record in enumerate(records):
        scene_id = str(need(record, "scene_id", index, path))
        fields = {"id": str(need(record, "question_id", index, path)), "question_id": record["question_id"],
                  "scene_id": scene_id, "question": str(need(record, "question", index, path))}
        answers = [str(answer) for answer in record.get("answers", [])]
        if answers:
            fields["answers"] = answers
        if "object_names" in record:
            fields["object_names"] = record["object_names"]
        yield Item(fields=fields, media={"video": [media_root / scene_id]}, answer=answers[0] if answers else None)


PREPARER = Preparer(name="scanqa", splits=SPLITS, items=items,
                    reads="ScanQA_v1.0_{train,val,test_w_obj,test_wo_obj}.json; ScanNet scene folders <scene_id>/")
