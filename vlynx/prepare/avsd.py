"""AVSD (Alamri et al., 2019) as released for DSTC7, on Charades videos.

Layout read (lynx `docs/data_preparation/avsd.md`, `scripts/avsd_eval.py`; PAVE
`tools/audio/avsd/convert_annotation_to_training_format.py`, `convert_test_annotation_to_eval_format.py`):

    RELEASE/train_set4DSTC7-AVSD.json, valid_set4DSTC7-AVSD.json     the DSTC7 dialog files
    RELEASE/test: the first found of
        mock_test_set4DSTC10-AVSD_from_DSTC7_singref.json   (the file the paper's authors evaluate on)
        lbl_test_set4DSTC7-AVSD.json                         (DSTC7 test with its reference answers)
        test_set4DSTC7-AVSD.json
      each {"dialogs": [{"image_id": "QRJ1S", "caption": ..., "summary": ...,
                         "dialog": [{"question": "...", "answer": "..."}, ...]}]}
      (a last answer that is a list gives several references)
    MEDIA/Charades_v1_480/<image_id>.mp4   train and val videos (also Charades_v1/, as lynx names it)
    MEDIA/Charades_vu17_test/<image_id>.mp4   test videos
    MEDIA/<image_id>.mp4                    accepted too

Entries: the train split has one entry per dialog turn (id "<image_id>_<turn>", the paper's 79k QA
pairs), each with the earlier turns as `history`; val and test have one entry per dialog, its last
turn (id `image_id`, as DSTC7 references and predictions are keyed). The earlier turns go into the
prompt as "Q: ...\\nA: ..." lines (`entry_prompt`), so training and evaluation see the same text.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlynx.errors import VlynxError
from vlynx.prepare.base import Item, Preparer, need, read_release_json, record_list, release_file

DIALOG_FILES = {
    "train": ["train_set4DSTC7-AVSD.json"],
    "val": ["valid_set4DSTC7-AVSD.json"],
    "test": ["mock_test_set4DSTC10-AVSD_from_DSTC7_singref.json", "lbl_test_set4DSTC7-AVSD.json",
             "test_set4DSTC7-AVSD.json"],
}
VIDEO_FOLDERS = {"train": ("Charades_v1_480", "Charades_v1"), "val": ("Charades_v1_480", "Charades_v1"),
                 "test": ("Charades_vu17_test",)}
UNDISCLOSED = "__UNDISCLOSED__"  # DSTC7's first test release hides the last answer behind this


def turn_text(turn: object, key: str, where: str, path: Path) -> str | list[str]:
    """A turn's question or answer (an answer may be a list of references)."""
    value = turn.get(key) if isinstance(turn, dict) else None
    if value is None:
        raise VlynxError(f"{where} has no '{key}'", path)
    return [str(v) for v in value] if isinstance(value, list) else str(value)


def items(release: Path, split: str, media_root: Path) -> Iterator[Item]:
    path = release_file(release, DIALOG_FILES[split])
    for index, dialog in enumerate(record_list(read_release_json(path), path, "dialogs")):
        image_id = str(need(dialog, "image_id", index, path))
        turns = need(dialog, "dialog", index, path)
        if not isinstance(turns, list) or not turns:
            raise VlynxError(f"dialog {index} ({image_id}) has an empty 'dialog'", path)
        pairs = []
        for number, turn in enumerate(turns):
            where = f"dialog {index} ({image_id}) turn {number}"
            pairs.append((turn_text(turn, "question", where, path), turn_text(turn, "answer", where, path)))
        videos = [media_root / folder / f"{image_id}.mp4" for folder in VIDEO_FOLDERS[split]]
        videos.append(media_root / f"{image_id}.mp4")
        last_only = split != "train"
        for turn in range(len(pairs) - 1 if last_only else 0, len(pairs)):
            question, answer = pairs[turn]
            answers = answer if isinstance(answer, list) else [answer]
            if UNDISCLOSED in answers:
                raise VlynxError(f"dialog {index} ({image_id}) turn {turn} hides its answer ({UNDISCLOSED}); "
                                 "use the test file with reference answers", path)
            history = [[str(q), a if isinstance(a, str) else a[0]] for q, a in pairs[:turn]]
            fields = {"id": image_id if last_only else f"{image_id}_{turn}", "image_id": image_id,
                      "turn": turn, "history": history, "question": str(question), "answers": answers}
            yield Item(fields=fields, media={"video": videos}, answer=answers[0])


PREPARER = Preparer(name="avsd", splits=("train", "val", "test"), items=items,
                    reads="DSTC7 {train,valid,test}_set4DSTC7-AVSD.json dialogs; Charades videos")
