"""The user text of a prepared entry (`Benchmark.entry_prompt`) and MUSIC-AVQA's template filling,
against prompts written out by hand."""
from __future__ import annotations

import pytest

from vlynx.metrics.tasks import PROFICIENCY_QUESTION, fill_template, get_benchmark


@pytest.mark.parametrize("content, values, filled", [
    ("Where is the <FL> sounding instrument?", '["first"]', "Where is the first sounding instrument?"),
    ("Is the <Object> louder than the <Object>?", ["cello", "violin"], "Is the cello louder than the violin?"),
    ("Is the <Object> on the <LR> playing?", "['piano', 'left']", "Is the piano on the left playing?"),
    ("How many instruments are sounding?", "[]", "How many instruments are sounding?"),
])
def test_fill_template_fills_placeholders_in_order(content, values, filled):
    assert fill_template(content, values) == filled


@pytest.mark.parametrize("content, values", [
    ("Is the <Object> louder than the <Object>?", '["cello"]'),
    ("How many instruments are sounding?", '["cello"]'),
])
def test_fill_template_refuses_count_mismatch(content, values):
    with pytest.raises(ValueError, match="placeholders"):
        fill_template(content, values)


@pytest.mark.parametrize("name, entry, prompt", [
    ("sqa3d", {"situation": "I am facing the door.", "question": "What is on my left?"},
     "I am facing the door. What is on my left?"),
    ("avqa", {"question": "What is playing?", "multi_choice": ["cello", "drum", "piano", "flute"]},
     "What is playing?\nA. cello\nB. drum\nC. piano\nD. flute\n"
     "Answer with the option's letter from the given choices directly."),
    ("avsd", {"question": "Does he leave?", "history": [["Is a man there?", "yes"], ["Is he sitting?", "no"]]},
     "Q: Is a man there?\nA: yes\nQ: Is he sitting?\nA: no\nDoes he leave?"),
    ("avsd", {"question": "Is a man there?", "history": []}, "Is a man there?"),
    ("egoexo-proficiency", {"take_uid": "t1", "proficiency_score": "Novice"}, PROFICIENCY_QUESTION),
    ("egoexo-proficiency", {"question": "How skilled is she?"}, "How skilled is she?"),
    ("music-avqa", {"question": "Is the cello playing?", "question_content": "Is the <Object> playing?",
                    "templ_values": '["cello"]'}, "Is the cello playing?"),
    ("music-avqa", {"question_content": "Is the <Object> playing?", "templ_values": '["cello"]'},
     "Is the cello playing?"),
    ("scanqa", {"question": "What color is the chair?"}, "What color is the chair?"),
])
def test_entry_prompt_by_hand(name, entry, prompt):
    assert get_benchmark(name).entry_prompt(entry) == prompt


def test_music_avqa_unfilled_placeholder_is_an_error():
    with pytest.raises(ValueError, match="unfilled.*<Object>"):
        get_benchmark("music-avqa").entry_prompt({"question": "Is the <Object> playing?"})


@pytest.mark.parametrize("name, entry, missing", [
    ("sqa3d", {"question": "What is on my left?"}, "situation"),
    ("scanqa", {"scene_id": "scene0000_00"}, "question"),
    ("avqa", {"question": "What is playing?"}, "multi_choice"),
])
def test_entry_prompt_names_the_missing_field(name, entry, missing):
    with pytest.raises(ValueError, match=missing):
        get_benchmark(name).entry_prompt(entry)
