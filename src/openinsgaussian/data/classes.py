"""Class vocabularies: the NYU40 names and the ScanNet 19 / 15 / 10-class evaluation lists.

Plain data shared by the oracle language source, the ScanNet protocol and the scene inventory
(``openins instances --vocab scannet19``); :func:`canonical_class_name` equates spellings
("shower curtain", "showercurtain").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: NYU40 class names by id (0 = unlabelled). Spaced spellings, which read better as text queries;
#: :func:`canonical_class_name` equates them with the run-together keys some tools use
#: ("showercurtain", "otherfurniture").
NYU40_NAMES: dict[int, str] = {
    1: "wall",
    2: "floor",
    3: "cabinet",
    4: "bed",
    5: "chair",
    6: "sofa",
    7: "table",
    8: "door",
    9: "window",
    10: "bookshelf",
    11: "picture",
    12: "counter",
    13: "blinds",
    14: "desk",
    15: "shelves",
    16: "curtain",
    17: "dresser",
    18: "pillow",
    19: "mirror",
    20: "floor mat",
    21: "clothes",
    22: "ceiling",
    23: "books",
    24: "refrigerator",
    25: "television",
    26: "paper",
    27: "towel",
    28: "shower curtain",
    29: "box",
    30: "whiteboard",
    31: "person",
    32: "night stand",
    33: "toilet",
    34: "sink",
    35: "lamp",
    36: "bathtub",
    37: "bag",
    38: "other structure",
    39: "other furniture",
    40: "other prop",
}

_ALIASES = {"refridgerator": "refrigerator", "tv": "television"}


def canonical_class_name(name: str) -> str:
    """Lower-case alphanumerics only, so "Shower curtain", "shower_curtain" and "showercurtain"
    name one class (plus NYU40's historical misspelling "refridgerator")."""
    key = re.sub(r"[^0-9a-z]+", "", name.lower())
    return _ALIASES.get(key, key)


@dataclass(frozen=True)
class ClassList:
    """One evaluation vocabulary: NYU40 ids in list order (class index c = position + 1)."""

    name: str
    ids: tuple[int, ...]

    @property
    def names(self) -> list[str]:
        return [NYU40_NAMES[i] for i in self.ids]

    @property
    def num_classes(self) -> int:
        return len(self.ids)


SCANNET19 = ClassList(
    "scannet19", (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36)
)
SCANNET15 = ClassList("scannet15", tuple(i for i in SCANNET19.ids if i not in (11, 24, 28, 36)))
SCANNET10 = ClassList("scannet10", (1, 2, 4, 5, 6, 7, 8, 9, 10, 33))
CLASS_LISTS: dict[str, ClassList] = {c.name: c for c in (SCANNET19, SCANNET15, SCANNET10)}
