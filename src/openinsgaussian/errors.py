"""Error hierarchy: every error a user can cause names the file (or input) and what to do."""

from __future__ import annotations

from pathlib import Path


class OpenInsError(Exception):
    """Base class of all errors raised on purpose by openinsgaussian."""


class DataError(OpenInsError):
    """A scene folder or data file is missing, malformed or inconsistent."""

    def __init__(self, path: str | Path | None, problem: str, hint: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        self.hint = hint
        where = f"{self.path}: " if self.path is not None else ""
        msg = f"{where}{problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class ConfigError(OpenInsError):
    """A configuration value is invalid or two values contradict each other."""


class ModelLoadError(OpenInsError):
    """A model checkpoint (CLIP, SAM) could not be found, downloaded or loaded."""


class BackendError(OpenInsError):
    """A requested compute backend (gsplat, compiled CPU kernels, CUDA) is unavailable."""


class RunError(OpenInsError):
    """A run directory is missing an artifact that a stage needs, or is inconsistent."""
