"""The run directory: its layout, ``config.yml``, checkpoints and the ``instances.npz`` artifact.

The bottom of the layer stack beside :mod:`openinsgaussian.io` and :mod:`openinsgaussian.errors`:
every stage and command finds its inputs and writes its outputs through these modules, and they
know nothing of any stage's math. Loading a finished run as typed objects (config, scene, model,
instances) is :func:`openinsgaussian.train.finished.load_run`, which needs the training config
schema; the library face is :func:`openinsgaussian.open_run`.

Modules: ``directory`` (:class:`RunDir`, paths, ``config.yml`` sections), ``serialize``
(dataclass <-> plain data, dotted overrides, config hashes), ``checkpoints`` (atomic checkpoint
files), ``instances`` (``instances.npz``), ``query_config`` (:class:`QueryConfig`, the saved
text-query defaults).
"""

from .checkpoints import latest_model_state, list_checkpoints, load_checkpoint, save_checkpoint
from .directory import STAGES, RunDir
from .instances import Instances, load_instances, save_instances
from .query_config import DEFAULT_MIN_RELEVANCY, DEFAULT_PROMPT_TEMPLATE, QueryConfig
from .serialize import apply_overrides, config_hash, dataclass_to_dict, dict_to_dataclass

__all__ = [
    "DEFAULT_MIN_RELEVANCY",
    "DEFAULT_PROMPT_TEMPLATE",
    "STAGES",
    "Instances",
    "QueryConfig",
    "RunDir",
    "apply_overrides",
    "config_hash",
    "dataclass_to_dict",
    "dict_to_dataclass",
    "latest_model_state",
    "list_checkpoints",
    "load_checkpoint",
    "load_instances",
    "save_checkpoint",
    "save_instances",
]
