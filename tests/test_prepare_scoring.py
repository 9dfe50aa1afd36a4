"""Prepared entries as `vlynx eval` and `vlynx score` read them: the prompt eval sends is the human
turn prepare wrote, and the references come out as written by hand; AVUT scored from its release file."""
from __future__ import annotations

import json

import pytest

from vlynx.cli import main
from vlynx.metrics.entries import entry_prompt_and_reference
from vlynx.metrics.tasks import get_benchmark
from vlynx.prepare import prepare
from tests.test_prepare import DSTC7_DIALOGS, scene, touch, write_json

AVUT_RECORDS = [
    {"QA_id": 1, "video_id": 1, "task_type": "Audio Content Counting", "question": "How many rings?",
     "option_A": "one", "option_B": "two", "option_C": "three", "option_D": "four", "answer": "B",
     "video_path": "data/v1.mp4"},
    {"QA_id": 2, "video_id": 1, "task_type": "Audio Content Counting", "question": "How many barks?",
     "option_A": "one", "option_B": "two", "option_C": "three", "option_D": "four", "answer": "D",
     "video_path": "data/v1.mp4"},
    {"QA_id": 3, "video_id": 2, "task_type": "Audio Information Extraction", "question": "What is said?",
     "option_A": "hello", "option_B": "goodbye", "option_C": "thanks", "option_D": "sorry", "answer": "A",
     "video_path": "data/v2.mp4"},
]


def eval_view(annotation) -> list[tuple[str, str, dict]]:
    """(benchmark, prompt eval sends, reference) of every entry of a prepared file."""
    views = []
    for entry in json.loads(annotation.read_text()):
        prompt, reference = entry_prompt_and_reference(get_benchmark(entry["benchmark"]), entry)
        assert entry["conversations"][0]["value"] == "<image>\n" + prompt  # training sees what eval sends
        views.append((entry["id"], prompt, reference))
    return views


def test_avut_scored_from_its_release_file_per_task_type(tmp_path, capsys):
    refs = write_json(tmp_path / "AV_Human_data.json", AVUT_RECORDS)
    preds = tmp_path / "answers.jsonl"
    preds.write_text("".join(json.dumps(p) + "\n" for p in [
        {"question_id": "1", "text": "B"}, {"question_id": "2", "text": "I cannot tell"},
        {"question_id": "3", "text": "(A) hello"}]))
    assert main(["score", "--benchmark", "avut", "--predictions", str(preds), "--references", str(refs),
                 "--json", "--no-meteor"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["Accuracy"] == pytest.approx(200 / 3)
    assert result["metrics"]["Accuracy Audio Content Counting"] == pytest.approx(50.0)
    assert result["metrics"]["Accuracy Audio Information Extraction"] == pytest.approx(100.0)
    assert result["unparsed"] == ["2"]


def test_prepared_avut_entries_give_the_release_references(tmp_path):
    write_json(tmp_path / "AV_Human_data.json", AVUT_RECORDS)
    touch(tmp_path / "data" / "v1.mp4")
    touch(tmp_path / "data" / "v2.mp4")
    prepare("avut", tmp_path, "test", tmp_path / "avut_test.json")
    views = eval_view(tmp_path / "avut_test.json")
    assert views[2] == ("3", "What is said?\nA. hello\nB. goodbye\nC. thanks\nD. sorry\n"
                        "Answer with the option's letter from the given choices directly.",
                        {"answer": "A", "choices": ["hello", "goodbye", "thanks", "sorry"],
                         "task_type": "Audio Information Extraction"})


def test_prepared_sqa3d_music_avqa_and_avsd_entries_as_eval_reads_them(tmp_path):
    sqa = tmp_path / "sqa"
    write_json(sqa / "v1_balanced_questions_val_scannetv2.json", {"questions": [
        {"question_id": 5, "scene_id": "scene0001_00", "situation": "I face the desk.", "question": "Can I sit?"}]})
    write_json(sqa / "v1_balanced_sqa_annotations_val_scannetv2.json", {"annotations": [
        {"question_id": 5, "scene_id": "scene0001_00", "answers": [{"answer": "yes", "answer_id": 1}]}]})
    scene(sqa / "scene0001_00")
    prepare("sqa3d", sqa, "val", sqa / "val.json")
    assert eval_view(sqa / "val.json") == [("5", "I face the desk. Can I sit?", {"answer": "yes", "type": "Can"})]

    music = tmp_path / "music"
    write_json(music / "avqa-val.json", [
        {"video_id": "00000001", "question_id": 4, "type": "[\"Visual\", \"Location\"]",
         "question_content": "Where is the <Object>?", "templ_values": "[\"flute\"]", "anser": "right"}])
    touch(music / "MUSIC-AVQA-videos-Real" / "00000001.mp4")
    prepare("music-avqa", music, "val", music / "val.json")
    assert eval_view(music / "val.json") == [
        ("4", "Where is the flute?", {"answer": "right", "group": "Visual", "type": "Location"})]

    avsd = tmp_path / "avsd"
    write_json(avsd / "valid_set4DSTC7-AVSD.json", DSTC7_DIALOGS)
    touch(avsd / "Charades_v1" / "QRJ1S.mp4")
    prepare("avsd", avsd, "val", avsd / "val.json")
    assert eval_view(avsd / "val.json") == [
        ("QRJ1S", "Q: is there a man?\nA: yes, one man\nQ: what does he do?\nA: he cooks\ndoes he talk?",
         {"answers": ["no, he is silent"]})]
