"""`vlynx eval` and `vlynx score` on prepared entries (the `vlynx prepare` contract) and on the
anchors' prediction files; the forced-choice protocol with a fake scorer. Expected prompts and
numbers are written out by hand."""
from __future__ import annotations

import json

import pytest

from vlynx.cli import main
from vlynx.errors import VlynxError
from vlynx.evaluate import build_items, evaluate
from vlynx.metrics.tasks import MULTIPLE_CHOICE_INSTRUCTION, PROFICIENCY_QUESTION, score_files


class FakeModel:
    """Answers from a table keyed by a word of the question; records every request it sees."""

    def __init__(self, answers):
        self.answers, self.requests = answers, []

    def generate(self, requests):
        self.requests.extend(requests)
        return [next(a for key, a in self.answers.items() if key in r["question"]) for r in requests]


def _write(path, entries):
    (path.parent / "v.mp4").write_bytes(b"")
    path.write_text(json.dumps(entries))
    return path


def _turns(prompt, answer):
    return [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": answer}]


def test_sqa3d_prompt_is_situation_then_question_and_type_comes_from_the_entry(tmp_path):
    data = _write(tmp_path / "sqa.json", [
        # Typed "What" although the question starts with "Is": the entry's type decides.
        {"id": "s1", "video": "v.mp4", "situation": "I face the bed.", "question": "Is the door open?",
         "answers": ["yes"], "type": "What", "conversations": _turns("ignored", "yes")},
        {"id": "s2", "video": "v.mp4", "situation": "I sit down.", "question": "How many chairs?",
         "answers": ["two"], "type": 2},
    ])
    model = FakeModel({"door": "Yes.", "chairs": "three"})
    report = evaluate(model, "sqa3d", data, tmp_path / "out")
    assert [r["question"] for r in model.requests] == ["I face the bed. Is the door open?",
                                                       "I sit down. How many chairs?"]
    assert report.metrics["EM@1 What"] == 100.0 and report.metrics["EM@1 How"] == 0.0
    assert "EM@1 Is" not in report.metrics


def test_sqa3d_answer_objects_are_an_error_naming_the_entry(tmp_path):
    data = _write(tmp_path / "sqa.json", [
        {"id": "s1", "video": "v.mp4", "situation": "I face the bed.", "question": "Is the door open?",
         "answers": [{"answer": "yes", "answer_id": 1}], "type": 1}])
    with pytest.raises(VlynxError, match=r"entry 0 \(s1\) has an answer that is not a string.*vlynx prepare sqa3d"):
        build_items("sqa3d", data)


def test_music_avqa_prompts_are_filled_and_unfilled_ones_refused(tmp_path):
    raw = _write(tmp_path / "music.json", [
        {"question_id": 11, "video": "v.mp4", "type": "[\"Audio\", \"Comparative\"]",
         "question_content": "Is the <Object> louder than the <Object>?", "templ_values": "[\"cello\", \"piano\"]",
         "anser": "yes"}])
    model = FakeModel({"louder": "yes"})
    report = evaluate(model, "music-avqa", raw, tmp_path / "out")
    assert model.requests[0]["question"] == "Is the cello louder than the piano?"
    assert report.metrics["Overall"] == 100.0
    handmade = _write(tmp_path / "handmade.json", [
        {"id": 12, "video": "v.mp4", "type": ["Visual", "Location"],
         "conversations": _turns("Where is the <Object>?", "left")}])
    with pytest.raises(VlynxError, match=r"entry 0 \(12\) has unfilled template placeholder\(s\) <Object>"):
        build_items("music-avqa", handmade)


def test_egoexo_asks_the_proficiency_question_when_the_entry_has_none(tmp_path):
    data = _write(tmp_path / "takes.json", [
        {"id": "t1", "take_uid": "t1", "video": "v.mp4", "proficiency_score": "Novice"},
        {"id": "t2", "video": "v.mp4", "proficiency_score": "Late Expert",
         "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "Late Expert"}]},
        {"id": "t3", "video": "v.mp4", "proficiency_score": "Novice", "question": "How skilled is she?"},
    ])
    questions = [item.request["question"] for item in build_items("egoexo-proficiency", data)]
    assert questions == [PROFICIENCY_QUESTION, PROFICIENCY_QUESTION, "How skilled is she?"]


def test_prepared_avqa_and_avsd_prompts(tmp_path):
    avqa = _write(tmp_path / "avqa.json", [
        {"id": "7", "video": "v.mp4", "question": "What is making the sound?",
         "multi_choice": ["dog", "car", "bell", "bird"], "answer": 2,
         "conversations": _turns("What is making the sound?", "C")}])
    [item] = build_items("avqa", avqa)
    assert item.request["question"] == ("What is making the sound?\nA. dog\nB. car\nC. bell\nD. bird\n"
                                        + MULTIPLE_CHOICE_INSTRUCTION)
    assert item.reference == {"answer": "C", "choices": ["dog", "car", "bell", "bird"]}
    avsd = _write(tmp_path / "avsd.json", [
        {"id": "V1_1", "image_id": "V1", "turn": 1, "video": "v.mp4", "history": [["is it a man?", "yes"]],
         "question": "what does he do?", "answers": ["he sits"], "conversations": _turns("x", "he sits")}])
    [item] = build_items("avsd", avsd)
    assert item.request["question"] == "Q: is it a man?\nA: yes\nwhat does he do?"
    assert item.reference == {"answers": ["he sits"]}


def test_score_accepts_the_prepared_file_eval_reads(tmp_path, capsys):
    data = _write(tmp_path / "music.json", [
        {"id": "11", "question_id": 11, "video_id": "v1", "video": "v.mp4", "type": ["Audio", "Counting"],
         "question": "How many instruments are sounding?", "anser": "two",
         "conversations": _turns("How many instruments are sounding?", "two")},
        {"id": "12", "question_id": 12, "video_id": "v1", "video": "v.mp4", "type": ["Visual", "Location"],
         "question": "Where is the cello?", "anser": "left", "conversations": _turns("Where is the cello?", "left")},
    ])
    report = evaluate(FakeModel({"How many": "two", "cello": "right"}), "music-avqa", data, tmp_path / "out")
    assert main(["score", "--benchmark", "music-avqa", "--predictions", str(tmp_path / "out" / "predictions.jsonl"),
                 "--references", str(data), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["metrics"] == report.metrics == {"Audio Counting": 100.0, "Audio": 100.0,
                                                   "Visual Location": 0.0, "Visual": 0.0, "Overall": 50.0}


def test_anchor_predictions_by_video_id_are_refused_for_question_benchmarks(tmp_path):
    refs = tmp_path / "avqa-test.json"
    refs.write_text(json.dumps([
        {"question_id": 11, "video_id": "v1", "type": "[\"Audio\", \"Counting\"]", "anser": "two"},
        {"question_id": 12, "video_id": "v1", "type": "[\"Visual\", \"Location\"]", "anser": "left"}]))
    pave = tmp_path / "pave.json"  # eval_pave_music_avqa.py: one record per question, named by its video
    pave.write_text(json.dumps([{"image_id": "v1", "pred": "two", "question": "q", "answer": "two"},
                                {"image_id": "v1", "pred": "left", "question": "q", "answer": "left"}]))
    with pytest.raises(VlynxError, match=r"pave.json: record 0 is named by 'image_id', a video id .* cannot be paired"):
        score_files("music-avqa", pave, refs)
    authors = tmp_path / "authors.json"  # the authors' music_avqa_eval.py
    authors.write_text(json.dumps([{"index": 0, "video_id": "v1", "pred": "two", "answer": "two"}]))
    with pytest.raises(VlynxError, match=r"named by 'video_id', a video id"):
        score_files("music-avqa", authors, refs)


def test_anchor_predictions_by_question_id_or_unique_alias_are_read(tmp_path):
    avqa_refs = tmp_path / "val_qa.json"
    avqa_refs.write_text(json.dumps([{"id": 5, "video_name": "x", "multi_choice": ["a", "b", "c", "d"], "answer": 1},
                                     {"id": 6, "video_name": "x", "multi_choice": ["a", "b", "c", "d"], "answer": 0}]))
    authors = tmp_path / "avqa_predictions.json"  # the authors' avqa_eval.py: question_id beside the video
    authors.write_text(json.dumps([{"question_id": 5, "image_id": "x", "caption": "B", "answer": "B"},
                                   {"question_id": 6, "image_id": "x", "caption": "C", "answer": "A"}]))
    assert score_files("avqa", authors, avqa_refs).metrics == {"Accuracy": 50.0}
    # PAVE's AVSD output names a dialog by its video; a prepared entry carries that image_id.
    avsd = _write(tmp_path / "avsd.json", [
        {"id": "V1_0", "image_id": "V1", "video": "v.mp4", "question": "what is he doing?",
         "answers": ["he is opening the fridge door"], "conversations": _turns("what is he doing?", "x")}])
    pave = tmp_path / "pave_avsd.json"
    pave.write_text(json.dumps([{"image_id": "V1", "caption": "he is opening the fridge door"}]))
    report = score_files("avsd", pave, avsd, meteor=False)
    assert report.missing == [] and report.metrics["BLEU-4"] == pytest.approx(100.0, abs=1e-4)
    shared = _write(tmp_path / "avsd2.json", [
        {"id": f"V1_{turn}", "image_id": "V1", "video": "v.mp4", "question": "q?", "answers": ["a"],
         "conversations": _turns("q?", "a")} for turn in range(2)])
    with pytest.raises(VlynxError, match=r"'V1' is the 'image_id' of several entries"):
        score_files("avsd", pave, shared, meteor=False)


class FakeScorer:
    """Log-likelihoods from a table: option label -> score, per question word."""

    modalities = ()

    def __init__(self, table):
        self.table, self.calls = table, []

    def option_loglikelihoods(self, request, options):
        self.calls.append(options)
        scores = next(s for key, s in self.table.items() if key in request["question"])
        return [scores[option] for option in options]


def test_likelihood_protocol_picks_the_best_option_and_names_itself(tmp_path):
    data = _write(tmp_path / "avqa.json", [
        {"id": str(i), "video": "v.mp4", "question": f"What sounds in clip {subject}?",
         "multi_choice": ["dog", "car", "bell", "bird"], "answer": answer}
        for i, (subject, answer) in enumerate([("one", 1), ("two", 3)])])
    scorer = FakeScorer({"one": {"A": -3.0, "B": -0.5, "C": -2.0, "D": -9.0},    # B: right
                         "two": {"A": -0.1, "B": -0.5, "C": -2.0, "D": -9.0}})   # A: wrong (D)
    out = tmp_path / "out"
    report = evaluate(scorer, "avqa", data, out, protocol="likelihood")
    assert scorer.calls == [["A", "B", "C", "D"]] * 2
    assert report.metrics == {"Accuracy": 50.0}
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "likelihood"
    assert "Protocol: likelihood." in (out / "results.md").read_text()
    first = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert first == {"question_id": "0", "text": "B",
                     "option_loglikelihoods": {"A": -3.0, "B": -0.5, "C": -2.0, "D": -9.0}}
    generated = evaluate(FakeModel({"clip": "B"}), "avqa", data, tmp_path / "gen")
    assert generated.protocol == "generate"


def test_likelihood_needs_a_benchmark_with_options(tmp_path):
    data = _write(tmp_path / "scan.json", [{"id": "q", "video": "v.mp4", "question": "What?", "answers": ["x"]}])
    with pytest.raises(VlynxError, match="needs a benchmark with options"):
        evaluate(FakeScorer({}), "scanqa", data, tmp_path / "out", protocol="likelihood")
