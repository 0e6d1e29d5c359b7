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

``config.yml`` is plain YAML written from dataclasses and read back with ``yaml.safe_load``
(:mod:`.serialize`). This module knows where things are, not what any stage computes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..errors import RunError
from ..io import write_text
from .serialize import dataclass_to_dict, dict_to_dataclass

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
