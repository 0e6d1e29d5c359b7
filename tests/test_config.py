"""Presets carry METHOD §9's published values; every preset builds."""

from dataclasses import replace

import pytest

from openinsgaussian import config
from openinsgaussian.evaluate import lerf_run
from openinsgaussian.instances import association


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


# ---- every documented value of the reproduction presets (METHOD §4, §5, §9) ---------------------


@pytest.mark.parametrize("name", ["scannet", "lerf"])
def test_reproduction_presets_carry_the_public_codes_values(name):
    cfg = config.pipeline_preset(name)
    s0, s1, s2, s3, cb = cfg.stage0, cfg.stage1, cfg.stage2, cfg.stage3, cfg.stage2.codebook
    # stage 0 (3DGS): schedule, loss and learning rates
    assert (s0.iterations, s0.sh_degree, s0.sh_increase_every) == (30_000, 3, 1000)
    assert s0.ssim_lambda == 0.2 and s0.adam_eps == 1e-15 and s0.background == (0.0, 0.0, 0.0)
    assert (s0.lr_means, s0.lr_means_final, s0.lr_means_delay_steps) == (1.6e-4, 1.6e-6, 0)
    assert (s0.lr_sh0, s0.lr_shN) == (2.5e-3, 1.25e-4)
    assert (s0.lr_opacities, s0.lr_scales, s0.lr_quats) == (0.05, 0.005, 0.001)
    # stage 1: instance features
    assert (s1.lr, s1.lambda_s, s1.silhouette, s1.hard_pairs_after) == (1e-3, 0.1, 0.7, 5_000)
    assert s1.keep_empty_masks and (s1.form_s, s1.form_c) == ("code", "code")
    # stage 2: codebook
    assert (s2.lr_coarse, s2.lr_fine, s2.rescale_prob, s2.silhouette) == (1e-4, 1e-3, 0.5, 0.7)
    assert (s2.pseudo_var_thresh, s2.pseudo_keep_large, s2.fine_iterations) == (0.006, 0.8, 20_000)
    assert (s2.k2_max_scale, s2.k2_min_gaussians, s2.k2_visible_alpha) == (0.5, 100, 0.8)
    assert s2.adaptive_k2 and s2.occurrence_gate
    assert (cb.k1, cb.kmeans_iters, cb.coarse_every, cb.fine_every, cb.root_every) == (64, 5, 200, 50, 300)
    assert cb.empty_clusters == "zero" and not cb.update_centers_each_step
    # stage 3: association as the code runs it
    assert (s3.association, s3.pseudo, s3.occurrence_gate) == ("per_leaf", "recompute", True)
    assert (s3.score_thresh, s3.leaf_silhouette, s3.aggregation) == (0.2, 0.8, "attention")
    assert association.SCORE_THRESH == 0.2
    # inputs: LangSplat's cache, CLIP fused with alpha 0.2
    assert (cfg.inputs.masks, cfg.inputs.language, cfg.inputs.clip_mode) == ("sam", "clip", "fused")
    assert cfg.inputs.clip_alpha == 0.2 and config.PreprocessConfig(data="x").alpha == 0.2
    assert (cfg.inputs.paint_order, cfg.inputs.mask_resize) == ("sam", "stride")
    # query / evaluation
    q = cfg.query
    assert (q.min_views_label, q.min_views_select, q.outlier_rule, q.min_after_filter) == (
        2, 5, "all_distances", 10
    )
    assert (q.max_scale, q.min_count, q.top_k) == (0.1, 100, 10)
    assert (lerf_run.ALPHA_THRESHOLD, lerf_run.MAX_SCALE, lerf_run.MIN_COUNT) == (0.7, 0.1, 100)


def test_dataset_specific_values():
    scannet, lerf = config.pipeline_preset("scannet"), config.pipeline_preset("lerf")
    assert (scannet.stage1.iterations, scannet.stage2.coarse_iterations) == (20_000, 20_000)
    assert (lerf.stage1.iterations, lerf.stage2.coarse_iterations) == (10_000, 10_000)
    assert (scannet.stage2.codebook.pos_weight, lerf.stage2.codebook.pos_weight) == (1.0, 0.5)
    assert scannet.stage0.downscale == 2.0 and not scannet.stage0.densify.enabled
    assert not scannet.query.filter and lerf.query.filter
    d = lerf.stage0.densify  # 3DGS densification, the 20 px screen test disabled as in the code
    assert (d.start, d.stop, d.interval, d.grad_threshold, d.percent_dense) == (500, 15_000, 100, 2e-4, 0.01)
    assert (d.min_opacity, d.max_world_size, d.opacity_reset_every) == (0.005, 0.1, 3000)
    assert d.max_screen_size == 0.0
    assert lerf.stage0.downscale == 1.0 and lerf.stage0.max_width == 1600


def test_per_scene_exceptions():
    teatime = config.pipeline_preset("lerf", scene="teatime")
    assert (teatime.stage2.codebook.k1, teatime.stage2.codebook.k2) == (32, 10)
    assert teatime.stage2.codebook.pos_weight == 0.1
    assert config.pipeline_preset("lerf", scene="ramen").stage1.lambda_s == 0.01
    assert config.pipeline_preset("lerf", scene="figurines").stage1.lambda_s == 0.1


# ---- our presets: the fixes on ----------------------------------------------------------------------


def _value(cfg, dotted):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("name", ["synthetic", "capture"])
def test_our_presets_turn_every_fix_on(name):
    cfg, repro = config.pipeline_preset(name), config.pipeline_preset("lerf")
    assert set(config.FIXES) == {
        "inputs.paint_order", "inputs.mask_resize", "stage1.keep_empty_masks",
        "stage2.occurrence_gate", "stage2.codebook.empty_clusters", "stage3.association",
        "stage3.pseudo", "stage3.occurrence_gate",
    }
    for key, fixed in config.FIXES.items():
        assert _value(cfg, key) == fixed, key
        # a fix is a change: the reproduction preset keeps the code's other value
        assert _value(repro, key) != fixed, key


def test_a_plain_preprocess_cache_serves_our_presets():
    """``openins preprocess`` without options paints the cache as ``synthetic`` / ``capture``
    train on it (the reproduction presets ask for ``--paint-order sam``)."""
    default = config.PreprocessConfig(data="x").paint_order
    assert default == config.InputsConfig().paint_order == "area"
    for name in ("synthetic", "capture"):
        assert config.pipeline_preset(name).inputs.paint_order == default


def test_capture_is_the_lerf_schedule_with_the_screen_size_prune():
    cap, lerf = config.pipeline_preset("capture"), config.pipeline_preset("lerf")
    assert cap.preset == "capture"
    assert (cap.stage2.codebook.k1, cap.stage2.codebook.k2, cap.stage2.codebook.pos_weight) == (64, 10, 0.5)
    assert cap.inputs.level == 3 and cap.inputs.masks == "sam" and cap.inputs.language == "clip"
    assert cap.stage0.densify.max_screen_size == 20.0 and lerf.stage0.densify.max_screen_size == 0.0
    assert cap.stage0.iterations == lerf.stage0.iterations == 30_000
    assert cap.query == lerf.query
    # outside the fixes and the prune, capture is the lerf preset
    assert replace(cap.stage1, keep_empty_masks=True) == lerf.stage1
    assert replace(cap.stage0, densify=lerf.stage0.densify) == lerf.stage0
    assert replace(cap.stage3, association="per_leaf", pseudo="recompute", occurrence_gate=True) == lerf.stage3
