"""Settings from files and the command line, for every stage's config (configs are data)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlynx.errors import VlynxError


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """A YAML file, or a `.json` file, holding one mapping of settings."""
    import json

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
    """`KEY=VALUE` strings (from `--set`) -> {KEY: VALUE}; values parse as YAML (32, 1.0, true, [0, 1])."""
    import yaml

    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise VlynxError(f"--set expects KEY=VALUE, got {pair!r}")
        settings[key.strip()] = yaml.safe_load(value)
    return settings
