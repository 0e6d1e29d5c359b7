import numpy as np

from openinsgaussian.evaluate.plots import plot_per_class_iou
from openinsgaussian.evaluate.scannet import evaluate_scannet


def test_plot_per_class_iou_writes_png(tmp_path):
    gt = np.array([1, 1, 5, 2])
    res = evaluate_scannet(
        lambda names: np.array([1, 2, names.index("chair") + 1, 2]),
        gt,
        np.ones(4),
        lists=["scannet19", "scannet10"],
    )
    out = plot_per_class_iou(res, tmp_path / "plots" / "iou.png", title="scene")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temp file
    plot_per_class_iou(res["lists"]["scannet10"], tmp_path / "one.png")
    assert (tmp_path / "one.png").is_file()
