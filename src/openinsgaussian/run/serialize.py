"""Dataclass configs <-> plain data (YAML / JSON), dotted-key overrides and config hashes.

``dataclass_to_dict`` writes dataclasses as nested dicts (tuples as lists, paths as strings);
``dict_to_dataclass`` reads them back, checking field names and rebuilding nested dataclasses,
tuples, paths, optionals and literals, so a typo in ``config.yml`` or ``--set`` is an error that
names the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError

T = TypeVar("T")


# ---- dataclass <-> plain data -------------------------------------------------------------------
def dataclass_to_dict(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, paths -> str, recursively (YAML/JSON-safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: dataclass_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): dataclass_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [dataclass_to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Coerce plain data ``value`` to type ``tp`` (dataclass, tuple, Path, Optional, Literal)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        return dict_to_dataclass(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        for a in non_none:
            try:
                return _convert(a, value, where)
            except (ConfigError, TypeError, ValueError):
                continue
        raise ConfigError(f"{where}: value {value!r} does not fit {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if args and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value)) if args else tuple(value)
    if origin is list:
        return [_convert(args[0], v, where) for v in value] if args else list(value)
    if origin is dict:
        return dict(value)
    if tp is Path:
        return Path(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def dict_to_dataclass(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a dict; unknown keys are an error, missing ones take defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} for {cls.__name__}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def apply_overrides(cfg: T, overrides: dict[str, Any]) -> T:
    """Copy of dataclass ``cfg`` with dotted-key overrides, e.g. ``{"densify.start": 100}``."""
    data = dataclass_to_dict(cfg)
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override '{key}': '{p}' is not a config section")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"override '{key}': no such field")
        node[parts[-1]] = dataclass_to_dict(value)
    return dict_to_dataclass(type(cfg), data, where="overrides")


def config_hash(cfg: Any) -> str:
    """Short stable hash of a config (sorted JSON of its plain-data form)."""
    blob = json.dumps(dataclass_to_dict(cfg), sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:12]
