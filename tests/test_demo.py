"""`vlynx demo`: the whole pipeline on the miniature world, end to end, twice (same seed -> same numbers)."""
from __future__ import annotations

import json

import pytest

from vlynx.demo import CATEGORIES, ROWS, format_table, run_demo
from vlynx.stage_configs import DemoConfig

TINY = dict(n_reference=6, n_align=8, n_train=6, n_test=6, align_steps=3, tune_steps=3, batch_size=4)


def lora(rank: int, fan_in: int, fan_out: int) -> int:
    return rank * (fan_in + fan_out)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    first_dir, second_dir = tmp_path_factory.mktemp("demo-a"), tmp_path_factory.mktemp("demo-b")
    return run_demo(DemoConfig(out=str(first_dir), **TINY)), run_demo(DemoConfig(out=str(second_dir), **TINY)), first_dir


def test_same_seed_gives_the_same_numbers(two_runs):
    first, second, _ = two_runs
    for a, b in zip(first["rows"], second["rows"]):
        assert (a["accuracy"], a["trainable_params"], a["losses"]) == (b["accuracy"], b["trainable_params"],
                                                                       b["losses"])


def test_every_row_is_reported_with_its_added_parameters(two_runs):
    report, _, _ = two_runs
    # miniworld model: encoder 2 layers x (64 wide, MLP 128); LLM 2 layers x (128 wide, MLP 256, 2 of 4 KV heads)
    v, r = DemoConfig.vision_rank, DemoConfig.llm_rank
    vision = 2 * (4 * lora(v, 64, 64) + lora(v, 64, 128) + lora(v, 128, 64))
    llm = 2 * (2 * lora(r, 128, 128) + 2 * lora(r, 128, 64) + 2 * lora(r, 128, 256) + lora(r, 256, 128))
    assert [row["name"] for row in report["rows"]] == [row.name for row in ROWS]
    assert [row["trainable_params"] for row in report["rows"]] == [0, llm] + [vision + llm] * 4


def test_accuracy_is_exact_match_over_every_held_out_question(two_runs):
    report, _, out = two_runs
    annotations = json.loads((out / "world" / "test" / "annotations.json").read_text())
    answers = {entry["id"]: entry["conversations"][1]["value"] for entry in annotations}
    categories = {entry["id"]: entry["category"] for entry in annotations}
    for row in report["rows"]:
        lines = [json.loads(line) for line in (out / row["predictions"]).read_text().splitlines()]
        assert sorted(line["id"] for line in lines) == sorted(answers)
        for category in CATEGORIES:
            ids = [line for line in lines if categories[line["id"]] == category]
            hits = sum(line["answer"].strip().lower().split()[:1] == [answers[line["id"]]] for line in ids)
            assert row["counts"][category] == len(ids)
            assert row["accuracy"][category] == (round(hits / len(ids), 4) if ids else 0.0)


def test_outputs_are_written(two_runs):
    report, _, out = two_runs
    assert json.loads((out / "results.json").read_text()) == report
    table = (out / "results.md").read_text()
    assert table.strip() == format_table(report)
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(ROWS) + 1
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
