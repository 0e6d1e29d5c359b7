"""Helpers shared by the perception tests: tiny model configs, a tiny SAM, block images, scenes.

The models are full open_clip / segment-anything architectures shrunk to a few layers so the
suite stays fast on CPU: an open_clip config around timm's ``convnext_atto`` (same TimmModel
head structure as ConvNeXt-Base-W), a one-layer ViT config, and a 64-pixel SAM.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from openinsgaussian.data.camera import Camera
from openinsgaussian.data.scene import Frame, Scene
from openinsgaussian.io import save_image
from openinsgaussian.perception.tvcompat import import_segment_anything

TINY_CONVNEXT = "oig_test_convnext"
TINY_VIT = "oig_test_vit"

TINY_CONFIGS = {
    TINY_CONVNEXT: {
        "embed_dim": 32,
        "vision_cfg": {"timm_model_name": "convnext_atto", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "timm_drop": 0.0, "timm_drop_path": 0.0, "image_size": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    TINY_VIT: {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
}


def tiny_sam(checkpoint=None):
    """A 64-pixel, one-block SAM with the stock module classes (builder signature of the registry)."""
    import_segment_anything()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    img, emb = 64, 32
    sam = Sam(
        image_encoder=ImageEncoderViT(depth=1, embed_dim=32, img_size=img, mlp_ratio=2.0,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=16,
                                      qkv_bias=True, use_rel_pos=True, global_attn_indexes=(0,), window_size=0,
                                      out_chans=emb),
        prompt_encoder=PromptEncoder(embed_dim=emb, image_embedding_size=(img // 16, img // 16),
                                     input_image_size=(img, img), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=emb, mlp_dim=64, num_heads=2),
                                 transformer_dim=emb, iou_head_depth=1, iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    if checkpoint is not None:
        sam.load_state_dict(torch.load(checkpoint, weights_only=True))
    return sam.eval()


def blocks_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """``[H,W,3]`` uint8: four flat colour blocks plus mild noise (clear segments)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    img[: h // 2, : w // 2] = (200, 30, 30)
    img[: h // 2, w // 2 :] = (30, 200, 30)
    img[h // 2 :, : w // 3] = (30, 30, 200)
    img[h // 2 :, w // 3 :] = (220, 220, 40)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


BLOCK_LABELS = np.array([0, 5, 7, 3, 2])  # instance id -> NYU40 id (chair, table, cabinet, floor)


def make_scene(root: Path, n_train: int = 3, n_test: int = 1, h: int = 48, w: int = 64) -> Scene:
    """A scene of block images with instance and NYU40 label maps (ids 1..4 = the blocks), no points."""
    frames = []
    for i in range(n_train + n_test):
        name = f"{i:06d}"
        img = blocks_image(h, w, seed=i)
        save_image(root / "color" / f"{name}.png", img)
        inst = np.zeros((h, w), np.uint16)
        inst[: h // 2, : w // 2], inst[: h // 2, w // 2 :] = 1, 2
        inst[h // 2 :, : w // 3], inst[h // 2 :, w // 3 :] = 3, 4
        save_image(root / "instance-filt" / f"{name}.png", inst)
        save_image(root / "label-filt" / f"{name}.png", BLOCK_LABELS[inst].astype(np.uint16))
        cam = Camera.from_intrinsics(50.0, 50.0, w / 2, h / 2, w, h, np.eye(4), name=name)
        frames.append(Frame(name=name, camera=cam, image_path=root / "color" / f"{name}.png",
                            instance_path=root / "instance-filt" / f"{name}.png",
                            label_path=root / "label-filt" / f"{name}.png"))
    classes = {1: ("chair", 5), 2: ("table", 7), 3: ("cabinet", 3), 4: ("floor", 2)}
    return Scene(root=root, source="synthetic", train_frames=frames[:n_train], test_frames=frames[n_train:],
                 instance_classes=classes)


def random_masks(m: int, h: int, w: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``[m,H,W]`` bool ellipses plus near-duplicates and nested parts (the shapes SAM's levels
    produce, so every NMS rule fires) and ``[m]`` scores in [0.5, 1); ``ties`` copies the first
    score to three random masks."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out: list[np.ndarray] = []
    for k in range(m):
        if k and g.random() < 0.4:
            base = out[g.integers(len(out))].copy()
            cy, cx, r = g.integers(h), g.integers(w), g.integers(2, max(3, h // 3))
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            out.append(base & ~disk if g.random() < 0.5 else base & disk | (base & (yy % 7 == 0)))
            continue
        cy, cx, ry, rx = g.uniform(0, h), g.uniform(0, w), g.uniform(2, h / 2), g.uniform(2, w / 2)
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1)
    scores = g.uniform(0.5, 1.0, m)
    if ties:
        scores[g.integers(m, size=3)] = scores[0]
    return np.stack(out), scores
