"""Every configuration dataclass of the package, and the named presets, in one place.

Each component defines its config next to its code (so its fields document themselves where they
are used); this module is the index a user or a script imports from. Presets:

- ``synthetic``: the built-in room, GT masks + oracle language, a CPU-sized schedule, our fixes
  (``FIXES``) of the public code's behaviour on;
- ``scannet``: METHOD's ScanNet schedule (frozen points, 30k/20k/20k/20k, k1/k2 = 64/5, SAM level 0);
- ``lerf``: METHOD's LeRF schedule (densification, 30k/10k/10k/20k, k1/k2 = 64/10, SAM level 3);
  the published per-scene exceptions (teatime, ramen) are in ``SCENE_OVERRIDES`` and are applied
  by scene folder name (``pipeline_preset("lerf", scene="teatime")``);
- ``capture``: a user's own capture: the LeRF schedule with ``FIXES`` and the 3DGS screen-size
  prune on. ``scannet`` and ``lerf`` keep the public code's behaviour (they reproduce papers);
- ``blender``: photometric training only (random init, densification, white background).
"""

from __future__ import annotations

from typing import get_args

from .data.synthetic import SynthConfig
from .data.synthetic_lerf import LerfLayoutConfig
from .perception.preprocess import PreprocessConfig
from .run.query_config import QueryConfig
from .splats.densify import DensifyConfig
from .train.inputs import InputsConfig
from .train.pipeline import FIXES, SCENE_OVERRIDES, PipelineConfig, pipeline_preset
from .train.pipeline import PRESETS as PIPELINE_PRESETS
from .train.stage0 import Preset as _Stage0Preset
from .train.stage0 import Stage0Config, stage0_preset
from .train.stage1 import Stage1Config
from .train.stage2 import Stage2Config
from .train.stage3 import Stage3Config

STAGE0_PRESETS: tuple[str, ...] = get_args(_Stage0Preset)

__all__ = [
    "FIXES",
    "PIPELINE_PRESETS",
    "SCENE_OVERRIDES",
    "STAGE0_PRESETS",
    "DensifyConfig",
    "InputsConfig",
    "LerfLayoutConfig",
    "PipelineConfig",
    "PreprocessConfig",
    "QueryConfig",
    "Stage0Config",
    "Stage1Config",
    "Stage2Config",
    "Stage3Config",
    "SynthConfig",
    "pipeline_preset",
    "stage0_preset",
]
