import numpy as np
from PIL import Image

from openinsgaussian.data.images import load_rgb


def test_16bit_grayscale_png_keeps_its_range(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (4, 1))  # [4, 16]
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    rgb = load_rgb(path, (16, 4))
    assert rgb.shape == (4, 16, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    np.testing.assert_allclose(rgb[0, :, 0], np.round(ramp[0] / 65535 * 255), atol=1)


def test_rgba_composited_on_background(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]
    path = tmp_path / "a.png"
    Image.fromarray(rgba).save(path)
    rgb = load_rgb(path, (2, 2), background=(1.0, 1.0, 1.0))
    np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(rgb[1, 1], [255, 255, 255])
