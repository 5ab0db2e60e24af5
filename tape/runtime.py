"""Process settings for the long-running processes that record: recorder, proxy, writer child.

Each changes the whole process, so only our own entry points call them, never the library.
"""

from __future__ import annotations

import gc
import sys
import threading

_lock = threading.Lock()
_pandas_kept_out = False


def settle_gc() -> None:
    """Python's collector measured 5-7% of a writer's CPU here, rescanning the modules loaded at
    start (DuckDB, pyarrow, aiohttp) and the frames in flight, which hold no cycles. Freeze what
    is loaded so far, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


class _NoPandas:
    """A meta-path finder under which `import pandas` fails."""

    def find_spec(self, name: str, *_: object) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("not for pyarrow's first look", name=name)


def keep_pandas_out_of_arrow() -> None:
    """Stop pyarrow importing pandas just to ask whether our lists are pandas objects.

    The first time pyarrow converts anything it tries `import pandas` (if installed): ~50 MB of
    RSS and ~1 s of CPU, measured here, in a recorder that never uses pandas. pyarrow tries once
    and remembers the answer, so we let that one try fail. For the rest of the process pyarrow
    then treats pandas objects as plain sequences until an explicit pandas call (`to_pandas`,
    `from_pandas`) makes it look again: fine for a recorder, wrong for a library user, which is
    why only our recording processes call this. If pandas is already imported, nothing changes.
    """
    global _pandas_kept_out
    with _lock:
        if _pandas_kept_out or "pandas" in sys.modules:
            return
        import pyarrow as pa

        finder = _NoPandas()
        sys.meta_path.insert(0, finder)
        try:
            pa.array([0])
        finally:
            sys.meta_path.remove(finder)
        _pandas_kept_out = True
