"""The timing tolerance of `cometd-tape diff --timing`: how far a delivery's offset in B may be
from its offset in A (seconds after its session's first delivery), as a share of A's offset,
a fixed time, or both added (`10%`, `50ms`, `10%+50ms`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<unit>%|ms|s)")
_SECONDS = {"ms": 1e-3, "s": 1.0}


@dataclass(frozen=True, slots=True)
class Timing:
    """`relative` (a fraction of A's offset) plus `absolute` (seconds) is the allowance."""

    relative: float = 0.0
    absolute: float = 0.0
    text: str = "0s"

    @classmethod
    def parse(cls, text: str) -> Timing:
        """`10%`, `50ms`, `0.5s`, or a share and a time joined by `+` (`10%+50ms`)."""
        relative = absolute = 0.0
        parts = text.replace(" ", "").split("+")
        for part in parts:
            found = _PART.fullmatch(part)
            if found is None or len(parts) > 2:
                raise ValueError(
                    f"{text!r} is not a timing tolerance: give a share of the offset (10%), a "
                    "time (50ms, 0.5s), or both (10%+50ms)"
                )
            number, unit = float(found["number"]), found["unit"]
            if unit == "%":
                relative += number / 100
            else:
                absolute += number * _SECONDS[unit]
        return cls(relative, absolute, text)

    def allowed(self, offset: float) -> float:
        """How far from `offset` (seconds, in A) a delivery in B may be."""
        return self.relative * abs(offset) + self.absolute
