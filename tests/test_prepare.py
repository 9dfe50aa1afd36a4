"""`vlynx prepare`: release files written by the tests in each benchmark's own layout (the module
docstrings of `vlynx.prepare`), tiny media, and the prepared entries checked field by field against
entries written out by hand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlynx.cli import main
from vlynx.errors import VlynxError
from vlynx.metrics.tasks import PROFICIENCY_QUESTION
from vlynx.prepare import PREPARERS, prepare

MC = "Answer with the option's letter from the given choices directly."


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def touch(path: Path) -> Path:
    """An empty but existing media file: only its existence matters here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def scene(path: Path) -> Path:
    """A ScanNet-like scene folder with a couple of files."""
    for name in ("color/0.jpg", "depth/0.png", "pose/0.txt"):
        touch(path / name)
    return path


def run(release: Path, *args: str, out: Path | None = None) -> list[dict]:
    out = out or release / "prepared.json"
    assert main(["prepare", *args, "--release", str(release), "--out", str(out)]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def human(prompt: str) -> dict:
    return {"from": "human", "value": "<image>\n" + prompt}


def gpt(answer: str) -> dict:
    return {"from": "gpt", "value": answer}


def test_music_avqa_templates_filled_types_and_real_or_synthetic_folders(tmp_path):
    write_json(tmp_path / "avqa-test.json", [
        {"video_id": "00000272", "question_id": 7, "type": "[\"Audio-Visual\", \"Location\"]",
         "question_content": "Where is the <FL> sounding <Object> on the <LR>?",
         "templ_values": "[\"first\", \"cello\", \"left\"]", "question_deleted": 0, "anser": "left"},
        {"video_id": "sa101", "question_id": 9, "type": "[\"Audio\", \"Counting\"]",
         "question_content": "How many instruments are sounding?", "templ_values": "[]", "anser": "two"},
    ])
    touch(tmp_path / "MUSIC-AVQA-videos-Real" / "00000272.mp4")
    touch(tmp_path / "MUCIS-AVQA-videos-Synthetic" / "sa101.mp4")
    entries = run(tmp_path, "music-avqa", "--split", "test")
    assert entries == [
        {"id": "7", "video": "MUSIC-AVQA-videos-Real/00000272.mp4",
         "conversations": [human("Where is the first sounding cello on the left?"), gpt("left")],
         "benchmark": "music-avqa", "question_id": 7, "video_id": "00000272", "type": ["Audio-Visual", "Location"],
         "question_content": "Where is the <FL> sounding <Object> on the <LR>?",
         "templ_values": ["first", "cello", "left"], "question": "Where is the first sounding cello on the left?",
         "anser": "left"},
        {"id": "9", "video": "MUCIS-AVQA-videos-Synthetic/sa101.mp4",
         "conversations": [human("How many instruments are sounding?"), gpt("two")],
         "benchmark": "music-avqa", "question_id": 9, "video_id": "sa101", "type": ["Audio", "Counting"],
         "question_content": "How many instruments are sounding?", "templ_values": [],
         "question": "How many instruments are sounding?", "anser": "two"},
    ]


def test_music_avqa_template_value_count_mismatch_names_the_record(tmp_path):
    write_json(tmp_path / "data" / "json" / "avqa-train.json", [
        {"video_id": "1", "question_id": 3, "type": "[\"Visual\", \"Counting\"]",
         "question_content": "Is the <Object> louder than the <Object>?", "templ_values": "[\"cello\"]",
         "anser": "yes"}])
    with pytest.raises(VlynxError, match="question_id 3.*placeholders"):
        prepare("music-avqa", tmp_path, "train", tmp_path / "out.json")


def test_avqa_options_letter_answer_and_video_name_mapping(tmp_path):
    release = tmp_path / "avqa"
    write_json(release / "val_qa.json", [
        {"id": 11, "video_name": "-HG3Omg_89c_000030", "video_id": 5, "question_text": "What is making the sound?",
         "multi_choice": ["cello", "dog", "car", "rain"], "answer": 1, "question_type": "Which"}])
    write_json(release / "avqa_from_vid_to_video_name.json", {"-HG3Omg_89c_000030": "-HG3Omg_89c_30.mp4"})
    video = touch(tmp_path / "vggsound" / "videos" / "-HG3Omg_89c_30.mp4")
    out = tmp_path / "prepared" / "avqa_val.json"  # media outside the output folder: absolute paths
    entries = run(release, "avqa", "--split", "val", "--media-root", str(tmp_path / "vggsound"), out=out)
    assert entries == [{
        "id": "11", "video": str(video.absolute()),
        "conversations": [human(f"What is making the sound?\nA. cello\nB. dog\nC. car\nD. rain\n{MC}"), gpt("B")],
        "benchmark": "avqa", "video_name": "-HG3Omg_89c_000030", "question": "What is making the sound?",
        "multi_choice": ["cello", "dog", "car", "rain"], "answer": 1, "question_type": "Which"}]


DSTC7_DIALOGS = {"dialogs": [{"image_id": "QRJ1S", "summary": "a man cooks", "dialog": [
    {"question": "is there a man?", "answer": "yes, one man"},
    {"question": "what does he do?", "answer": "he cooks"},
    {"question": "does he talk?", "answer": "no, he is silent"}]}]}


def test_avsd_train_has_one_entry_per_turn_with_earlier_turns_as_history(tmp_path):
    write_json(tmp_path / "train_set4DSTC7-AVSD.json", DSTC7_DIALOGS)
    touch(tmp_path / "Charades_v1_480" / "QRJ1S.mp4")
    entries = run(tmp_path, "avsd", "--split", "train")
    assert [e["id"] for e in entries] == ["QRJ1S_0", "QRJ1S_1", "QRJ1S_2"]
    assert entries[2] == {
        "id": "QRJ1S_2", "video": "Charades_v1_480/QRJ1S.mp4",
        "conversations": [human("Q: is there a man?\nA: yes, one man\nQ: what does he do?\nA: he cooks\n"
                                "does he talk?"), gpt("no, he is silent")],
        "benchmark": "avsd", "image_id": "QRJ1S", "turn": 2,
        "history": [["is there a man?", "yes, one man"], ["what does he do?", "he cooks"]],
        "question": "does he talk?", "answers": ["no, he is silent"]}
    assert entries[0]["conversations"] == [human("is there a man?"), gpt("yes, one man")]
    assert entries[0]["history"] == []


def test_avsd_test_is_the_last_turn_with_all_its_references(tmp_path):
    dialogs = json.loads(json.dumps(DSTC7_DIALOGS))
    dialogs["dialogs"][0]["dialog"][-1]["answer"] = ["no, he is silent", "he says nothing"]
    write_json(tmp_path / "lbl_test_set4DSTC7-AVSD.json", dialogs)
    touch(tmp_path / "Charades_vu17_test" / "QRJ1S.mp4")
    (entry,) = run(tmp_path, "avsd", "--split", "test")
    assert entry["id"] == "QRJ1S" and entry["turn"] == 2 and entry["video"] == "Charades_vu17_test/QRJ1S.mp4"
    assert entry["answers"] == ["no, he is silent", "he says nothing"]
    assert entry["conversations"][-1] == gpt("no, he is silent")


def test_avsd_undisclosed_test_answers_are_an_error(tmp_path):
    dialogs = json.loads(json.dumps(DSTC7_DIALOGS))
    dialogs["dialogs"][0]["dialog"][-1]["answer"] = "__UNDISCLOSED__"
    write_json(tmp_path / "test_set4DSTC7-AVSD.json", dialogs)
    touch(tmp_path / "Charades_vu17_test" / "QRJ1S.mp4")
    with pytest.raises(VlynxError, match="UNDISCLOSED"):
        prepare("avsd", tmp_path, "test", tmp_path / "out.json")


def test_scanqa_scene_folders_answers_and_object_names(tmp_path):
    release, scans = tmp_path / "ScanQA", tmp_path / "frames_square"
    write_json(release / "qa" / "ScanQA_v1.0_val.json", [
        {"question_id": "val-scene0011-0", "scene_id": "scene0011_00", "question": "What color is the chair?",
         "answers": ["brown", "dark brown"], "object_ids": [3], "object_names": ["chair"]}])
    write_json(release / "qa" / "ScanQA_v1.0_test_wo_obj.json", [
        {"question_id": "test-scene0707-1", "scene_id": "scene0707_00", "question": "Where is the sink?"}])
    scene(scans / "scene0011_00")
    scene(scans / "scene0707_00")
    entries = run(release, "scanqa", "--split", "val", "--media-root", str(scans), out=tmp_path / "val.json")
    assert entries == [{
        "id": "val-scene0011-0", "video": "frames_square/scene0011_00",
        "conversations": [human("What color is the chair?"), gpt("brown")],
        "benchmark": "scanqa", "question_id": "val-scene0011-0", "scene_id": "scene0011_00",
        "question": "What color is the chair?", "answers": ["brown", "dark brown"], "object_names": ["chair"]}]
    (test_entry,) = run(release, "scanqa", "--split", "test_wo_obj", "--media-root", str(scans),
                        out=tmp_path / "test.json")
    assert test_entry["conversations"] == [human("Where is the sink?")] and "answers" not in test_entry


def test_sqa3d_situation_in_the_prompt_type_and_answer_strings(tmp_path):
    balanced = tmp_path / "sqa_task" / "balanced"
    write_json(balanced / "v1_balanced_questions_test_scannetv2.json", {"questions": [
        {"question_id": 220602000002, "scene_id": "scene0050_00", "alternative_situation": ["I face the piano."],
         "situation": "I am standing by the ottoman facing a couple of toolboxes.",
         "question": "Which instrument in front of me is ebony and ivory?"},
        {"question_id": 220602000003, "scene_id": "scene0050_00", "alternative_situation": [],
         "situation": "I am sitting on the bed.", "question": "Isn't the door on my left?"}]})
    write_json(balanced / "v1_balanced_sqa_annotations_test_scannetv2.json", {"annotations": [
        {"question_id": 220602000003, "scene_id": "scene0050_00",
         "answers": [{"answer": "yes", "answer_confidence": "yes", "answer_id": 1}]},
        {"question_id": 220602000002, "scene_id": "scene0050_00",
         "answers": [{"answer": "piano", "answer_confidence": "yes", "answer_id": 1}]}]})
    scene(tmp_path / "scans" / "scene0050_00")
    # "sqa_task/../scans" lies under the output folder: the path is written relative, without ".."
    entries = run(tmp_path, "sqa3d", "--split", "test", "--media-root", str(tmp_path / "sqa_task" / ".." / "scans"))
    assert entries[0] == {
        "id": "220602000002", "video": "scans/scene0050_00",
        "conversations": [human("I am standing by the ottoman facing a couple of toolboxes. "
                                "Which instrument in front of me is ebony and ivory?"), gpt("piano")],
        "benchmark": "sqa3d", "question_id": 220602000002, "scene_id": "scene0050_00",
        "situation": "I am standing by the ottoman facing a couple of toolboxes.",
        "question": "Which instrument in front of me is ebony and ivory?", "answers": ["piano"], "type": "Which"}
    assert entries[1]["type"] == "Is"  # SQA3D's evaluator: a prefix test, so "Isn't" is an "Is" question
    assert entries[1]["conversations"][0] == human("I am sitting on the bed. Isn't the door on my left?")


def test_sqa3d_question_without_annotation_is_an_error(tmp_path):
    write_json(tmp_path / "v1_balanced_questions_val_scannetv2.json", {"questions": [
        {"question_id": 1, "scene_id": "scene0000_00", "situation": "I sit.", "question": "What is here?"}]})
    write_json(tmp_path / "v1_balanced_sqa_annotations_val_scannetv2.json", {"annotations": []})
    with pytest.raises(VlynxError, match="only one of"):
        prepare("sqa3d", tmp_path, "val", tmp_path / "out.json")


def test_egoexo_exo_view_is_the_video_ego_view_the_egocentric_modality(tmp_path):
    take = "takes/cmu_bike01_2/frame_aligned_videos"
    write_json(tmp_path / "annotations" / "proficiency_demonstrator_val.json", {"annotations": [
        {"take_uid": "a1b2", "take_name": "cmu_bike01_2", "scenario_name": "Bike Repair", "task_name": "Fix a flat",
         "proficiency_score": "Intermediate Expert",
         "video_paths": {"ego": f"{take}/aria01_214-1.mp4", "exo2": f"{take}/cam02.mp4",
                         "exo1": f"{take}/cam01.mp4"}}]})
    touch(tmp_path / take / "downscaled" / "448" / "cam01.mp4")  # downscaled exo view
    touch(tmp_path / take / "aria01_214-1.mp4")  # full-size ego view only
    (entry,) = run(tmp_path, "egoexo-proficiency", "--split", "val")
    assert entry == {
        "id": "a1b2", "video": f"{take}/downscaled/448/cam01.mp4", "egocentric": f"{take}/aria01_214-1.mp4",
        "conversations": [human(PROFICIENCY_QUESTION), gpt("Intermediate Expert")],
        "benchmark": "egoexo-proficiency", "take_uid": "a1b2", "proficiency_score": "Intermediate Expert",
        "take_name": "cmu_bike01_2", "scenario_name": "Bike Repair", "task_name": "Fix a flat"}


def test_llava_video_keeps_released_conversations_two_questions_per_video(tmp_path):
    conversation = [{"from": "human", "value": "<image>\nWhat happens first?"}, {"from": "gpt", "value": "A dog runs."}]
    for subset in ("1_2_m_academic_v0_1", "1_2_m_youtube_v0_1", "2_3_m_academic_v0_1", "2_3_m_youtube_v0_1"):
        name = subset.replace("_v0_1", "")
        video = f"{name}_source/{name}_vid.mp4"
        write_json(tmp_path / subset / f"{name}_oe_v0_1_qa_processed.json", [
            {"id": f"{name}_vid", "data_source": subset, "video": video, "conversations": conversation}] * 3)
        touch(tmp_path / subset / video)
    entries = run(tmp_path, "llava-video-178k", "--split", "train")
    assert len(entries) == 8
    assert entries[0] == {
        "id": "1_2_m_academic_vid_0", "video": "1_2_m_academic_v0_1/1_2_m_academic_source/1_2_m_academic_vid.mp4",
        "conversations": conversation, "benchmark": "llava-video-178k", "video_id": "1_2_m_academic_vid",
        "data_source": "1_2_m_academic_v0_1"}
    assert [e["id"] for e in entries[:3]] == ["1_2_m_academic_vid_0", "1_2_m_academic_vid_1", "1_2_m_youtube_vid_0"]


def test_avut_options_letter_answer_and_top_level_videos(tmp_path):
    write_json(tmp_path / "AV_Human_data.json", [
        {"QA_id": 12, "video_id": 3, "url": "https://www.youtube.com/watch?v=8EyF8gxZUt4", "video_type": "vlog",
         "task_type": "Audio Content Counting", "question": "How many times does the bell ring?",
         "option_A": "once", "option_B": "twice", "option_C": "three times", "option_D": "never",
         "answer": "C", "video_path": "data/8EyF8gxZUt4.mp4"}])
    touch(tmp_path / "8EyF8gxZUt4.mp4")  # the dataset repository keeps its videos at the top level
    (entry,) = run(tmp_path, "avut", "--split", "test")
    assert entry == {
        "id": "12", "video": "8EyF8gxZUt4.mp4",
        "conversations": [human("How many times does the bell ring?\nA. once\nB. twice\nC. three times\nD. never\n"
                                + MC), gpt("C")],
        "benchmark": "avut", "QA_id": 12, "video_id": 3, "video_type": "vlog", "task_type": "Audio Content Counting",
        "question": "How many times does the bell ring?", "option_A": "once", "option_B": "twice",
        "option_C": "three times", "option_D": "never", "answer": "C"}


def scanqa_release(tmp_path: Path, scenes: list[str], present: list[str]) -> Path:
    write_json(tmp_path / "ScanQA_v1.0_train.json", [
        {"question_id": f"q{i}", "scene_id": s, "question": "What is it?", "answers": ["a chair"]}
        for i, s in enumerate(scenes)])
    for name in present:
        scene(tmp_path / name)
    return tmp_path


def test_missing_media_are_listed_with_their_ids_and_fail(tmp_path, capsys):
    release = scanqa_release(tmp_path, ["scene0000_00", "scene0001_00", "scene0001_00"], ["scene0000_00"])
    assert main(["prepare", "scanqa", "--release", str(release), "--split", "train", "--out",
                 str(tmp_path / "out.json")]) == 2
    error = capsys.readouterr().err
    assert f"1 media files named by 2 entries do not exist: {release / 'scene0001_00'} (ids q1, q2)" in error
    assert "--allow-missing" in error and not (tmp_path / "out.json").exists()


def test_allow_missing_drops_and_counts_those_entries(tmp_path, capsys):
    release = scanqa_release(tmp_path, ["scene0000_00", "scene0001_00", "scene0001_00"], ["scene0000_00"])
    entries = run(release, "scanqa", "--split", "train", "--allow-missing")
    assert [e["id"] for e in entries] == ["q0"]
    assert "2 entries dropped: 1 media files missing" in capsys.readouterr().out


def test_existing_output_needs_overwrite(tmp_path):
    release = scanqa_release(tmp_path, ["scene0000_00"], ["scene0000_00"])
    out = write_json(tmp_path / "out.json", ["keep me"])
    with pytest.raises(VlynxError, match="--overwrite"):
        prepare("scanqa", release, "train", out)
    assert json.loads(out.read_text()) == ["keep me"]
    prepare("scanqa", release, "train", out, overwrite=True)
    assert json.loads(out.read_text())[0]["id"] == "q0"


def test_duplicate_ids_are_an_error(tmp_path):
    write_json(tmp_path / "ScanQA_v1.0_train.json", [
        {"question_id": "q0", "scene_id": "scene0000_00", "question": "What?", "answers": ["x"]}] * 2)
    scene(tmp_path / "scene0000_00")
    with pytest.raises(VlynxError, match="1 ids appear more than once: q0"):
        prepare("scanqa", tmp_path, "train", tmp_path / "out.json")


def test_unknown_split_and_missing_release_file_are_clear_errors(tmp_path, capsys):
    assert main(["prepare", "avqa", "--release", str(tmp_path), "--split", "test",
                 "--out", str(tmp_path / "o.json")]) == 2
    assert "avqa has no split 'test'; choose one of train, val" in capsys.readouterr().err
    with pytest.raises(VlynxError, match=r"release file not found \(looked for train_qa.json\)"):
        prepare("avqa", tmp_path, "train", tmp_path / "o.json")


def test_help_lists_every_benchmark_and_its_splits(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = capsys.readouterr().out
    for name in ("music-avqa", "avqa", "avsd", "scanqa", "sqa3d", "egoexo-proficiency", "llava-video-178k", "avut"):
        assert f"  {name} " in text
    assert set(PREPARERS) == {"music-avqa", "avqa", "avsd", "scanqa", "sqa3d", "egoexo-proficiency",
                              "llava-video-178k", "avut"}
    assert "test_w_obj, test_wo_obj" in text
