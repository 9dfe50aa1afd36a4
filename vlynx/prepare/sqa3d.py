"""SQA3D (Ma et al., 2023) as released at sqa3d.github.io, on ScanNet scenes.

Layout read (PAVE `tools/3d/sqa3d/create_sqa3d_training_annotations.py`,
`create_sqa3d_eval_annotations.py`; lynx `docs/data_preparation/sqa3d.md`; the release zip):

    RELEASE/sqa_task/balanced/v1_balanced_questions_{train,val,test}_scannetv2.json
        {"questions": [{"question_id": 220602000002, "scene_id": "scene0050_00",
                        "situation": "I am standing by the ottoman ...", "alternative_situation": [...],
                        "question": "What instrument in front of me is ebony and ivory?"}], ...}
    RELEASE/sqa_task/balanced/v1_balanced_sqa_annotations_{train,val,test}_scannetv2.json
        {"annotations": [{"question_id": 220602000002, "scene_id": "scene0050_00",
                          "answers": [{"answer": "piano", "answer_confidence": "yes", "answer_id": 1}],
                          ...}]}
      (both files are also found directly in RELEASE/)
    MEDIA/<scene_id>/                a ScanNet scene folder, the entry's `video` (see scanqa.py)

Questions and annotations are joined by `question_id`; a question without an annotation (or the
reverse) is an error. `type` is the question type as SQA3D's evaluator decides it from the question
(`vlynx.metrics.tasks.sqa3d_question_type`). The prompt is situation + " " + question.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlynx.errors import VlynxError
from vlynx.prepare.base import Item, Preparer, need, read_release_json, record_list, release_file

SUBFOLDERS = ("sqa_task/balanced", "")


def items(release: Path, split: str, media_root: Path) -> Iterator[Item]:
    from vlynx.metrics.tasks import sqa3d_question_type

    questions_path = release_file(release, [f"v1_balanced_questions_{split}_scannetv2.json"], SUBFOLDERS)
    annotations_path = release_file(release, [f"v1_balanced_sqa_annotations_{split}_scannetv2.json"], SUBFOLDERS)
    questions = record_list(read_release_json(questions_path), questions_path, "questions")
    annotations = {str(need(record, "question_id", index, annotations_path)): (index, record) for index, record
                   in enumerate(record_list(read_release_json(annotations_path), annotations_path, "annotations"))}
    unmatched = {str(q.get("question_id")) for q in questions} ^ set(annotations)
    if unmatched:
        raise VlynxError(f"{len(unmatched)} question ids are in only one of {questions_path.name} and "
                         f"{annotations_path.name}, e.g. {', '.join(sorted(unmatched)[:3])}", questions_path.parent)
    for index, record in enumerate(questions):
        question_id = str(need(record, "question_id", index, questions_path))
        annotation_index, annotation = annotations[question_id]
        released = need(annotation, "answers", annotation_index, annotations_path)
        answers = [str(a["answer"]) if isinstance(a, dict) else str(a) for a in released]
        if not answers:
            raise VlynxError(f"record {annotation_index} ({question_id}) has no answers", annotations_path)
        question = str(need(record, "question", index, questions_path))
        scene_id = str(record.get("scene_id") or need(annotation, "scene_id", annotation_index, annotations_path))
        fields = {"id": question_id, "question_id": record["question_id"], "scene_id": scene_id,
                  "situation": str(need(record, "situation", index, questions_path)), "question": question,
                  "answers": answers, "type": sqa3d_question_type(question)}
        yield Item(fields=fields, media={"video": [media_root / scene_id]}, answer=answers[0])


PREPARER = Preparer(name="sqa3d", splits=("train", "val", "test"), items=items,
                    reads="v1_balanced_questions_* + v1_balanced_sqa_annotations_*; ScanNet scene folders")
