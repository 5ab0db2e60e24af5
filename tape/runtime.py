"""Process settings for the long-running processes that record: recorder, proxy, writer child."""

from __future__ import annotations

import gc


def settle_gc() -> None:
    """Python's collector measured 5-7% of a writer's CPU here, rescanning the modules loaded at
    start (DuckDB, pyarrow, aiohttp) and the frames in flight, which hold no cycles. Freeze what
    is loaded so far, and collect the young generation less often."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
