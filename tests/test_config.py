"""Presets carry METHOD §9's published values; every preset builds."""

from openinsgaussian import config


def test_every_preset_builds():
    for name in config.PIPELINE_PRESETS:
        assert config.pipeline_preset(name).preset == name
    for name in config.STAGE0_PRESETS:
        assert config.stage0_preset(name).iterations > 0


def test_dataset_presets_follow_the_published_schedule():
    scannet, lerf = config.pipeline_preset("scannet"), config.pipeline_preset("lerf")
    assert (scannet.stage2.codebook.k1, scannet.stage2.codebook.k2) == (64, 5)
    assert (lerf.stage2.codebook.k1, lerf.stage2.codebook.k2) == (64, 10)
    assert scannet.inputs.level == 0 and lerf.inputs.level == 3
    assert scannet.stage0.iterations == 30000 and scannet.stage0.frozen_points
    assert lerf.stage0.densify.enabled and not lerf.stage0.frozen_points
