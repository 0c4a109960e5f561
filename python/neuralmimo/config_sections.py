"""Configuration files (YAML) to dataclasses, refusing unknown keys with a clear message."""

from __future__ import annotations

from dataclasses import fields


def section(typ, data: dict | None, where: str):
    """``typ(**data)`` for a dataclass ``typ``; a key that is not one of its fields raises
    ``ValueError`` naming ``where`` (a typo in a config must not be silently ignored)."""
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    bad = set(data) - {f.name for f in fields(typ)}
    if bad:
        raise ValueError(f"unknown keys in {where}: {sorted(bad)}")
    return typ(**data)
