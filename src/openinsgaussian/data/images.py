"""Image file reading: one place that decodes, composites RGBA and resizes to the camera size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG")


def find_image(stem_path: Path) -> Path | None:
    """``stem_path`` as given if it exists, else the first existing ``stem_path + suffix``."""
    if stem_path.suffix and stem_path.is_file():
        return stem_path
    for suf in IMAGE_SUFFIXES:
        cand = stem_path.with_name(stem_path.name + suf)
        if cand.is_file():
            return cand
    return None


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(path, f"cannot decode image ({e})", "re-export or remove the frame") from None


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(path, f"cannot read image header ({e})") from None


def load_rgb(path: Path, size: tuple[int, int], background: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Decode ``path`` to ``[H,W,3]`` uint8 at ``size = (W, H)``; RGBA is composited on ``background``."""
    from PIL import Image

    img = _open(Path(path))
    if img.size != tuple(size):
        img = img.resize(tuple(size), Image.Resampling.BICUBIC if img.mode != "P" else Image.Resampling.NEAREST)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
        rgb = rgba[..., :3] * rgba[..., 3:4] + bg * (1.0 - rgba[..., 3:4])
        return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit grayscale: PIL's convert clips
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            top = 1.0 if arr.max() <= 1.0 else top
        gray = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def load_alpha(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """``[H,W]`` float32 alpha at ``size``, or None when the image has no alpha channel."""
    from PIL import Image

    img = _open(Path(path))
    if img.mode not in ("RGBA", "LA"):
        return None
    if img.size != tuple(size):
        img = img.resize(tuple(size), Image.Resampling.BILINEAR)
    return np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0


def load_uint16(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A 16-bit single-channel PNG (depth / instance / label map) at ``size``, nearest resampling."""
    from PIL import Image

    img = _open(Path(path))
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise DataError(path, f"expected a single-channel 16-bit map, got shape {arr.shape}")
    if img.size != tuple(size):
        arr = np.asarray(Image.fromarray(arr.astype(np.int32)).resize(tuple(size), Image.Resampling.NEAREST))
    return arr.astype(np.uint16) if arr.dtype != np.uint16 else arr
