"""NTU sample names: `S001C002P003R002A013` = setup, camera, performer, replication, action.

Usage:
    sid = SampleId.parse("S001C002P003R002A013")
    sid.label          # 12 (0-based action class)
    SampleId.from_path("/data/nturgb+d_skeletons/S001C002P003R002A013.skeleton")
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import SampleNameError

NAME_PATTERN = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")
NAME_LENGTH = 20


@dataclass(frozen=True, order=True)
class SampleId:
    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    @classmethod
    def parse(cls, name: str) -> SampleId:
        match = NAME_PATTERN.match(name)
        if match is None:
            raise SampleNameError(name)
        setup, camera, performer, replication, action = (int(g) for g in match.groups())
        if min(setup, camera, performer, replication, action) == 0:
            raise SampleNameError(name, "a field is 000; NTU numbers start at 1")
        return cls(setup, camera, performer, replication, action)

    @classmethod
    def from_path(cls, path: str | Path) -> SampleId:
        """The sample a file belongs to: `<name>.skeleton` or `<name>_rgb.avi`."""
        stem = Path(path).name
        for suffix in (".skeleton", "_rgb.avi"):
            if stem.endswith(suffix):
                return cls.parse(stem[: -len(suffix)])
        raise SampleNameError(stem, "expected <name>.skeleton or <name>_rgb.avi")

    @property
    def name(self) -> str:
        return (
            f"S{self.setup:03d}C{self.camera:03d}P{self.performer:03d}"
            f"R{self.replication:03d}A{self.action:03d}"
        )

    @property
    def label(self) -> int:
        """0-based class index (A001 -> 0)."""
        return self.action - 1

    def __str__(self) -> str:
        return self.name
