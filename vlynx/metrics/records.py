"""Fields of community-format records, and the predictions files every benchmark is scored from."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlynx.errors import VlynxError
from vlynx.inputs import as_records, read_json_records

PREDICTION_ID_KEYS = ("question_id", "id", "image_id", "take_uid")
PREDICTION_TEXT_KEYS = ("text", "pred", "prediction", "caption", "response")


def first_field(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """The value of the first of `keys` that `record` has (not null), else None."""
    return next((record[key] for key in keys if record.get(key) is not None), None)


def require_field(record: dict[str, Any], keys: tuple[str, ...], what: str) -> Any:
    """`first_field`, or a ValueError saying what was looked for (the caller names the record and file)."""
    value = first_field(record, keys)
    if value is None:
        raise ValueError(f"has no {what} (looked for {', '.join(keys)})")
    return value


def add_unique(table: dict[str, Any], item_id: Any, value: Any, path: str | Path) -> None:
    """table[str(item_id)] = value; a second record with the same id is an error naming the file."""
    item_id = str(item_id)
    if item_id in table:
        raise VlynxError(f"id {item_id!r} appears more than once; ids must be unique", path)
    table[item_id] = value


def is_dstc7(data: Any) -> bool:
    """Whether a JSON document is in the DSTC7-AVSD dialog format `{"dialogs": [...]}`."""
    return isinstance(data, dict) and isinstance(data.get("dialogs"), list)


def dstc7_last_answers(path: str | Path, data: dict[str, Any]) -> dict[str, list[str]]:
    """image_id -> the last turn's answer(s) of every dialog of a DSTC7-AVSD document."""
    answers: dict[str, list[str]] = {}
    for index, dialog in enumerate(data["dialogs"]):
        turns = dialog.get("dialog") if isinstance(dialog, dict) else None
        if not turns or "image_id" not in dialog:
            raise VlynxError(f"dialog {index} needs an 'image_id' and a non-empty 'dialog' list", path)
        last = turns[-1].get("answer")
        if last is None:
            raise VlynxError(f"dialog {index}: the last turn has no 'answer'", path)
        add_unique(answers, dialog["image_id"], [last] if isinstance(last, str) else [str(a) for a in last], path)
    return answers


def read_predictions(path: str | Path, video_id_keys: tuple[str, ...] = ()) -> dict[str, str]:
    """id -> generated text from a predictions file.

    Reads JSONL or a JSON list of objects with an id (`question_id`, `id`, `image_id` or
    `take_uid`) and a text (`text`, `pred`, `prediction`, `caption` or `response`) — the
    LLaVA-3D/LEO `{"question_id", "text"}` lines and PAVE's `{"image_id", "caption"}` lists —
    or a DSTC7-AVSD result file `{"dialogs": [{"image_id", "dialog": [..., {"answer"}]}]}`
    (the last turn's answer). Duplicate ids are an error. A record whose only id is one of
    `video_id_keys` (for AVQA and MUSIC-AVQA, PAVE's `image_id` and the authors' `video_id` name a
    video that several questions share) is refused: it cannot be paired with a question.
    """
    data = read_json_records(path)
    if is_dstc7(data):
        return {item_id: answers[0] for item_id, answers in dstc7_last_answers(path, data).items()}
    predictions: dict[str, str] = {}
    for index, record in enumerate(as_records(data, path, "prediction")):
        if first_field(record, ("question_id", "id")) is None:
            named_by = [key for key in video_id_keys if key in record]
            if named_by:
                raise VlynxError(f"record {index} is named by '{named_by[0]}', a video id that several questions "
                                 "share, not by a question id: this file (e.g. PAVE's or the authors' MUSIC-AVQA "
                                 "eval output) cannot be paired with questions; write {question_id, text} per "
                                 "question (as `vlynx eval` does)", path)
        try:
            item_id = require_field(record, PREDICTION_ID_KEYS, "id")
            text = require_field(record, PREDICTION_TEXT_KEYS, "prediction text")
        except ValueError as error:
            raise VlynxError(f"record {index} {error}", path) from error
        add_unique(predictions, item_id, str(text), path)
    return predictions
