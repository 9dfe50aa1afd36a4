"""Run configs: one dataclass per stage, read from YAML, `--set KEY=VALUE` and flags, saved beside the output.

Every stage (reference, align, tune, eval, demo) follows the same rules:

- settings apply in this order: the `--config` file, then `--set KEY=VALUE` pairs, then flags;
- an unknown key is an error that lists the known ones; a value of the wrong type is an error;
- a derived default (e.g. LoRA alpha = 2 x rank) is a field left at None and filled by
  `resolved()`, the same way whatever set the field it derives from;
- the resolved config and a run record are written with the output (`vlynx.outputs`), so
  `--config that_file.yaml` repeats the run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from vlynx.errors import VlynxError

CONFIG_FILE = "vlynx_config.yaml"  # inside a directory output; `OUT.config.yaml` beside a file output
RUN_FILE = "vlynx_run.json"  # likewise `OUT.run.json`

Config = TypeVar("Config", bound="StageConfig")


@dataclasses.dataclass
class StageConfig:
    """Base of every stage's settings. Subclasses are plain dataclasses of fields with defaults."""

    STAGE: ClassVar[str] = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ()  # fields that must be set (non-empty) before a run
    # fields that do not change a run's results: left out of its identity (`vlynx.outputs.run_identity`)
    RESULT_FREE: ClassVar[tuple[str, ...]] = ("out", "resume", "overwrite", "checkpoint_dir", "trust_remote_code")

    # ----- building ------------------------------------------------------------------------
    @classmethod
    def from_file(cls: type[Config], path: str | Path) -> Config:
        """A config from a YAML (or JSON) mapping of field names; unknown keys are an error."""
        return cls().updated(read_settings_file(path), source=path)

    @classmethod
    def from_sources(cls: type[Config], config_file: str | Path | None = None,
                     assignments: list[str] | tuple[str, ...] = (),
                     flags: dict[str, Any] | None = None) -> Config:
        """The config file, then `--set` pairs, then flags (field name -> value), each overriding the last."""
        config = cls.from_file(config_file) if config_file else cls()
        assigned = parse_assignments(list(assignments))
        for name, value in assigned.items():  # `--set` updates a mapping field entry by entry
            current = getattr(config, name, None)
            if isinstance(value, dict) and isinstance(current, dict):
                assigned[name] = {**current, **value}
        config = config.updated(assigned, source="--set")
        return config.updated(flags or {})

    def updated(self: Config, overrides: dict[str, Any], source: str | Path | None = None) -> Config:
        """A copy with `overrides` (field name -> value) applied and type-checked."""
        hints = _field_types(type(self))
        unknown = sorted(set(overrides) - set(hints))
        if unknown:
            raise VlynxError(f"unknown setting(s) {', '.join(unknown)} for {self.STAGE} "
                             f"(known: {', '.join(sorted(hints))})", source)
        values = {name: _coerce(name, value, hints[name], source) for name, value in overrides.items()}
        return dataclasses.replace(self, **values)

    def resolved(self: Config) -> Config:
        """A copy with every derived default filled in (subclasses override; the base has none)."""
        return self

    def check(self) -> None:
        """Raise `VlynxError` naming the first invalid setting (subclasses add their own rules)."""
        missing = [f"--{name.replace('_', '-')}" for name in self.REQUIRED if getattr(self, name) in (None, "", [], {})]
        if missing:
            raise VlynxError(f"missing {', '.join(missing)} (as flags or in a --config file)")

    # ----- saving --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Field -> value, the stage's own fields first (what a reader looks for), then shared ones."""
        values = dataclasses.asdict(self)
        return {field.name: values[field.name] for field in _ordered_fields(type(self))}

    def to_yaml(self) -> str:
        import yaml

        return f"# vlynx {self.STAGE} config: rerun with `vlynx {self.STAGE} --config THIS_FILE`\n" + \
            yaml.safe_dump(self.to_dict(), sort_keys=False)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(name: str, value: Any, kind: Any, source: str | Path | None) -> Any:
    """`value` as field type `kind`; YAML's looser forms are accepted (1e-4 as text, an int for a float)."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union \
        else (kind,)
    if value is None:
        if type(None) in options:
            return None
        raise VlynxError(f"'{name}' cannot be empty (null)", source)
    for option in (o for o in options if o is not type(None)):
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and not isinstance(value, bool):
            if isinstance(value, (int, float)):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)  # YAML 1.1 reads 1e-4 (no dot) as text
                except ValueError:
                    pass
        if origin is str and isinstance(value, (str, Path)):
            return str(value)
        if origin is list:
            if isinstance(value, str):  # "audio,depth" as from a flag
                return [part.strip() for part in value.split(",") if part.strip()]
            if isinstance(value, (list, tuple)):
                return list(value)
        if origin is dict and isinstance(value, dict):
            return dict(value)
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise VlynxError(f"'{name}' expects {expected}, got {value!r}", source)


# ----- settings files and --set -----------------------------------------------------------------
def read_settings_file(path: str | Path) -> dict[str, Any]:
    """A YAML file, or a `.json` file, holding one mapping of settings."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise VlynxError("config file not found", path)
    try:
        text = path.read_text(encoding="utf-8")
        value = (json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)) or {}
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise VlynxError(f"cannot parse ({error.__class__.__name__}: {str(error).splitlines()[0]})", path) from error
    if not isinstance(value, dict):
        raise VlynxError("expected a mapping of settings", path)
    return value


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (from `--set`) -> {KEY: VALUE}; values parse as YAML (32, 1.0, true, [0, 1]).

    A dotted key sets one entry of a mapping field: `modality_settings.n_mels=32`.
    """
    import yaml

    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise VlynxError(f"--set expects KEY=VALUE, got {pair!r}")
        head, _, rest = key.partition(".")
        target, leaf = (settings, head) if not rest else (settings.setdefault(head, {}), rest)
        if not isinstance(target, dict):
            raise VlynxError(f"--set {pair!r}: '{head}' is set both as a whole and by entry")
        target[leaf] = yaml.safe_load(value)
    return settings


# ----- the command line -------------------------------------------------------------------------
def flag(help: str, *names: str, **argparse_options: Any) -> dict[str, Any]:
    """Field metadata that gives a config field a command-line flag: `field(..., metadata=flag("help"))`.

    `names` default to `--field-name`; `argparse_options` (choices, action, metavar) pass through.
    """
    return {"flag": (help, names, argparse_options)}


def add_stage_arguments(parser: argparse.ArgumentParser, config_class: type[StageConfig],
                        **options: dict[str, Any]) -> None:
    """`--config`, `--set` and a flag for every field of `config_class` declared with `flag(...)`.

    `options` adds argparse options per field name (e.g. choices known only at run time).
    """
    add_config_arguments(parser, config_class)
    parser.epilog = (f"Settings come from --config, then --set, then flags (docs/configuration.md). The resolved "
                     f"config and a run record (versions, command line, wall time, results) are written with the "
                     f"output: OUT/{CONFIG_FILE} and OUT/{RUN_FILE} in an output folder, OUT.config.yaml and "
                     "OUT.run.json beside an output file; --config that file repeats the run. An existing output "
                     "is refused unless --overwrite; checkpoints (OUT.checkpoints) are continued with --resume.")
    for field in _ordered_fields(config_class):
        if "flag" in field.metadata:
            help, names, extra = field.metadata["flag"]
            add_option(parser, config_class, field.name, *names, help=help, **{**extra, **options.get(field.name, {})})


def _ordered_fields(cls: type) -> list[dataclasses.Field]:
    """The dataclass fields, the class's own first (what a reader looks for), then inherited ones."""
    fields = dataclasses.fields(cls)
    own = [f for f in fields if f.name in cls.__annotations__]
    return own + [f for f in fields if f.name not in cls.__annotations__]


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type[StageConfig]) -> None:
    """`--config FILE` and `--set KEY=VALUE` for a stage's subcommand."""
    parser.add_argument("--config", metavar="FILE",
                        help=f"YAML/JSON file of {config_class.__name__} fields (a saved {CONFIG_FILE} repeats a "
                        "run); --set and flags override it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field, value parsed as YAML (repeatable; e.g. --set lr=2e-5, "
                        "--set modality_settings.n_mels=32)")


def add_option(parser: argparse.ArgumentParser, config_class: type[StageConfig], name: str, *flags: str,
               help: str, **kwargs: Any) -> None:
    """A flag for config field `name`: its type from the field, its default stated in the help.

    Nothing is stored unless the flag is given, so the config file and `--set` keep their values.
    """
    field = {f.name: f for f in dataclasses.fields(config_class)}[name]
    kind = _field_types(config_class)[name]
    default = field.default if field.default is not dataclasses.MISSING else None
    flags = flags or (f"--{name.replace('_', '-')}",)
    if "action" not in kwargs and kind in (bool, bool | None):
        kwargs["action"] = "store_false" if default is True else "store_true"
    elif "action" not in kwargs and "type" not in kwargs:
        plain = [o for o in typing.get_args(kind) if o is not type(None)] or [kind]
        kwargs["type"] = {int: int, float: float}.get(plain[0], str)
    if "action" not in kwargs or kwargs["action"] not in ("store_true", "store_false"):
        help = f"{help} (default: {default})" if default not in (None, "", [], {}) and "default" not in help else help
    parser.add_argument(*flags, dest=name, default=argparse.SUPPRESS, help=help, **kwargs)


def config_from_args(config_class: type[Config], args: argparse.Namespace) -> Config:
    """The stage's config from `--config`, then `--set`, then the flags the user gave."""
    names = {f.name for f in dataclasses.fields(config_class)}
    flags = {name: value for name, value in vars(args).items() if name in names}
    return config_class.from_sources(getattr(args, "config", None), getattr(args, "set", []), flags)
