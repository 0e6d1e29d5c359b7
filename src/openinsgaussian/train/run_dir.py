"""Run-directory layout and the config file inside it.

A run directory holds everything one scene's training produces; every stage and command finds its
inputs through :class:`RunDir`, so paths are spelled once::

    <run>/config.yml                 resolved configuration, one section per stage
    <run>/checkpoints/<stage>/step_XXXXXX.pt
    <run>/point_cloud.ply            Gaussians (Inria layout + extras)
    <run>/instances.npz              instance / language results (later stages)
    <run>/metrics/<stage>.json
    <run>/renders/<stage>/*.png
    <run>/plots/

``config.yml`` is plain YAML written from dataclasses (``dataclass_to_dict``) and read back with
``yaml.safe_load`` + ``dict_to_dataclass``, which checks field names and rebuilds nested
dataclasses, tuples and paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..errors import ConfigError, RunError
from ..io import write_text

T = TypeVar("T")

STAGES = ("stage0", "stage1", "stage2", "stage3")  # pipeline order (newest model = latest stage)


class RunDir:
    """Paths of one run directory (nothing is created until something is written)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics"

    @property
    def renders(self) -> Path:
        return self.path / "renders"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def ply(self) -> Path:
        return self.path / "point_cloud.ply"

    @property
    def instances(self) -> Path:
        return self.path / "instances.npz"

    @property
    def exports(self) -> Path:
        return self.path / "exports"

    def stage_checkpoints(self, stage: str) -> Path:
        """Folder of one stage's checkpoints."""
        return self.checkpoints / stage

    def checkpoint_path(self, stage: str, step: int) -> Path:
        return self.stage_checkpoints(stage) / f"step_{step:06d}.pt"

    def metrics_path(self, stage: str) -> Path:
        return self.metrics / f"{stage}.json"

    def render_dir(self, stage: str) -> Path:
        return self.renders / stage

    # ---- config.yml -------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The whole ``config.yml`` as a dict ({} when absent)."""
        if not self.config_path.is_file():
            return {}
        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise RunError(f"{self.config_path}: not valid YAML ({e})") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise RunError(f"{self.config_path}: expected a mapping at the top level")
        return data

    def write_config_section(self, section: str, value: Any) -> None:
        """Set one top-level key of ``config.yml`` (a dataclass or plain data), atomically."""
        data = self.read_config()
        data[section] = dataclass_to_dict(value) if dataclasses.is_dataclass(value) else value
        write_text(self.config_path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None))

    def load_config_section(self, section: str, cls: type[T]) -> T:
        """Rebuild dataclass ``cls`` from one section of ``config.yml``."""
        data = self.read_config()
        if section not in data:
            raise RunError(f"{self.config_path}: no '{section}' section (was this stage run here?)")
        return dict_to_dataclass(cls, data[section], where=f"{self.config_path}:{section}")


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
