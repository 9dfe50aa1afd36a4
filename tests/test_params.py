"""`vlynx params` reproduces the paper's trainable-parameter counts (docs/method.md §4).

The expected integers are derived here from the architectures' layer shapes
(LoRA on a Linear in->out adds r * (in + out) parameters), not from the program.
"""
from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import pytest

from vlynx.params import count_added_parameters


def _preset(name: str) -> dict:
    return json.loads(resources.files("vlynx.backbones.presets").joinpath(f"{name}.json").read_text())


def _lora(rank: int, fan_in: int, fan_out: int) -> int:
    return rank * (fan_in + fan_out)


def expected_vision_lora(config: dict, rank: int) -> int:
    vision = config["vision_config"]
    hidden, mlp = vision["hidden_size"], vision["intermediate_size"]
    per_layer = 4 * _lora(rank, hidden, hidden) + _lora(rank, hidden, mlp) + _lora(rank, mlp, hidden)
    return vision["num_hidden_layers"] * per_layer


def expected_llm_lora(config: dict, rank: int) -> int:
    text = config["text_config"]
    hidden, mlp = text["hidden_size"], text["intermediate_size"]
    kv = hidden // text["num_attention_heads"] * text["num_key_value_heads"]
    per_layer = (
        2 * _lora(rank, hidden, hidden)  # q, o
        + 2 * _lora(rank, hidden, kv)  # k, v (grouped-query attention)
        + 2 * _lora(rank, hidden, mlp)  # gate, up
        + _lora(rank, mlp, hidden)  # down
    )
    return text["num_hidden_layers"] * per_layer


@pytest.mark.parametrize("model", ["llava-onevision-0.5b", "llava-onevision-7b"])
def test_counts_equal_layer_shape_derivation(model):
    config = _preset(model)
    counts = count_added_parameters(model)
    assert counts.vision_lora == expected_vision_lora(config, 64)
    assert counts.llm_lora == expected_llm_lora(config, 64)
    assert counts.total == counts.vision_lora + counts.llm_lora


@pytest.mark.parametrize(
    ("model", "llm_only", "vlynx"),
    [("llava-onevision-0.5b", 35.2, 68.7), ("llava-onevision-7b", 161.5, 195.0)],
)
def test_paper_table_figures(model, llm_only, vlynx):
    counts = count_added_parameters(model)
    assert round(counts.llm_lora / 1e6, 1) == llm_only
    assert round(counts.total / 1e6, 1) == vlynx


@pytest.mark.parametrize(("rank", "total_m"), [(8, 39.4), (16, 43.6), (32, 51.9), (64, 68.7)])
def test_vision_rank_ablation(rank, total_m):
    config = _preset("llava-onevision-0.5b")
    counts = count_added_parameters("llava-onevision-0.5b", vision_rank=rank)
    assert counts.total == expected_vision_lora(config, rank) + expected_llm_lora(config, 64)
    assert round(counts.total / 1e6, 1) == total_m


def test_cli_json_for_a_local_checkpoint(tiny_checkpoint):
    config = _preset("tiny")
    result = subprocess.run(
        [sys.executable, "-m", "vlynx", "params", "--model", str(tiny_checkpoint), "--llm-rank", "8", "--json"],
        capture_output=True, text=True, check=True,
    )
    counts = json.loads(result.stdout)
    assert counts == {
        "vision_lora": expected_vision_lora(config, 64),
        "llm_lora": expected_llm_lora(config, 8),
        "total": expected_vision_lora(config, 64) + expected_llm_lora(config, 8),
    }
    assert all(isinstance(value, int) for value in counts.values())


def test_cli_rejects_bad_rank_with_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "vlynx", "params", "--model", "tiny", "--vision-rank", "0"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "rank" in result.stderr
