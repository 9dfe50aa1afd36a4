"""Ego-Exo4D demonstrator proficiency (Grauman et al., 2024), as the `egoexo` downloader writes it
(`--parts annotations downscaled_takes/448 --benchmarks proficiency_demonstrator`).

Layout read (PAVE `doc/egoexo4d_dp_data_prep.md` and its exo-feature extraction tool; lynx
`docs/data_preparation/egoexo.md`, `scripts/egoexo_eval.py`):

    RELEASE/annotations/proficiency_demonstrator_{train,val}.json   (also directly in RELEASE/)
        {"annotations": [{"take_uid": "...", "take_name": "...", "scenario_name": "Cooking",
                          "task_name": ..., "proficiency_score": "Late Expert",
                          "video_paths": {"ego": "takes/<take_name>/frame_aligned_videos/aria01_214-1.mp4",
                                          "exo1": "takes/<take_name>/frame_aligned_videos/cam01.mp4", ...}}]}
    MEDIA/takes/<take_name>/frame_aligned_videos/downscaled/448/<file>   the downscaled takes
    MEDIA/<video_paths value>                                           the full-size file, if that is what
                                                                         was downloaded

Views: the first exo camera (by key: exo1, exo2, ...) is the entry's `video` (the base encoder's
third-person view); the ego camera is `egocentric`, the new modality with its own vision adapter
(paper §4.5: the ego view's domain shift is what V-LynX adapts to). The test labels are not
released, so the splits are train and val. The entry has no `question`: `entry_prompt` asks the
benchmark's proficiency question.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from vlynx.errors import VlynxError
from vlynx.prepare.base import Item, Preparer, need, read_release_json, record_list, release_file

DOWNSCALED = ("downscaled", "448")  # the `downscaled_takes/448` part sits beside each take's full-size videos


def view_candidates(media_root: Path, released: str) -> list[Path]:
    """A view's downscaled file, then its full-size file."""
    relative = PurePosixPath(released)
    return [media_root / relative.parent / Path(*DOWNSCALED) / relative.name, media_root / relative]


def exo_key(video_paths: dict[str, str]) -> str | None:
    """The first exo camera's key: exo1 before exo2 ... (by number, then name)."""
    keys = [key for key in video_paths if key.startswith("exo")]
    return min(keys, key=lambda k: (int(k[3:]) if k[3:].isdigit() else 10**6, k), default=None)


def items(release: Path, split: str, media_root: Path) -> Iterator[Item]:
    path = release_file(release, [f"proficiency_demonstrator_{split}.json"], ("annotations", ""))
    for index, record in enumerate(record_list(read_release_json(path), path, "annotations")):
        take_uid = str(need(record, "take_uid", index, path))
        video_paths = need(record, "video_paths", index, path)
        exo = exo_key(video_paths) if isinstance(video_paths, dict) else None
        if exo is None or "ego" not in video_paths:
            raise VlynxError(f"record {index} ({take_uid}) needs 'video_paths' with an 'ego' and an 'exo' view", path)
        label = str(need(record, "proficiency_score", index, path))
        fields = {"id": take_uid, "take_uid": take_uid, "proficiency_score": label}
        for extra in ("take_name", "scenario_name", "task_name"):
            if extra in record:
                fields[extra] = record[extra]
        media = {"video": view_candidates(media_root, video_paths[exo]),
                 "egocentric": view_candidates(media_root, video_paths["ego"])}
        yield Item(fields=fields, media=media, answer=label)


PREPARER = Preparer(
    name="egoexo-proficiency", splits=("train", "val"), items=items,
    reads="annotations/proficiency_demonstrator_{train,val}.json; takes/ (exo1 = video, ego = egocentric)")
