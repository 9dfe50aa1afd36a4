"""`vlynx score` on community-format files written by the tests."""
from __future__ import annotations

import json

import pytest

from vlynx.cli import main


def _write(path, data, jsonl=False):
    path.write_text("".join(json.dumps(d) + "\n" for d in data) if jsonl else json.dumps(data))
    return str(path)


def _score(capsys, *args):
    assert main(["score", *args, "--json", "--no-meteor"]) == 0
    return json.loads(capsys.readouterr().out)


def test_scanqa_llava3d_files(tmp_path, capsys):
    refs = _write(tmp_path / "llava3d_scanqa_val_answer.json", [
        {"question_id": "train-q1", "text": ["brown chair", "chair"]},
        {"question_id": "train-q2", "text": ["on the left"]},
    ])
    # Written in reverse order: pairing is by id, not by position.
    preds = _write(tmp_path / "answers.jsonl", [
        {"question_id": "train-q2", "text": "left"},
        {"question_id": "train-q1", "text": "Brown chair"},
    ], jsonl=True)
    result = _score(capsys, "--benchmark", "scanqa", "--predictions", preds, "--references", refs)
    assert result["metrics"]["EM@1"] == pytest.approx(50.0)
    assert result["metrics"]["EM@1 refined"] == pytest.approx(100.0)
    assert result["missing"] == [] and result["extra"] == []


def test_avsd_dstc7_identical_answers_give_bleu4_100(tmp_path, capsys):
    dialogs = {"dialogs": [
        {"image_id": "VID1", "dialog": [{"question": "hi?", "answer": "hello"},
                                        {"question": "what is he doing?", "answer": "he is opening the fridge door"}]},
        {"image_id": "VID2", "dialog": [{"question": "is there sound?", "answer": "yes there is a dog barking loudly"}]},
    ]}
    refs = _write(tmp_path / "test_set4DSTC7-AVSD.json", dialogs)
    preds = _write(tmp_path / "result.json", dialogs)  # the DSTC7 result format, same answers
    result = _score(capsys, "--benchmark", "avsd", "--predictions", preds, "--references", refs)
    assert result["metrics"]["BLEU-4"] == pytest.approx(100.0, abs=1e-4)
    assert result["metrics"]["ROUGE-L"] == pytest.approx(100.0, abs=1e-4)


def test_music_avqa_official_annotation(tmp_path, capsys):
    refs = _write(tmp_path / "avqa-test.json", [
        {"video_id": "00000001", "question_id": 11, "type": "[\"Audio\", \"Counting\"]",
         "question_content": "How many instruments are sounding?", "anser": "two"},
        {"video_id": "00000002", "question_id": 12, "type": "[\"Visual\", \"Location\"]",
         "question_content": "Where is the piano?", "anser": "left"},
    ])
    preds = _write(tmp_path / "preds.jsonl", [{"question_id": 11, "text": "Two"}, {"question_id": 99, "text": "x"}],
                   jsonl=True)
    result = _score(capsys, "--benchmark", "music-avqa", "--predictions", preds, "--references", refs)
    assert result["metrics"] == {"Audio Counting": 100.0, "Audio": 100.0, "Visual Location": 0.0,
                                 "Visual": 0.0, "Overall": 50.0}
    assert result["missing"] == ["12"] and result["extra"] == ["99"]


def test_sqa3d_type_codes_and_markdown(tmp_path, capsys):
    refs = _write(tmp_path / "llava3d_sqa3d_test_answer.json", [
        {"question_id": 1, "text": "yes", "type": 1},
        {"question_id": 2, "text": "two", "type": 2},
    ])
    preds = _write(tmp_path / "p.jsonl", [{"question_id": 1, "text": "Yes."}, {"question_id": 2, "text": "2"}],
                   jsonl=True)
    assert main(["score", "--benchmark", "sqa3d", "--predictions", preds, "--references", refs]) == 0
    out = capsys.readouterr().out
    assert "| EM@1 | 100.00 | 2 |" in out and "| EM@1 Is | 100.00 | 1 |" in out


def test_user_errors_exit_2(tmp_path, capsys):
    refs = _write(tmp_path / "refs.json", [{"question_id": 1, "text": ["a"]}, {"question_id": 1, "text": ["b"]}])
    preds = _write(tmp_path / "p.jsonl", [{"question_id": 1, "text": "a"}], jsonl=True)
    assert main(["score", "--benchmark", "scanqa", "--predictions", preds, "--references", refs]) == 2
    assert "more than once" in capsys.readouterr().err
    assert main(["score", "--benchmark", "avqa", "--predictions", preds, "--references", refs]) == 2
    assert "refs.json: record 0 has no choices" in capsys.readouterr().err
    good = _write(tmp_path / "good.json", [{"question_id": 1, "text": ["a"]}])
    assert main(["score", "--benchmark", "scanqa", "--predictions", str(tmp_path / "nope.jsonl"),
                 "--references", good]) == 2
    assert "nope.jsonl: file not found" in capsys.readouterr().err
