"""Metric definitions checked on hand-made cases whose expected numbers are worked out here."""
from __future__ import annotations

import json
import math

import pytest

from vlynx.errors import VlynxError
from vlynx.metrics import answer_match, caption_scores, choice_letter, clean_answer, pair_by_id, read_predictions
from vlynx.inputs import read_annotations
from vlynx.metrics.tasks import get_benchmark, proficiency_class, sqa3d_question_type


@pytest.mark.parametrize("raw, cleaned", [
    ("The Letf side.", "left side"),
    ("rigth of tehre", "right of there"),
    ("behine the door", "behind door"),
    ("2 chairs", "two chairs"),
    ("None", "zero"),
    ("0", "zero"),
    ("23", "twenty-three"),
    ("20 or 21", "twenty or 21"),
    ("a brown chair", "brown chair"),
    ("an apple", "apple"),
    ("Backwards", "backward"),
    ("mat2", "mat"),
    ("tv stand", "TV stand"),           # the reference cleaner upper-cases tv after lower-casing
    ("it's white, mostly", "it's white, mostly"),  # commas and apostrophes survive
    ("  spaced   out  ", "spaced out"),
    ("Chair!", "chair"),
])
def test_clean_answer(raw, cleaned):
    assert clean_answer(raw) == cleaned


def test_answer_match_exact_refined_and_empty():
    assert answer_match("brown chair", ["brown chair", "chair"]) == (True, True)
    assert answer_match("chair", ["brown chair"]) == (False, True)        # contained in a reference
    assert answer_match("big brown chair", ["brownchair"]) == (False, True)  # whitespace ignored
    assert answer_match("table", ["brown chair"]) == (False, False)
    assert answer_match("", ["brown chair"]) == (False, False)


def test_pairing_reports_missing_and_extra():
    pairing = pair_by_id({"a": 1, "b": 2, "c": 3}, {"c": "x", "a": "y", "z": "w"})
    assert pairing.ids == ["a", "c"] and pairing.missing == ["b"] and pairing.extra == ["z"]


def test_scanqa_five_questions_counted_by_hand():
    references = {
        "q1": {"answers": ["brown chair"]},
        "q2": {"answers": ["left"]},
        "q3": {"answers": ["on the table"]},
        "q4": {"answers": ["2", "two chairs"]},
        "q5": {"answers": ["white"]},
    }
    predictions = {
        "q1": "The brown chair.",   # cleaned "brown chair": exact
        "q2": "letf",               # typo fixed to "left": exact
        "q3": "table",              # reference cleans to "on table": refined only
        "q4": "3",                  # "three": wrong
        "q9": "not a question",     # extra: ignored
    }                               # q5 missing: wrong
    report = get_benchmark("scanqa").score(references, predictions, meteor=True)
    assert report.metrics["EM@1"] == pytest.approx(100 * 2 / 5)
    assert report.metrics["EM@1 refined"] == pytest.approx(100 * 3 / 5)
    assert report.missing == ["q5"] and report.extra == ["q9"]
    assert report.num_references == 5
    for name in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr"):
        assert 0.0 <= report.metrics[name] <= 1000.0


def test_caption_metrics_by_hand():
    # Identical 6-word sentences: every n-gram precision is 1 and there is no brevity penalty.
    same = caption_scores({"x": ["the cat sat on the mat"]}, {"x": "The cat sat on the mat."}, meteor=False)
    assert same["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert same["ROUGE-L"] == pytest.approx(1.0, abs=1e-6)
    # "the cat sat" vs the 6-word reference: unigram precision 3/3, brevity penalty exp(1 - 6/3);
    # ROUGE-L: LCS 3, P = 1, R = 1/2, beta = 1.2 -> (1 + 1.44) * 0.5 / (0.5 + 1.44).
    short = caption_scores({"x": ["the cat sat on the mat"]}, {"x": "the cat sat"}, meteor=False)
    assert short["BLEU-1"] == pytest.approx(math.exp(-1), rel=1e-6)
    assert short["ROUGE-L"] == pytest.approx(2.44 * 0.5 / 1.94, rel=1e-6)


def test_sqa3d_per_type():
    assert [sqa3d_question_type(q) for q in ("What is", "Is it", "how many", "Can I", "Which way", "Where")] == \
        ["What", "Is", "How", "Can", "Which", "Other"]
    references = {
        "1": {"answer": "chair", "type": "What"},
        "2": {"answer": "table", "type": "What"},
        "3": {"answer": "yes", "type": "Is"},
        "4": {"answer": "2", "type": "How"},
        "5": {"answer": "left", "type": "Other"},
    }
    predictions = {"1": "chair", "2": "the wooden table", "3": "no", "4": "two", "5": "rigth"}
    # exact: 1, 4 ("2" -> "two"); refined adds 2 ("wooden table" contains "table").
    report = get_benchmark("sqa3d").score(references, predictions)
    assert report.metrics["EM@1"] == pytest.approx(40.0)
    assert report.metrics["EM@1 refined"] == pytest.approx(60.0)
    assert report.metrics["EM@1 What"] == pytest.approx(50.0)
    assert report.metrics["EM@1 refined What"] == pytest.approx(100.0)
    assert report.metrics["EM@1 Is"] == 0.0 and report.metrics["EM@1 How"] == 100.0
    assert report.metrics["EM@1 Other"] == 0.0 and "EM@1 Can" not in report.metrics
    assert report.counts["EM@1 What"] == 2


@pytest.mark.parametrize("text, letter", [
    ("B", "B"), ("(b)", "B"), ("B.", "B"), ("Answer: b", "B"), ("The answer is (C).", "C"),
    ("option D", "D"), ("C. a violin", "C"), ("I think (A)", "A"), ("violin", "B"),
    ("A dog", None), ("the answer is a dog", None), ("E", None),
])
def test_choice_letter(text, letter):
    assert choice_letter(text, 4, ["cello", "violin", "drum", "flute"]) == letter


def test_avqa_accuracy_with_unparsed_and_missing():
    choices = ["cat", "dog", "bird", "cow"]
    references = {str(i): {"answer": a, "choices": choices} for i, a in enumerate("BCAAD")}
    predictions = {"0": "(B)", "1": "Answer: c", "2": "a horse", "3": "D."}  # "4" missing
    report = get_benchmark("avqa").score(references, predictions)
    assert report.metrics["Accuracy"] == pytest.approx(40.0)
    assert report.unparsed == ["2"] and report.missing == ["4"]


def test_music_avqa_per_type_group_and_overall():
    def ref(answer, group, kind):
        return {"answer": answer, "group": group, "type": kind}
    references = {
        "1": ref("two", "Audio", "Counting"),
        "2": ref("three", "Audio", "Counting"),
        "3": ref("yes", "Audio", "Comparative"),
        "4": ref("left", "Visual", "Location"),
        "5": ref("piano", "Audio-Visual", "Temporal"),
        "6": ref("violin", "Audio-Visual", "Temporal"),
    }
    predictions = {"1": "There are two.", "2": "four", "3": "Yes", "4": "right", "5": "The Piano"}
    report = get_benchmark("music-avqa").score(references, predictions)
    m = report.metrics
    assert m["Audio Counting"] == pytest.approx(50.0) and m["Audio Comparative"] == pytest.approx(100.0)
    assert m["Audio"] == pytest.approx(200 / 3)
    assert m["Visual Location"] == 0.0 and m["Visual"] == 0.0
    assert m["Audio-Visual Temporal"] == pytest.approx(50.0) and m["Audio-Visual"] == pytest.approx(50.0)
    assert m["Overall"] == pytest.approx(50.0)
    assert "Visual Counting" not in m and report.missing == ["6"]


def test_egoexo_proficiency():
    assert proficiency_class("Intermediate Expert") == "intermediate expert"
    assert proficiency_class("The person is a late-expert.") == "late expert"
    assert proficiency_class("novice or early expert") is None
    references = {"a": {"answer": "novice"}, "b": {"answer": "late expert"}, "c": {"answer": "late expert"}}
    report = get_benchmark("egoexo-proficiency").score(references, {"a": "Novice", "b": "Early Expert", "c": "??"})
    assert report.metrics["Accuracy"] == pytest.approx(100 / 3)
    assert report.metrics["Accuracy late expert"] == 0.0 and report.unparsed == ["c"]


def test_read_predictions_formats_and_duplicates(tmp_path):
    # LLaVA-3D writes JSONL into a file named .json.
    lines = tmp_path / "answers.json"
    lines.write_text('{"question_id": 1, "text": "a"}\n{"question_id": "2", "text": "b"}\n')
    assert read_predictions(lines) == {"1": "a", "2": "b"}
    pave = tmp_path / "pave.json"
    pave.write_text(json.dumps([{"image_id": "v1", "caption": "B", "answer": "C"}]))
    assert read_predictions(pave) == {"v1": "B"}
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 1, "text": "b"}\n')
    with pytest.raises(VlynxError, match="more than once"):
        read_predictions(dup)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1}\n')
    with pytest.raises(VlynxError, match="prediction text"):
        read_predictions(bad)


CHOICES = ["engine", "dog", "bird", "bell"]


@pytest.mark.parametrize("benchmark, file_record, entry, question, answer, expected", [
    ("scanqa", {"question_id": "q", "text": ["brown chair", "chair"]}, {"answers": ["brown chair", "chair"]},
     "What is by the desk?", "brown chair", {"answers": ["brown chair", "chair"]}),
    ("sqa3d", {"question_id": "q", "text": "yes", "type": 1}, {"type": "1"}, "I face the bed. Can I see it?", "yes",
     {"answer": "yes", "type": "Is"}),
    ("sqa3d", {"question_id": "q", "text": "two", "question": "How many chairs?"}, {"question": "How many chairs?"},
     "I sit down. How many chairs?", "two", {"answer": "two", "type": "How"}),
    ("sqa3d", {"question_id": "q", "answers": ["left"], "question": "Which way?"}, {"question": "Which way?"},
     "I face the door. Which way?", "left", {"answer": "left", "type": "Which"}),
    ("sqa3d", {"question_id": "q", "text": "left", "type": "which"}, {"answers": ["left"], "type": "Which"},
     "I face the door. Is it open?", "no", {"answer": "left", "type": "Which"}),
    ("avqa", {"id": "q", "multi_choice": CHOICES, "answer": 1}, {"multi_choice": CHOICES}, "What?", "B. dog",
     {"answer": "B", "choices": CHOICES}),
    ("avqa", {"id": "q", "choices": CHOICES, "answer": "d"}, {"choices": CHOICES, "answer": "3"}, "What?", None,
     {"answer": "D", "choices": CHOICES}),
    ("music-avqa", {"question_id": "q", "type": "[\"Audio\", \"Counting\"]", "anser": "two"},
     {"type": ["Audio", "Counting"]}, "How many?", "two", {"answer": "two", "group": "Audio", "type": "Counting"}),
    ("egoexo-proficiency", {"take_uid": "q", "proficiency_score": "Late Expert"}, {}, "", "late expert",
     {"answer": "late expert"}),
])
def test_one_reference_rule_for_reference_files_and_annotation_entries(
        tmp_path, benchmark, file_record, entry, question, answer, expected):
    spec = get_benchmark(benchmark)
    path = tmp_path / "references.json"
    path.write_text(json.dumps([file_record]))
    assert spec.read_references(path) == {"q": expected}
    assert spec.reference_from_entry(entry, question, answer) == expected


def test_reference_errors_name_the_record_and_the_file(tmp_path):
    path = tmp_path / "refs.json"
    path.write_text(json.dumps([{"id": "q", "multi_choice": CHOICES, "answer": 7}]))
    with pytest.raises(VlynxError, match=r"refs.json: record 0 has answer 7, which names none of its 4 options"):
        get_benchmark("avqa").read_references(path)
    path.write_text(json.dumps([{"question_id": "q", "text": "yes", "type": 9}]))
    with pytest.raises(VlynxError, match=r"refs.json: record 0 has question type 9, not 0..5"):
        get_benchmark("sqa3d").read_references(path)
    with pytest.raises(ValueError, match="has no answer"):
        get_benchmark("avsd").reference_from_entry({}, "Is it loud?", None)


@pytest.mark.parametrize("entry, message", [
    ({"answers": [{"answer": "left", "answer_id": 1}], "type": 0}, "not a string.*vlynx prepare sqa3d"),
    ({"answers": ["left"]}, "neither 'type' nor 'question'.*vlynx prepare sqa3d"),
    ({"answers": ["left"], "type": "Where"}, "question type 'Where', not one of What, Is"),
])
def test_sqa3d_entry_errors_say_what_to_do(entry, message):
    with pytest.raises(ValueError, match=message):
        get_benchmark("sqa3d").reference_from_entry(entry, "I face the door. What is left?", "left")


def test_one_json_reader_for_annotations_references_and_predictions(tmp_path):
    jsonl_in_json = tmp_path / "answers.json"
    jsonl_in_json.write_text('{"id": 1}\n\n{"id": 2}\n')
    assert read_annotations(jsonl_in_json) == [{"id": 1}, {"id": 2}]
    container = tmp_path / "proficiency.json"
    container.write_text(json.dumps({"annotations": [{"take_uid": "t"}]}))
    assert read_annotations(container) == [{"take_uid": "t"}]
    document = tmp_path / "broken.json"
    document.write_text('[\n  {"id": 1},\n  {"id": 2\n]\n')
    with pytest.raises(VlynxError, match=r"broken.json: invalid JSON at line 4"):
        read_annotations(document)
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"id": 1}\n{"id": \n')
    with pytest.raises(VlynxError, match=r"torn.jsonl: line 2 is not a JSON Lines record"):
        read_annotations(torn)
    with pytest.raises(VlynxError, match=r"nothing.json: annotation file not found"):
        read_annotations(tmp_path / "nothing.json")
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps([1, 2]))
    with pytest.raises(VlynxError, match=r"settings.json: expected a list of annotation objects"):
        read_annotations(settings)
