"""Stage orchestration: the shared loop, checkpoints, schedules, losses and the training stages."""

from .photometric import l1, photometric_loss, psnr, ssim
from .pipeline import PipelineConfig, pipeline_preset, run_pipeline
from ..run.directory import RunDir
from .stage0 import Stage0Config, export_run, run_train, stage0_preset, train_stage0

__all__ = [
    "PipelineConfig",
    "RunDir",
    "Stage0Config",
    "export_run",
    "l1",
    "photometric_loss",
    "pipeline_preset",
    "psnr",
    "run_pipeline",
    "run_train",
    "ssim",
    "stage0_preset",
    "train_stage0",
]
