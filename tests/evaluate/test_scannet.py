import json

import numpy as np
import pytest
import torch

from openinsgaussian.errors import ConfigError, DataError
from openinsgaussian.evaluate.scannet import (
    CLASS_LISTS,
    SCANNET10,
    SCANNET15,
    SCANNET19,
    canonical_class_name,
    evaluate_scannet,
    mean_over_scenes,
    remap_labels,
    scannet_metrics,
)


def test_class_lists_match_the_protocol():
    assert (
        SCANNET19.num_classes == 19 and SCANNET15.num_classes == 15 and SCANNET10.num_classes == 10
    )
    assert set(SCANNET19.ids) - set(SCANNET15.ids) == {
        11,
        24,
        28,
        36,
    }  # picture, fridge, shower curtain, bathtub
    assert SCANNET10.names == [
        "wall",
        "floor",
        "bed",
        "chair",
        "sofa",
        "table",
        "door",
        "window",
        "bookshelf",
        "toilet",
    ]
    assert set(CLASS_LISTS) == {"scannet19", "scannet15", "scannet10"}
    assert canonical_class_name("Shower curtain") == canonical_class_name("showercurtain")
    assert canonical_class_name("refridgerator") == "refrigerator"


def test_remap_labels():
    nyu = np.array([1, 5, 11, 0, 40, 33])
    assert remap_labels(nyu, SCANNET10.ids).tolist() == [1, 4, 0, 0, 0, 10]


def test_metrics_tiny_confusion_by_hand():
    gt = torch.tensor([1, 1, 1, 1, 2, 2, 0, 0])
    pred = torch.tensor([1, 1, 2, 3, 2, 1, 3, 2])
    m = scannet_metrics(pred, gt, num_classes=3)
    # class 1: inter {0,1}, union {0,1,2,3,5} -> 0.4, acc 2/4
    # class 2: inter {4}, union {2,4,5} -> 1/3 (point 7, gt 0, is zeroed first), acc 1/2
    # class 3: absent from GT -> excluded although predicted at point 3
    assert m["present"] == [1, 2]
    assert m["per_class"][1]["iou"] == pytest.approx(0.4) and m["per_class"][2][
        "iou"
    ] == pytest.approx(1 / 3)
    assert m["miou"] == pytest.approx((0.4 + 1 / 3) / 2)
    assert m["macc"] == pytest.approx(0.5)
    assert m["overall_acc"] == pytest.approx(3 / 6)
    assert 3 not in m["per_class"]
    assert (
        scannet_metrics(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), 3)[
            "miou"
        ]
        is None
    )
    with pytest.raises(DataError):
        scannet_metrics(torch.tensor([4]), torch.tensor([1]), 3)
    with pytest.raises(DataError):
        scannet_metrics(torch.tensor([1, 1]), torch.tensor([1]), 3)


def test_evaluate_scannet_protocol_with_opacity_filter():
    # points: wall, wall, chair, picture (not in 15/10), low-opacity chair predicted wrong
    gt = np.array([1, 1, 5, 11, 5])
    opacity = np.array([0.9, 0.9, 0.9, 0.9, 0.05])
    seen = {}

    def predict(names):
        seen[len(names)] = names
        wall, chair = names.index("wall") + 1, names.index("chair") + 1
        pic = names.index("picture") + 1 if "picture" in names else 0
        return torch.tensor([wall, wall, chair, pic, wall])

    out = evaluate_scannet(predict, gt, opacity, meta={"seed": 3, "language": "oracle"})
    assert out["ignored_low_opacity"] == 1 and out["seed"] == 3
    for name in ("scannet19", "scannet15", "scannet10"):
        r = out["lists"][name]
        assert r["miou"] == pytest.approx(1.0) and r["macc"] == pytest.approx(1.0)
    assert set(out["lists"]["scannet19"]["per_class"]) == {"wall", "chair", "picture"}
    assert set(out["lists"]["scannet10"]["per_class"]) == {"wall", "chair"}
    assert seen[19] == SCANNET19.names
    json.dumps(out)  # JSON-able

    # logits: sigmoid(-3) < 0.1 keeps the last point ignored
    out2 = evaluate_scannet(
        predict, gt, np.log(opacity / (1 - opacity)), opacity_is_logit=True, lists=["scannet10"]
    )
    assert out2["ignored_low_opacity"] == 1
    # without the opacity filter the wrong prediction counts: chair IoU 1/2 in the 10-class list
    out3 = evaluate_scannet(predict, gt, np.ones(5), lists=["scannet10"])
    assert out3["lists"]["scannet10"]["per_class"]["chair"]["iou"] == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        evaluate_scannet(predict, gt, opacity, lists=["scannet20"])
    with pytest.raises(DataError):
        evaluate_scannet(predict, gt, opacity[:3])


def test_mean_over_scenes():
    a = {"lists": {"scannet10": {"miou": 0.5, "macc": 0.6}}}
    b = {"lists": {"scannet10": {"miou": 0.3, "macc": 0.4}}}
    m = mean_over_scenes([a, b])["lists"]["scannet10"]
    assert (
        m["miou"] == pytest.approx(0.4)
        and m["macc"] == pytest.approx(0.5)
        and m["scenes_counted"] == 2
    )
