"""`vlynx demo`: the whole pipeline on the miniature world over two seeds, with the curve, at tiny sizes."""
from __future__ import annotations

import json
import math
import statistics

import pytest

from vlynx.demo import CATEGORIES, CONTROL, CURVE_ROWS, ROWS, VLYNX, format_table, run_demo
from vlynx.stage_configs import DemoConfig

TINY = dict(n_reference=6, n_align=8, n_train=4, n_test=5, align_steps=2, tune_steps=2, batch_size=4)
T_975_1DF = 12.7062  # Student's t, 0.975 quantile, 1 degree of freedom (two seeds), from the published table


def lora(rank: int, fan_in: int, fan_out: int) -> int:
    return rank * (fan_in + fan_out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    both, second = tmp_path_factory.mktemp("demo-0-1"), tmp_path_factory.mktemp("demo-1")
    report = run_demo(DemoConfig(out=str(both), seeds=2, jobs=2, curve=True, curve_scenes=[2], **TINY))
    alone = run_demo(DemoConfig(out=str(second), seed=1, seeds=1, **TINY))
    return report, alone, both


def _row(report, name):
    return next(row for row in report["rows"] if row["name"] == name)


def test_a_seed_gives_the_same_numbers_alone_or_beside_another_in_its_own_process(runs):
    report, alone, _ = runs
    assert report["seeds"] == [0, 1] and alone["seeds"] == [1]
    for row in alone["rows"]:
        first, second = row["per_seed"][0], _row(report, row["name"])["per_seed"][1]
        assert (first["seed"], first["accuracy"], first["losses"]) == (second["seed"], second["accuracy"],
                                                                       second["losses"])


def test_every_row_with_the_control_and_its_added_parameters(runs):
    report, _, _ = runs
    # miniworld model: encoder 2 layers x (64 wide, MLP 128); LLM 2 layers x (128 wide, MLP 256, 2 of 4 KV heads)
    v, r = DemoConfig.vision_rank, DemoConfig.llm_rank
    vision = 2 * (4 * lora(v, 64, 64) + lora(v, 64, 128) + lora(v, 128, 64))
    llm = 2 * (2 * lora(r, 128, 128) + 2 * lora(r, 128, 64) + 2 * lora(r, 128, 256) + lora(r, 256, 128))
    assert [row["name"] for row in report["rows"]] == [row.name for row in ROWS]
    assert CONTROL in [row.name for row in ROWS]
    # the control's vision LoRA is attached but never trained: only the LLM LoRA counts
    assert [row["trainable_params"] for row in report["rows"]] == [0, llm] + [vision + llm] * 4 + [llm]


def test_the_controls_vision_lora_leaves_the_encoder_unchanged(runs):
    from safetensors.torch import load_file

    _, _, out = runs
    weights = load_file(out / "seed-0" / "adapters" / "untrained" / "audio" / "adapter_model.safetensors")
    b_matrices = [tensor for name, tensor in weights.items() if "lora_B" in name]
    assert b_matrices and all(not tensor.any() for tensor in b_matrices)


def test_intervals_and_paired_differences_by_hand(runs):
    report, _, _ = runs
    vlynx = [run["accuracy"] for run in _row(report, VLYNX)["per_seed"]]
    for row in report["rows"]:
        for category in CATEGORIES:
            if not all(run["counts"][category] for run in row["per_seed"]):
                # a seed without questions of the category is left out, not counted as 0
                asked = [run["accuracy"][category] for run in row["per_seed"] if run["counts"][category]]
                interval = row["accuracy"][category]
                if asked:
                    assert (interval["mean"], interval["n"]) == (asked[0], 1)
                else:
                    assert interval is None
                continue
            a, b = (run["accuracy"][category] for run in row["per_seed"])
            mean, half = (a + b) / 2, T_975_1DF * abs(a - b) / math.sqrt(2) / math.sqrt(2)
            interval = row["accuracy"][category]
            assert (interval["mean"], interval["low"], interval["high"], interval["n"]) == pytest.approx(
                (mean, mean - half, mean + half, 2), abs=1e-4)
            if row["name"] == VLYNX:
                assert "difference_vs_vlynx" not in row
                continue
            d = [a - vlynx[0][category], b - vlynx[1][category]]
            half = T_975_1DF * statistics.stdev(d) / math.sqrt(2)
            difference = row["difference_vs_vlynx"][category]
            assert (difference["mean"], difference["low"], difference["high"]) == pytest.approx(
                (sum(d) / 2, sum(d) / 2 - half, sum(d) / 2 + half), abs=1e-4)


def test_chance_levels_from_the_worlds_answers(runs):
    report, _, out = runs
    expected = {c: {"uniform": 0.0, "prior": 0.0} for c in CATEGORIES}
    for seed in (0, 1):
        world = out / f"seed-{seed}" / "world"
        train = json.loads((world / "train" / "annotations.json").read_text())
        test = json.loads((world / "test" / "annotations.json").read_text())
        answer = {e["id"]: e["conversations"][1]["value"] for e in train + test}
        for category in CATEGORIES:
            questions = [e for e in test if e["category"] == category]
            if not questions:  # a tiny world may ask none of a category: no level for it
                expected[category]["missing"] = True
                continue
            uniform = prior = 0.0
            for e in questions:
                same_kind = [answer[t["id"]] for t in train + test if t["kind"] == e["kind"]]
                uniform += 1 / len(set(same_kind))
                trained = sorted(answer[t["id"]] for t in train if t["kind"] == e["kind"])
                best = max(sorted(set(trained)), key=trained.count) if trained else None
                prior += best == answer[e["id"]]
            expected[category]["uniform"] += uniform / len(questions) / 2
            expected[category]["prior"] += prior / len(questions) / 2
    assert sorted(report["chance"]) == sorted(c for c in CATEGORIES if "missing" not in expected[c])
    for category in report["chance"]:
        assert report["chance"][category] == pytest.approx(expected[category], abs=2e-4)
    assert 0 < report["chance"]["audio"]["uniform"] <= 0.5


def test_accuracy_is_exact_match_over_every_held_out_question(runs):
    report, _, out = runs
    for seed_index, seed in enumerate(report["seeds"]):
        annotations = json.loads((out / f"seed-{seed}" / "world" / "test" / "annotations.json").read_text())
        answers = {entry["id"]: entry["conversations"][1]["value"] for entry in annotations}
        categories = {entry["id"]: entry["category"] for entry in annotations}
        for row in report["rows"]:
            run = row["per_seed"][seed_index]
            lines = [json.loads(line) for line in (out / f"seed-{seed}" / run["predictions"]).read_text().splitlines()]
            assert sorted(line["id"] for line in lines) == sorted(answers)
            for category in CATEGORIES:
                ids = [line for line in lines if categories[line["id"]] == category]
                hits = sum(line["answer"].strip().lower().split()[:1] == [answers[line["id"]]] for line in ids)
                assert run["counts"][category] == len(ids)
                assert run["accuracy"][category] == (round(hits / len(ids), 4) if ids else 0.0)


def test_the_curve_has_every_amount_and_reuses_the_full_tables_point(runs):
    report, _, out = runs
    curve = report["curve"]
    assert curve["scenes"] == [2, 4] and [row["name"] for row in curve["rows"]] == list(CURVE_ROWS)
    for row in curve["rows"]:
        assert [p["scenes"] for p in row["points"]] == [2, 4]
        assert row["points"][1]["per_seed"] == _row(report, row["name"])["per_seed"]
    subset = json.loads((out / "seed-0" / "world" / "train" / "annotations-2-scenes.json").read_text())
    full = json.loads((out / "seed-0" / "world" / "train" / "annotations.json").read_text())
    first_two = sorted({e["scene"] for e in full})[:2]
    assert subset == [e for e in full if e["scene"] in first_two]


def test_outputs_are_written(runs):
    report, _, out = runs
    assert json.loads((out / "results.json").read_text()) == report
    table = (out / "results.md").read_text()
    assert table.strip() == format_table(report)
    assert "± " in table and "chance (uniform" in table and "Audio accuracy against the amount" in table
    for picture in ("results.png", "curve.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
