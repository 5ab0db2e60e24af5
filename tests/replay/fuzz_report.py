"""The fuzz test's failure report (test_fuzz.py): each kind of problem with an example request,
and a summary of the attack."""

from __future__ import annotations

import itertools
import traceback
from collections import Counter
from typing import Any

from tests.replay.fuzz_attack import Attack
from tests.replay.fuzz_clients import GAP, HOLD_MS, Good
from tests.replay.fuzz_hostile import LOAD_BUDGET, REFUSED, SLOW_HEADS, Outcome, refused
from tests.replay.fuzz_watch import Watch, frame_line, innermost


def findings(a: Attack, watch: Watch) -> list[str]:
    outcomes = a.barrage.outcomes
    out = []
    if not a.barrage.finished:
        done = sum(o.ended < float("inf") for o in outcomes)
        out.append(
            f"THE LOAD WAS NOT THROUGH IN {LOAD_BUDGET:.0f} s: {done} of "
            f"{len(a.barrage.requests)} hostile requests answered"
        )
    out += grouped("HTTP 5xx", [o for o in outcomes if (o.status or 0) >= 500])
    not_refused = [
        o
        for o in outcomes
        if refused(a.target, o.request) and o.status is not None and o.status not in REFUSED
    ]
    out += grouped("NOT REFUSED WITHOUT A LOGIN OR A CSRF TOKEN (401/403)", not_refused)
    out += grouped("WEBSOCKETS DROPPED WITHOUT A CLOSE FRAME", [o for o in outcomes if o.dropped])
    out += logged(watch)
    for good in a.goods:
        out += good_findings(good, a, watch)
    return out


def grouped(title: str, items: list[Outcome]) -> list[str]:
    """A count by kind of request, and one example of each kind."""
    if not items:
        return []
    kinds = Counter(o.request.kind for o in items)
    lines = [f"{title}: {len(items)} ({', '.join(f'{k} {n}' for k, n in kinds.most_common())})"]
    for kind in kinds:
        o = next(o for o in items if o.request.kind == kind)
        if o.dropped:
            lines.append(f"  - {o.close}: {o.request}")
            lines.append(f"    (the frame before it on that socket: {o.after or 'none'})")
        else:
            lines.append(f"  - HTTP {o.status}: {o.request}")
    return lines


def _error(exc: BaseException | None) -> tuple[str, str, list[str]]:
    """The exception's type, where it was raised (the innermost frame outside site-packages),
    and those frames, innermost last."""
    if exc is None:
        return "", "", []
    frames = traceback.extract_tb(exc.__traceback__)
    ours = innermost(frames) or frames[-1:]
    lines = [frame_line(f) for f in ours]
    where = f"{ours[-1].filename}:{ours[-1].lineno}" if ours else ""
    return f"{type(exc).__name__}: {str(exc)[:160]}", where, lines


def logged(watch: Watch) -> list[str]:
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for record in watch.records:
        exc = record.exc_info[1] if record.exc_info else None
        what, where, frames = _error(exc)
        source = f"{record.name} logged {record.getMessage()[:100]!r}"
        groups.setdefault((source, what.split(":")[0], where), [0, what, frames])[0] += 1
    for context in watch.contexts:
        what, where, frames = _error(context.get("exception"))
        message = str(context.get("message"))[:100].split("(")[0]
        source = f"the loop's exception handler got {message!r}"
        groups.setdefault((source, what.split(":")[0], where), [0, what, frames])[0] += 1
    if not groups:
        return []
    total = sum(count for count, _, _ in groups.values())
    lines = [f"ERRORS LOGGED: {total}, {len(groups)} distinct"]
    ranked = sorted(groups.items(), key=lambda item: -item[1][0])
    for (source, _, _), (count, what, frames) in ranked[:8]:
        lines.append(f"  - {count} x {source}: {what}")
        lines += [f"        {frame}" for frame in frames]
    return lines + [f"  ... and {len(ranked) - 8} more"] * (len(ranked) > 8)


def longest_gap(good: Good, a: Attack) -> tuple[float, float]:
    points = [a.start, *(t for t in good.receipts if a.start < t < a.end), a.end]
    return max(itertools.pairwise(points), key=lambda p: p[1] - p[0])


def good_findings(good: Good, a: Attack, watch: Watch) -> list[str]:
    name = good.name.upper()
    out = [f"{name}: {text} ({at - a.start:+.2f} s into the load)" for at, text in good.problems]
    out = out[:5] + [f"    ... and {len(out) - 5} more"] * (len(out) > 5)
    since, until = longest_gap(good, a)
    if until - since > GAP:
        out += stalled(good, a, watch, since, until)
    limit = GAP if good.sent else HOLD_MS / 1000 + GAP
    trips = [(t1 - t0, t0) for t0, t1 in good.round_trips if a.start <= t0 <= a.end]
    if trips and max(trips)[0] > limit:
        took, at = max(trips)
        out.append(
            f"{name}: a request took {took:.2f} s to be answered (limit {limit:.1f} s), "
            f"sent {at - a.start:+.2f} s into the load"
        )
    return out + late_acks(good, a)


def stalled(good: Good, a: Attack, watch: Watch, since: float, until: float) -> list[str]:
    """Which hostile requests were in flight: those sent before the silence, biggest first."""
    blocked = max((late for at, late in watch.stalls if since - 0.1 <= at <= until), default=0.0)
    during = [o for o in a.barrage.outcomes if o.started < until and o.ended > since]
    during.sort(key=lambda o: (o.started > since, -len(o.request.body)))
    lines = [
        f"{good.name.upper()} RECEIVED NOTHING FOR {until - since:.2f} s (limit {GAP:.1f} s), "
        f"{since - a.start:+.2f} s to {until - a.start:+.2f} s into the load; the event loop was "
        f"blocked for up to {blocked:.2f} s of it; {len(during)} hostile requests in flight, "
        "e.g.:"
    ]
    lines += [f"  - {o.request}" for o in during[:4]]
    where = [frames for at, frames in watch.blocked_in if since - 0.1 <= at <= until and frames]
    if where:
        lines.append("  the event loop's thread was blocked in:")
        lines += [f"        {frame}" for frame in where[0]]
    return lines


def late_acks(good: Good, a: Attack) -> list[str]:
    """The agent's requests sent during the load whose ack this Bayeux client got late or never."""
    agent = next((g for g in a.goods if g.sent), None)
    if agent is None or good is agent:
        return []
    due = agent.sent_between(a.start, a.end)
    late = sorted((good.acks.get(ref, float("inf")) - t, ref) for ref, t in due.items())
    late = [(took, ref) for took, ref in late if took > GAP]
    if not late:
        return []
    took, ref = late[-1]
    return [
        f"{good.name.upper()}: {len(late)} of {len(due)} acks of the agent's requests came later "
        f"than {GAP:.1f} s or never (e.g. {ref}: {took:.2f} s)"
    ]


def summary(a: Attack, watch: Watch, seed: int) -> str:
    outcomes = a.barrage.outcomes
    via = Counter({"post": "POST", "upgrade": "GET"}.get(o.request.via, "WS") for o in outcomes)
    statuses = Counter(o.status for o in outcomes if o.status is not None)
    closes = Counter(o.close.split(" (")[0] for o in outcomes if o.close)
    given_up = sum(bool(o.note) for o in outcomes)
    trickles = f" ({'; '.join(a.trickles)})" if a.trickles else ""
    lines = [
        f"{a.target.name}: {len(outcomes)} hostile requests {dict(via)} in {a.end - a.start:.1f} s"
        f" (seed {seed}), and {len(SLOW_HEADS)} slow-header connections{trickles}",
        f"    HTTP statuses {dict(sorted(statuses.items()))}; WebSocket closes {dict(closes)}; "
        f"{given_up} given up on",
    ]
    for good in a.goods:
        since, until = longest_gap(good, a)
        count = sum(a.start < t < a.end for t in good.receipts)
        what = f"{count} responses" if good.sent else f"{count} batches, {good.deliveries} messages"
        lines.append(f"    {good.name}: {what}, longest gap {until - since:.2f} s")
    longest = max((late for _, late in watch.stalls), default=0.0)
    lines.append(f"    event loop: longest stall {longest:.2f} s")
    return "\n".join(lines)
