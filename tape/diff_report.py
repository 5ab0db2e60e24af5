"""How a diff of two traffics reads: the unified-diff hunks per channel and for the exchanges,
the deliveries off time, and one summary line last ("3 deliveries differ on /v2/me/outbound,
1 exchange missing in B"). The CLI prints it; assert_same_traffic raises it."""

from __future__ import annotations

from tape.diff_core import EXCHANGES, Section, TrafficDiff

_PLURAL = {"delivery": "deliveries", "exchange": "exchanges"}


def render(diff: TrafficDiff, *, quiet: bool = False) -> str:
    """The whole report (`quiet`: the summary line alone)."""
    lines: list[str] = []
    if not quiet:
        for section in diff.sections:
            lines += section.hunks
            if section.late:
                lines.append(f"timing on {section.name} (--timing {_tolerance(diff)}):")
                lines += ["  " + line for line in section.late]
    lines.append(summary(diff))
    return "\n".join(lines)


def summary(diff: TrafficDiff) -> str:
    """One line: what differs, or what was found the same."""
    if diff.equal:
        return _same(diff)
    parts = []
    for section in diff.sections:
        parts += _differences(section)
    return ", ".join(parts)


def _differences(section: Section) -> list[str]:
    where = "" if section.name == EXCHANGES else f" on {section.name}"
    parts = []
    if section.differ:
        verb = "differs" if section.differ == 1 else "differ"
        parts.append(f"{_count(section.differ, section.noun)} {verb}{where}")
    if section.missing:
        parts.append(f"{_count(section.missing, section.noun)} missing in B{where}{_none(section)}")
    if section.extra:
        parts.append(f"{_count(section.extra, section.noun)} extra in B{where}{_none(section)}")
    if section.late:
        parts.append(f"{_count(len(section.late), section.noun)} off time{where}")
    return parts


def _none(section: Section) -> str:
    """A hint when one side has no exchanges at all: a recorder's tape has none."""
    in_b = section.compared - section.missing + section.extra
    if section.name != EXCHANGES or (section.compared and in_b):
        return ""
    side = "B" if section.compared else "A"
    return f" ({side} has none: --deliveries-only compares the deliveries alone)"


def _same(diff: TrafficDiff) -> str:
    channels = [s for s in diff.sections if s.name != EXCHANGES]
    deliveries = sum(s.compared for s in channels)
    text = f"same traffic: {_count(deliveries, 'delivery')} on {_count(len(channels), 'channel')}"
    exchanges = [s for s in diff.sections if s.name == EXCHANGES]
    if exchanges:
        text += f", {_count(exchanges[0].compared, 'exchange')}"
    if diff.timing is not None:
        text += f", every delivery on time within {_tolerance(diff)}"
    return text


def _tolerance(diff: TrafficDiff) -> str:
    return diff.timing.text if diff.timing is not None else "-"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun if n == 1 else _PLURAL.get(noun, noun + 's')}"
