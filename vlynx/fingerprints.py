"""Comparing recorded identities (backbone fingerprints, run identities) with the current ones: one rule."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def fingerprint_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'field: recorded X, model Y' for each differing leaf, fields as dotted paths, sorted.

    A weights digest of None (a model built without weights, e.g. on the meta device) matches
    any digest: architecture fields still have to agree.
    """
    flat_stored, flat_current = _flatten(stored), _flatten(current)
    differences = []
    for name in sorted(set(flat_stored) | set(flat_current)):
        a, b = flat_stored.get(name, "<absent>"), flat_current.get(name, "<absent>")
        if name == "weights" and (a is None or b is None):
            continue
        if a != b:
            differences.append(f"{name}: recorded {a!r}, model {b!r}")
    return differences


def first_difference(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """'field: recorded X, now Y' for the first differing leaf (dotted path, sorted), or None."""
    flat_stored, flat_current = _flatten(stored), _flatten(current)
    for name in sorted(set(flat_stored) | set(flat_current)):
        a, b = flat_stored.get(name, "<absent>"), flat_current.get(name, "<absent>")
        if a != b:
            return f"{name}: recorded {a!r}, now {b!r}"
    return None


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat
