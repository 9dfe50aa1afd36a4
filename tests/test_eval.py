"""The eval stage with a fake model: prompts, appended predictions, resume, result tables."""
from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from vlynx.cli import main
from vlynx.errors import VlynxError
from vlynx.evaluate import build_items, evaluate
from vlynx.metrics.tasks import MULTIPLE_CHOICE_INSTRUCTION
from vlynx.stage_configs import EvalConfig


class FakeModel:
    """Answers from a table keyed by a word of the question; records every request it sees."""

    def __init__(self, answers, fail_after=None):
        self.answers, self.fail_after, self.requests = answers, fail_after, []

    def generate(self, requests):
        if self.fail_after is not None and len(self.requests) >= self.fail_after:
            raise KeyboardInterrupt  # simulate an interrupted run
        self.requests.extend(requests)
        return [next(a for key, a in self.answers.items() if key in r["question"]) for r in requests]


def _avqa_annotation(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    entries = []
    for i, (subject, answer) in enumerate([("dog", 1), ("car", 0), ("bell", 3)]):
        (media / f"v{i}.mp4").write_bytes(b"")
        entries.append({
            "id": f"q{i}", "video": f"v{i}.mp4",
            "conversations": [{"from": "human", "value": f"<image>\nWhat makes the sound of the {subject}?"},
                              {"from": "gpt", "value": "ABCD"[answer]}],
            "multi_choice": ["engine", "dog", "bird", "bell"], "answer": answer,
        })
    path = tmp_path / "avqa.json"
    path.write_text(json.dumps(entries))
    return path, media


def test_multiple_choice_prompt_and_requests(tmp_path):
    data, media = _avqa_annotation(tmp_path)
    items = build_items("avqa", data, media)
    request = items[0].request
    assert request["video"] == str(media / "v0.mp4") and "audio" not in request and "depth" not in request
    assert request["question"] == ("What makes the sound of the dog?\nA. engine\nB. dog\nC. bird\nD. bell\n"
                                   + MULTIPLE_CHOICE_INSTRUCTION)
    assert [item.reference["answer"] for item in items] == ["B", "A", "D"]


def test_eval_scores_writes_tables_and_resumes(tmp_path):
    data, media = _avqa_annotation(tmp_path)
    out = tmp_path / "out"
    answers = {"the dog?": "(B)", "the car?": "Answer: C", "the bell?": "D"}  # q0 right, q1 wrong, q2 right
    first = FakeModel(answers, fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        evaluate(first, "avqa", data, out, media_root=media)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["question_id"] for line in lines] == ["q0"]
    # A torn line from the interruption is dropped on resume.
    with (out / "predictions.jsonl").open("a") as file:
        file.write('{"question_id": "q1", "te')

    second = FakeModel(answers)
    report = evaluate(second, "avqa", data, out, media_root=media, batch_size=2)
    assert [r["question"].split("\n")[0] for r in second.requests] == [
        "What makes the sound of the car?", "What makes the sound of the bell?"]
    assert report.metrics["Accuracy"] == pytest.approx(200 / 3)
    assert json.loads((out / "results.json").read_text())["metrics"]["Accuracy"] == pytest.approx(200 / 3)
    assert "| Accuracy | 66.67 | 3 |" in (out / "results.md").read_text()
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in records] == ["q0", "q1", "q2"]

    third = FakeModel(answers)
    evaluate(third, "avqa", data, out, media_root=media)
    assert third.requests == []  # everything answered already


def test_music_avqa_and_sqa3d_references_from_annotation(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"")
    music = tmp_path / "music.jsonl"
    music.write_text(json.dumps({"id": 7, "video": "v.mp4", "type": "[\"Audio\", \"Counting\"]",
                                 "conversations": [{"from": "human", "value": "<image>\nHow many?"},
                                                   {"from": "gpt", "value": "two"}]}) + "\n")
    report = evaluate(FakeModel({"How many": "there are two"}), "music-avqa", music, tmp_path / "o1")
    assert report.metrics["Audio Counting"] == 100.0 and report.metrics["Overall"] == 100.0
    sqa = tmp_path / "sqa.json"
    sqa.write_text(json.dumps([{"id": "s", "video": "v.mp4", "question": "Is the door open?",
                                "situation": "I face the bed.",
                                "conversations": [{"from": "human", "value": "<image>\nI face the bed. Is the door open?"},
                                                  {"from": "gpt", "value": "yes"}]}]))
    report = evaluate(FakeModel({"door": "Yes."}), "sqa3d", sqa, tmp_path / "o2")
    assert report.metrics["EM@1 Is"] == 100.0


def test_eval_input_errors(tmp_path):
    data, media = _avqa_annotation(tmp_path)
    with pytest.raises(VlynxError, match="media files not found"):
        build_items("avqa", data, tmp_path / "elsewhere")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"id": 1, "video": "v0.mp4", "question": "q?", "answer": "B"}]))
    with pytest.raises(VlynxError, match="choices"):
        build_items("avqa", broken, media)
    with pytest.raises(VlynxError, match="unknown benchmark"):
        build_items("nope", data, media)


# ---------------------------------------------------------------- `vlynx eval` (run_eval) on the config system

BUNDLE_ANSWERS = {
    "bundle-a": {"the dog?": "B", "the car?": "A", "the bell?": "D"},  # all three right
    "bundle-b": {"the dog?": "C", "the car?": "C", "the bell?": "C"},  # all three wrong
}


@pytest.fixture
def bundles(monkeypatch):
    """`VLynx.from_pretrained(name)` -> a FakeModel answering from BUNDLE_ANSWERS[name]; the list of those loaded."""
    from vlynx.bundle import VLynx

    loaded = []

    def from_pretrained(path, **options):
        loaded.append(FakeModel(BUNDLE_ANSWERS[str(path)]))
        return loaded[-1]

    monkeypatch.setattr(VLynx, "from_pretrained", from_pretrained)
    return loaded


def _eval_config_file(tmp_path, **settings):
    data, media = _avqa_annotation(tmp_path)
    config = {"benchmark": "avqa", "model": "bundle-a", "data": str(data), "media_root": str(media),
              "out": str(tmp_path / "out"), "batch_size": 2, "meteor": False, **settings}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_eval_cli_config_round_trip(tmp_path, bundles, capsys):
    config_file = _eval_config_file(tmp_path)
    assert main(["eval", "--config", config_file]) == 0
    assert "| Accuracy | 100.00 | 3 |" in capsys.readouterr().out
    out = tmp_path / "out"
    assert EvalConfig.from_file(out / "vlynx_config.yaml") == EvalConfig.from_file(config_file)
    record = json.loads((out / "vlynx_run.json").read_text())
    assert record["stage"] == "eval" and record["results"]["scores"] == {"Accuracy": 100.0}
    assert len(bundles) == 1 and len(bundles[0].requests) == 3


def test_eval_cli_set_and_flags_override_the_config_file(tmp_path, bundles, capsys):
    config_file = _eval_config_file(tmp_path)
    out = tmp_path / "other"
    assert main(["eval", "--config", config_file, "--set", "model=bundle-b", "--set", "batch_size=3",
                 "--out", str(out)]) == 0
    assert "| Accuracy | 0.00 | 3 |" in capsys.readouterr().out
    saved = EvalConfig.from_file(out / "vlynx_config.yaml")
    assert (saved.model, saved.batch_size, saved.out) == ("bundle-b", 3, str(out))
    assert not (tmp_path / "out").exists()


def test_eval_cli_rejects_unknown_settings_listing_the_known_ones(tmp_path, bundles, capsys):
    config_file = _eval_config_file(tmp_path)
    assert main(["eval", "--config", config_file, "--set", "batchsize=2"]) == 2
    error = capsys.readouterr().err
    assert "unknown setting(s) batchsize" in error
    assert all(field.name in error for field in dataclasses.fields(EvalConfig))
    with open(config_file, "a") as file:
        file.write("learning_rate: 0.1\n")
    assert main(["eval", "--config", config_file]) == 2
    assert "eval.yaml: unknown setting(s) learning_rate" in capsys.readouterr().err
    assert bundles == [] and not (tmp_path / "out").exists()


def test_eval_cli_existing_output_needs_resume_or_overwrite(tmp_path, bundles, capsys):
    config_file = _eval_config_file(tmp_path)
    predictions = tmp_path / "out" / "predictions.jsonl"
    assert main(["eval", "--config", config_file]) == 0
    answered = predictions.read_text()
    capsys.readouterr()

    assert main(["eval", "--config", config_file]) == 2
    error = capsys.readouterr().err
    assert "--resume" in error and "--overwrite" in error
    assert len(bundles) == 1  # refused before loading the model
    assert main(["eval", "--config", config_file, "--resume", "--overwrite"]) == 2
    assert "choose one" in capsys.readouterr().err

    assert main(["eval", "--config", config_file, "--resume"]) == 0
    assert bundles[-1].requests == []  # everything answered already
    assert predictions.read_text() == answered


def test_eval_cli_overwrite_with_another_model_answers_afresh(tmp_path, bundles, capsys):
    config_file = _eval_config_file(tmp_path)
    out = tmp_path / "out"
    assert main(["eval", "--config", config_file]) == 0
    (out / "notes.txt").write_text("from the first run")
    assert main(["eval", "--config", config_file, "--model", "bundle-b", "--overwrite"]) == 0
    assert len(bundles[-1].requests) == 3
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in records) == ["q0", "q1", "q2"] and {r["text"] for r in records} == {"C"}
    assert json.loads((out / "results.json").read_text())["metrics"]["Accuracy"] == 0.0
    assert not (out / "notes.txt").exists()
    assert EvalConfig.from_file(out / "vlynx_config.yaml").model == "bundle-b"


def test_eval_cli_checks_settings_and_inputs_before_loading_the_model(tmp_path, bundles, capsys):
    config_file = _eval_config_file(tmp_path, media_root=str(tmp_path / "elsewhere"))
    assert main(["eval", "--config", config_file]) == 2
    assert "media files not found" in capsys.readouterr().err
    assert main(["eval", "--benchmark", "avqa", "--data", "a.json", "--out", str(tmp_path / "o")]) == 2
    assert "model" in capsys.readouterr().err  # the required setting left out
    assert main(["eval", "--config", config_file, "--set", "benchmark=nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert bundles == [] and not (tmp_path / "out").exists()


def test_media_fields_the_model_does_not_use_are_left_out_and_said_once(tmp_path, caplog):
    data, media = _avqa_annotation(tmp_path)
    entries = json.loads(data.read_text())
    for index, entry in enumerate(entries):
        (media / f"d{index}").mkdir()
        entry["depth"] = f"d{index}"  # a field an audio-only model has no adapter for
    data.write_text(json.dumps(entries))
    model = FakeModel({"the dog?": "B", "the car?": "A", "the bell?": "D"})
    model.modalities = ["audio"]
    report = evaluate(model, "avqa", data, tmp_path / "out", media_root=media, batch_size=2)
    assert report.metrics["Accuracy"] == 100.0
    assert all("depth" not in request for request in model.requests) and len(model.requests) == 3
    assert caplog.text.count("ignoring the annotation's depth field(s)") == 1


def test_eval_cli_protocol_flag_reaches_the_results_and_is_checked_before_loading(tmp_path, bundles, capsys):
    config_file = _eval_config_file(tmp_path)

    def option_loglikelihoods(request, options):  # B for every question: q0 right, q1 and q2 wrong
        return [0.0 if option == "B" else -1.0 for option in options]

    assert main(["eval", "--config", config_file, "--protocol", "generate"]) == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["protocol"] == "generate"
    FakeModel.option_loglikelihoods = staticmethod(option_loglikelihoods)
    try:
        assert main(["eval", "--config", config_file, "--protocol", "likelihood", "--out", str(tmp_path / "l")]) == 0
    finally:
        del FakeModel.option_loglikelihoods
    results = json.loads((tmp_path / "l" / "results.json").read_text())
    assert results["protocol"] == "likelihood" and results["metrics"]["Accuracy"] == pytest.approx(100 / 3)
    scan = tmp_path / "scan.json"
    scan.write_text(json.dumps([{"id": "q", "video": "media/v0.mp4", "question": "What?", "answers": ["x"]}]))
    loaded = len(bundles)
    assert main(["eval", "--config", config_file, "--benchmark", "scanqa", "--data", str(scan), "--media-root",
                 str(tmp_path), "--protocol", "likelihood", "--out", str(tmp_path / "s")]) == 2
    assert "needs a benchmark with options" in capsys.readouterr().err and len(bundles) == loaded
