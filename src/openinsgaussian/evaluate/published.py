"""Published ScanNet (METHOD §8.1, §8.3) and LeRF-OVS (§8.2) numbers, beside measured results.

Every value here is **published**, copied from the papers, never measured by this package. All
values are **fractions** in [0, 1] (the unit of ``metrics/scannet.json``): the percentages of
OIG-paper Tab. 1 are divided by 100 (24.73 -> 0.2473), the fractions of OIG-paper Tab. 6 are kept
as printed (.4744 -> 0.4744). Keys of the score dicts are the class-list names of
:data:`openinsgaussian.evaluate.scannet.CLASS_LISTS` (``scannet19`` / ``scannet15`` /
``scannet10``), values ``(mIoU, mAcc)``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedScores:
    """One published row: ScanNet mIoU / mAcc per class list (fractions)."""

    method: str
    """Method name as printed in the paper."""
    source: str
    """Where the numbers come from (paper and table)."""
    scores: dict[str, tuple[float, float]]
    """Class list (scannet19 / scannet15 / scannet10) -> (mIoU, mAcc), fractions."""
    published: bool = True
    """Always True: these numbers are copied from a paper, not measured here."""


TAB1_SOURCE = "OIG-paper Tab. 1; OG-paper Tab. 2"
TAB6_SOURCE = "OIG-paper Tab. 6"


def _row(
    method: str, source: str, v: tuple[float, float, float, float, float, float]
) -> PublishedScores:
    """Row from (19 mIoU, 19 mAcc, 15 mIoU, 15 mAcc, 10 mIoU, 10 mAcc): Tab. 1's column order."""
    return PublishedScores(
        method=method,
        source=source,
        scores={"scannet19": (v[0], v[1]), "scannet15": (v[2], v[3]), "scannet10": (v[4], v[5])},
    )


#: METHOD §8.1: ScanNet text-query 3D semantic segmentation, mean over the 10 scenes (published).
SCANNET_PUBLISHED: dict[str, PublishedScores] = {
    "LangSplat": _row("LangSplat", TAB1_SOURCE, (0.0378, 0.0911, 0.0535, 0.1320, 0.0840, 0.2206)),
    "LEGaussians": _row(
        "LEGaussians", TAB1_SOURCE, (0.0384, 0.1087, 0.0901, 0.2222, 0.1282, 0.2862)
    ),
    "OpenGaussian": _row(
        "OpenGaussian", TAB1_SOURCE, (0.2473, 0.4154, 0.3013, 0.4825, 0.3829, 0.5519)
    ),
    "OpenInsGaussian": _row(
        "OpenInsGaussian", TAB1_SOURCE, (0.3750, 0.5438, 0.3814, 0.5530, 0.5142, 0.6915)
    ),
}


def _scene(
    c10: tuple[float, float], c15: tuple[float, float], c19: tuple[float, float]
) -> dict[str, tuple[float, float]]:
    """Per-scene entry in the column order of Tab. 6 (10-, 15-, 19-class)."""
    return {"scannet10": c10, "scannet15": c15, "scannet19": c19}


#: METHOD §8.3: OpenInsGaussian per-scene ScanNet results (published, OIG-paper Tab. 6).
OIG_SCANNET_PER_SCENE: dict[str, dict[str, tuple[float, float]]] = {
    "scene0000_00": _scene((0.4744, 0.7469), (0.4054, 0.6208), (0.4230, 0.6149)),
    "scene0062_00": _scene((0.4103, 0.6476), (0.2907, 0.5372), (0.2923, 0.5372)),
    "scene0070_00": _scene((0.5227, 0.6100), (0.3899, 0.4497), (0.3498, 0.4086)),
    "scene0097_00": _scene((0.5607, 0.7321), (0.3419, 0.5689), (0.3620, 0.5658)),
    "scene0140_00": _scene((0.5781, 0.7134), (0.3422, 0.4249), (0.2985, 0.3718)),
    "scene0200_00": _scene((0.4767, 0.6554), (0.4336, 0.5452), (0.4341, 0.5452)),
    "scene0347_00": _scene((0.5587, 0.6516), (0.4018, 0.5599), (0.4467, 0.5926)),
    "scene0400_00": _scene((0.5169, 0.6865), (0.4066, 0.5902), (0.4067, 0.5902)),
    "scene0590_00": _scene((0.6052, 0.7445), (0.4517, 0.6253), (0.3952, 0.5609)),
    "scene0645_00": _scene((0.4388, 0.7269), (0.3502, 0.6075), (0.3416, 0.6509)),
}

#: The "Mean" row of OIG-paper Tab. 6 (published).
OIG_SCANNET_PER_SCENE_MEAN: dict[str, tuple[float, float]] = _scene(
    (0.5142, 0.6915), (0.3814, 0.5530), (0.3750, 0.5438)
)

LERF_SOURCE = "OG-paper Tab. 1; OIG-paper Tab. 2"
LERF_ACC50_SOURCE = "OIG-paper Tab. 7"


@dataclass(frozen=True)
class PublishedLerf:
    """One published LeRF-OVS row: per-scene mIoU / mAcc@0.25 (and mAcc@0.5 where printed)."""

    method: str
    source: str
    scores: dict[str, dict[str, float]]
    """Scene (figurines / teatime / ramen / waldo_kitchen / mean) -> {"miou", "macc@0.25"[,
    "macc@0.5"]}, fractions."""
    published: bool = True


def _lerf_row(
    method: str, v: dict[str, tuple[float, float]], acc50: dict[str, float] | None = None
) -> PublishedLerf:
    """Row from Tab. 2's percentages ``{scene: (mIoU, mAcc@0.25)}`` (stored as fractions)."""
    scores: dict[str, dict[str, float]] = {}
    for scene, (miou, acc25) in v.items():
        scores[scene] = {"miou": round(miou / 100.0, 6), "macc@0.25": round(acc25 / 100.0, 6)}
        if acc50 is not None:
            scores[scene]["macc@0.5"] = round(acc50[scene] / 100.0, 6)
    source = LERF_SOURCE + (f"; mAcc@0.5 {LERF_ACC50_SOURCE}" if acc50 else "")
    return PublishedLerf(method=method, source=source, scores=scores)


#: METHOD §8.2: LeRF-OVS 3D object selection, mIoU / mAcc@0.25 per scene and mean (published).
LERF_PUBLISHED: dict[str, PublishedLerf] = {
    "LangSplat": _lerf_row("LangSplat", {
        "figurines": (10.16, 8.93), "teatime": (11.38, 20.34), "ramen": (7.92, 11.27),
        "waldo_kitchen": (9.18, 9.09), "mean": (9.66, 12.41),
    }),
    "LEGaussians": _lerf_row("LEGaussians", {
        "figurines": (17.99, 23.21), "teatime": (19.27, 27.12), "ramen": (15.79, 26.76),
        "waldo_kitchen": (11.78, 18.18), "mean": (16.21, 23.82),
    }),
    "OpenGaussian": _lerf_row("OpenGaussian", {
        "figurines": (39.29, 55.36), "teatime": (60.44, 76.27), "ramen": (31.01, 42.25),
        "waldo_kitchen": (22.70, 31.82), "mean": (38.36, 51.43),
    }),
    "OpenInsGaussian": _lerf_row(
        "OpenInsGaussian",
        {
            "figurines": (53.75, 76.79), "teatime": (58.55, 77.97), "ramen": (26.38, 43.66),
            "waldo_kitchen": (31.78, 50.00), "mean": (42.62, 62.11),
        },
        acc50={"figurines": 58.93, "ramen": 19.72, "teatime": 64.41, "waldo_kitchen": 40.91,
               "mean": 45.99},
    ),
}

__all__ = [
    "LERF_PUBLISHED",
    "LERF_SOURCE",
    "PublishedLerf",
    "OIG_SCANNET_PER_SCENE",
    "OIG_SCANNET_PER_SCENE_MEAN",
    "SCANNET_PUBLISHED",
    "TAB1_SOURCE",
    "TAB6_SOURCE",
    "PublishedScores",
]
