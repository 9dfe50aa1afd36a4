"""One config system for every stage: file -> --set -> flags, unknown keys refused, derived defaults, outputs."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from vlynx.cli import build_parser
from vlynx.config import config_from_args
from vlynx.outputs import prepare_output, run_file_paths, save_run
from vlynx.errors import VlynxError
from vlynx.stage_configs import AlignConfig, DemoConfig, EvalConfig, ReferenceConfig, TuneConfig

STAGES = {"reference": ReferenceConfig, "align": AlignConfig, "tune": TuneConfig, "eval": EvalConfig,
          "demo": DemoConfig}


def parsed(argv: list[str]):
    args = build_parser().parse_args(argv)
    return config_from_args(STAGES[argv[0]], args)


def write_yaml(path, mapping):
    path.write_text(yaml.safe_dump(mapping))
    return str(path)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_takes_config_and_set(stage):
    help_text = build_parser()._subparsers._group_actions[0].choices[stage].format_help()
    assert "--config FILE" in help_text and "--set KEY=VALUE" in help_text


def test_file_then_set_then_flags(tmp_path):
    recipe = write_yaml(tmp_path / "r.yaml", {"model": "from-file", "lr": "1e-4", "seed": 1, "max_steps": 9})
    config = parsed(["align", "--config", recipe, "--set", "seed=2", "--set", "max_steps=5", "--max-steps", "3"])
    assert (config.model, config.lr, config.seed, config.max_steps) == ("from-file", 1e-4, 2, 3)
    assert isinstance(config.lr, float)  # YAML 1.1 reads 1e-4 (no dot) as text


def test_unknown_keys_are_refused_with_the_known_ones(tmp_path):
    recipe = write_yaml(tmp_path / "r.yaml", {"lora_rank": 2})
    with pytest.raises(VlynxError, match=r"r\.yaml: unknown setting\(s\) lora_rank for align \(known: .*vision_rank"):
        AlignConfig.from_file(recipe)
    with pytest.raises(VlynxError, match="unknown setting.*lamda_dist"):
        parsed(["align", "--set", "lamda_dist=0.1"])


def test_values_of_the_wrong_type_are_refused():
    with pytest.raises(VlynxError, match="'lr' expects float, got 'fast'"):
        parsed(["align", "--set", "lr=fast"])
    with pytest.raises(VlynxError, match="'frames' expects int"):
        parsed(["tune", "--set", "frames=2.5"])
    with pytest.raises(VlynxError, match="'overwrite' expects bool"):
        parsed(["eval", "--set", "overwrite=3"])


def test_dotted_set_updates_one_entry_of_a_mapping(tmp_path):
    recipe = write_yaml(tmp_path / "r.yaml", {"modality_settings": {"n_mels": 64, "window_s": 2.0}})
    config = parsed(["align", "--config", recipe, "--set", "modality_settings.n_mels=32"])
    assert config.modality_settings == {"n_mels": 32, "window_s": 2.0}


def test_comma_lists_from_flags_and_yaml(tmp_path):
    assert parsed(["tune", "--modality", "audio,depth"]).modalities == ["audio", "depth"]
    assert parsed(["tune", "--modality", ""]).modalities == []  # the video-only -FT baseline
    recipe = write_yaml(tmp_path / "r.yaml", {"modalities": ["audio"], "vision_adapters": "a/,b/"})
    assert TuneConfig.from_file(recipe).vision_adapters == ["a/", "b/"]


@pytest.mark.parametrize("source", ["yaml", "set", "flag"])
def test_alpha_follows_the_rank_whatever_sets_it(tmp_path, source):
    """Vision alpha = 2 x rank, LLM alpha = rank / 4 (the paper's 64/128 and 64/16), however the rank arrives."""
    if source == "yaml":
        align = parsed(["align", "--config", write_yaml(tmp_path / "a.yaml", {"vision_rank": 2})])
        tune = parsed(["tune", "--config", write_yaml(tmp_path / "t.yaml", {"llm_rank": 8, "vision_rank": 4})])
    elif source == "set":
        align = parsed(["align", "--set", "vision_rank=2"])
        tune = parsed(["tune", "--set", "llm_rank=8", "--set", "vision_rank=4"])
    else:
        align = parsed(["align", "--vision-rank", "2"])
        tune = parsed(["tune", "--llm-rank", "8", "--vision-rank", "4"])
    assert align.resolved().vision_alpha == 4.0
    assert (tune.resolved().llm_alpha, tune.resolved().vision_alpha) == (2.0, 8.0)


def test_an_explicit_alpha_is_kept():
    assert parsed(["align", "--vision-rank", "2", "--vision-alpha", "16"]).resolved().vision_alpha == 16.0
    assert parsed(["tune", "--set", "llm_alpha=3", "--llm-rank", "8"]).resolved().llm_alpha == 3.0
    assert (AlignConfig().resolved().vision_alpha, TuneConfig().resolved().llm_alpha) == (128.0, 16.0)


def test_old_flag_spellings_still_work():
    assert parsed(["align", "--lora-rank", "8", "--lora-alpha", "4"]).vision_rank == 8
    assert parsed(["tune", "--warmup", "0.1"]).warmup_ratio == 0.1


@pytest.mark.parametrize("stage", STAGES)
def test_saved_config_round_trips_to_the_same_run_settings(stage, tmp_path):
    """Every field set to a non-default value -> the saved YAML -> the same config (resolved)."""
    cls = STAGES[stage]
    changed = {}
    for field in dataclasses.fields(cls):
        value = getattr(cls(), field.name)
        changed[field.name] = {bool: lambda v: not v, int: lambda v: v + 3, float: lambda v: v * 3 + 0.5,
                               str: lambda v: v + "-x", list: lambda v: [*v, "a", "b"],
                               dict: lambda v: {**v, "n": {"k": 1}}, type(None): lambda v: None
                               }[type(value)](value)
    config = cls(**changed).resolved()
    save_run(config, tmp_path, started=0.0, answer=42)
    config_file, record_file = run_file_paths(tmp_path)
    assert cls.from_file(config_file) == config
    assert parsed([stage, "--config", str(config_file)]) == config
    record = yaml.safe_load(record_file.read_text())  # JSON is YAML
    assert record["stage"] == stage and record["results"] == {"answer": 42} and record["config"] == config.to_dict()
    assert set(record["versions"]) == {"vlynx", "torch", "transformers"}


def test_file_outputs_keep_their_config_beside_them(tmp_path):
    out = tmp_path / "ref.safetensors"
    assert run_file_paths(out, inside=False) == (tmp_path / "ref.safetensors.config.yaml",
                                                 tmp_path / "ref.safetensors.run.json")


def test_missing_required_settings_are_listed_together():
    with pytest.raises(VlynxError, match=r"missing --modality, --data, --reference, --out"):
        AlignConfig(model="m").check()


def test_overwrite_and_resume_policy(tmp_path):
    out, checkpoints = tmp_path / "out", tmp_path / "out.checkpoints"
    assert prepare_output(out, checkpoints, resume=False, overwrite=False) is False  # nothing there
    out.mkdir()
    assert prepare_output(out, checkpoints, resume=False, overwrite=False) is False  # an empty folder is free
    (out / "adapter.safetensors").write_text("old")
    with pytest.raises(VlynxError, match="already exists.*--overwrite"):
        prepare_output(out, checkpoints, resume=False, overwrite=False)
    (checkpoints / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(VlynxError, match="complete: nothing to resume"):  # the output is written last
        prepare_output(out, checkpoints, resume=True, overwrite=False)
    with pytest.raises(VlynxError, match="choose one"):
        prepare_output(out, checkpoints, resume=True, overwrite=True)
    (out / "adapter.safetensors").unlink()
    out.rmdir()  # an interrupted run: checkpoints, no output
    with pytest.raises(VlynxError, match="checkpoints of an earlier run: pass --resume"):
        prepare_output(out, checkpoints, resume=False, overwrite=False)
    assert prepare_output(out, checkpoints, resume=True, overwrite=False) is True
    out.mkdir()
    (out / "adapter.safetensors").write_text("old")
    assert prepare_output(out, checkpoints, resume=False, overwrite=True) is False
    assert not out.exists() and not checkpoints.exists()  # the old output AND its checkpoints are gone
    assert prepare_output(out, checkpoints, resume=True, overwrite=False) is False  # nothing to resume: afresh
