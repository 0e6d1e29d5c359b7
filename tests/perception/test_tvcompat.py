"""torchvision ops fallback: active only when the compiled ops cannot load, and then correct."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import torch

from openinsgaussian.perception.tvcompat import nms_reference


def brute_force_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """Greedy NMS written the slow way: pick the best remaining box, drop its overlaps, repeat."""
    remaining = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep = []
    while remaining:
        i = remaining.pop(0)
        keep.append(i)
        survivors = []
        for j in remaining:
            x1, y1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            x2, y2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = float(max(x2 - x1, 0) * max(y2 - y1, 0))
            a = float((boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1]))
            b = float((boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1]))
            if inter / (a + b - inter) <= thr:
                survivors.append(j)
        remaining = survivors
    return keep


def random_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    wh = torch.rand(n, 2, generator=g) * 30 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


def test_nms_reference_matches_brute_force():
    for seed, thr in ((0, 0.5), (1, 0.3), (2, 0.7)):
        boxes, scores = random_boxes(60, seed)
        assert nms_reference(boxes, scores, thr).tolist() == brute_force_nms(boxes, scores, thr)
    assert nms_reference(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_nms_reference_hand_case():
    # box 1 overlaps box 0 with IoU 81/119 = 0.68 -> dropped at 0.5; box 2 is disjoint.
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 25, 25]])
    scores = torch.tensor([0.9, 0.8, 0.1])
    assert nms_reference(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms_reference(boxes, scores, 0.7).tolist() == [0, 1, 2]


def _run(code: str) -> str:
    helpers = "import torch\n" + inspect.getsource(brute_force_nms) + inspect.getsource(random_boxes)
    script = helpers + textwrap.dedent(code)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_real_environment_nms_works_after_ensure():
    """Whatever this machine's torchvision is, after ensure(): import works and nms is right."""
    out = _run(
        """
        import torch
        from openinsgaussian.perception import tvcompat
        status = tvcompat.torchvision_ops_status()
        active = tvcompat.ensure_torchvision_ops()
        assert active == (status == "broken"), (status, active)
        assert tvcompat.ensure_torchvision_ops() == active  # idempotent
        import torchvision
        boxes, scores = random_boxes(80, 3)
        assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == brute_force_nms(boxes, scores, 0.5)
        idx = torch.randint(0, 3, (80,), generator=torch.Generator().manual_seed(0))
        kept = torchvision.ops.batched_nms(boxes, scores, idx, 0.5).tolist()
        assert len(kept) == len(set(kept)) > 0
        import open_clip, segment_anything.automatic_mask_generator
        print(status, active)
        """
    )
    assert out.split()[0] in ("broken", "loaded", "imported")


def test_working_install_is_left_alone():
    """Detection reporting the ops as present (a normal install): nothing registered or imported."""
    _run(
        """
        import sys, torch
        from openinsgaussian.perception import tvcompat
        tvcompat.torchvision_ops_status = lambda: "loaded"
        assert tvcompat.ensure_torchvision_ops() is False
        assert tvcompat._LIBRARY is None and "torchvision" not in sys.modules
        """
    )


def test_schema_already_present_counts_as_loaded():
    """If ``torchvision::nms`` exists (the compiled library did load), the real detection sees it."""
    _run(
        """
        import sys, torch
        lib = torch.library.Library("torchvision", "FRAGMENT")  # stands in for the loaded _C library
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        from openinsgaussian.perception import tvcompat
        assert tvcompat.torchvision_ops_status() == "loaded"
        assert tvcompat.ensure_torchvision_ops() is False
        assert tvcompat._LIBRARY is None and "torchvision" not in sys.modules
        """
    )
