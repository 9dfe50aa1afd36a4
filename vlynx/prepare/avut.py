"""AVUT (Yang et al., 2025) as released at huggingface.co/datasets/tsinghua-ee/AVUTBenchmark
(github.com/lark-png/AVUT): the paper's Table B4 trains on AV-Gemini and evaluates on AV-Human.

Layout read (the AVUT README: "two video annotation JSON files, AV_Human_data.json and
AV_Gemini_data.json"; the record fields as third-party loaders of that release read them):

    RELEASE/AV_Gemini_data.json    split train (Gemini-generated questions)
    RELEASE/AV_Human_data.json     split test (human-annotated questions)
        [{"QA_id": 12, "video_id": 3, "url": "https://www.youtube.com/...", "video_type": "vlog",
          "task_type": "Audio Information Extraction", "question": "...",
          "option_A": "...", "option_B": "...", "option_C": "...", "option_D": "...",
          "answer": "B", "video_path": "data/<youtube id>.mp4"}]
    MEDIA/<video_path>             (or MEDIA/<file name of video_path>: the dataset repository
                                    keeps the videos at its top level)

The video carries the audio track. `id` is `QA_id` (a video has several questions); the gpt turn is
the answer's letter, which the prompt (`vlynx.metrics.avut.AVUT.entry_prompt`) asks for.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from vlynx.errors import VlynxError
from vlynx.metrics.avut import OPTION_KEYS
from vlynx.prepare.base import Item, Preparer, need, read_release_json, record_list, release_file

FILES = {"train": "AV_Gemini_data.json", "test": "AV_Human_data.json"}


def items(release: Path, split: str, media_root: Path) -> Iterator[Item]:
    path = release_file(release, [FILES[split]])
    for index, record in enumerate(record_list(read_release_json(path), path)):
        qa_id = need(record, "QA_id", index, path)
        answer = str(need(record, "answer", index, path)).strip().upper()
        if answer not in ("A", "B", "C", "D"):
            raise VlynxError(f"record {index} (QA_id {qa_id}) has answer {record['answer']!r}, not A-D", path)
        fields = {"id": str(qa_id), "QA_id": qa_id}
        fields.update({key: record[key] for key in ("video_id", "video_type") if record.get(key) is not None})
        fields["task_type"] = str(need(record, "task_type", index, path))
        fields["question"] = str(need(record, "question", index, path))
        fields.update({key: str(need(record, key, index, path)) for key in OPTION_KEYS})
        fields["answer"] = answer
        video = PurePosixPath(str(need(record, "video_path", index, path)))
        yield Item(fields=fields, media={"video": [media_root / video, media_root / video.name]}, answer=answer)


PREPARER = Preparer(name="avut", splits=("train", "test"), items=items,
                    reads="AV_Gemini_data.json (train) / AV_Human_data.json (test); videos at video_path")
