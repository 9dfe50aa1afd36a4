"""LLaVA-Video-178K (Zhang et al., 2024) as released at huggingface.co/datasets/lmms-lab/LLaVA-Video-178K:
training data for the high-frame-rate modality (paper §4.4, following PAVE).

Layout read (PAVE `doc/llava_video_dataset_prep.md`, `tools/enhanced_video/create_llava_video_178k_anno_subset.py`;
lynx `docs/data_preparation/llava_video_178k.md`, `scripts/0.5b/llava_video.sh`):

    RELEASE/<subset>/<subset name>_oe_v0_1_qa_processed.json    open-ended QA, e.g. subset 1_2_m_academic_v0_1
        [{"id": "v_nw8MpBwL508", "data_source": "1_2_m_academic_v0_1",
          "video": "academic_source/activitynet/v_nw8MpBwL508.mp4",
          "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]}]
    MEDIA/<subset>/<video>       the subset's extracted video archives (or MEDIA/<video>)

Split `train` is the paper's subset: the open-ended QA of the 1-2 and 2-3 minute academic and
YouTube subsets, the first two questions of each video (PAVE's selection: 114k QA, 57k videos).
`vlynx eval` does not score this data, so the released conversations are kept as they are; the
entry id is "<id>_<k>" (k-th question of the video), as a video has several questions.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlynx.errors import VlynxError
from vlynx.prepare.base import Item, Preparer, need, read_release_json, record_list, release_file

SUBSETS = ("1_2_m_academic_v0_1", "1_2_m_youtube_v0_1", "2_3_m_academic_v0_1", "2_3_m_youtube_v0_1")
QUESTIONS_PER_VIDEO = 2


def qa_file_name(subset: str) -> str:
    """'1_2_m_academic_v0_1' -> '1_2_m_academic_oe_v0_1_qa_processed.json'."""
    return subset.replace("_v0_1", "_oe_v0_1_qa_processed.json")


def items(release: Path, split: str, media_root: Path) -> Iterator[Item]:
    for subset in SUBSETS:
        path = release_file(release, [qa_file_name(subset)], (subset, ""))
        taken: dict[str, int] = {}
        for index, record in enumerate(record_list(read_release_json(path), path)):
            video_id = str(need(record, "id", index, path))
            if taken.get(video_id, 0) >= QUESTIONS_PER_VIDEO:
                continue
            conversations = need(record, "conversations", index, path)
            if not isinstance(conversations, list) or not conversations:
                raise VlynxError(f"record {index} ({video_id}) has no 'conversations' list", path)
            video = str(need(record, "video", index, path))
            fields = {"id": f"{video_id}_{taken.get(video_id, 0)}", "video_id": video_id,
                      "data_source": record.get("data_source", subset)}
            taken[video_id] = taken.get(video_id, 0) + 1
            yield Item(fields=fields, media={"video": [media_root / subset / video, media_root / video]},
                       conversations=conversations)


PREPARER = Preparer(name="llava-video-178k", splits=("train",), items=items,
                    reads="<subset>/*_oe_v0_1_qa_processed.json of the 1-2 and 2-3 min subsets (2 QA per video)")
