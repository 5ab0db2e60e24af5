"""A recorded follow-up's data, rewritten to carry the new request's referenceId and handle."""

from __future__ import annotations

from typing import Any

import orjson

from replay.exchange import RecordedExchange


def substitute(
    data: bytes, recorded: RecordedExchange, new_ref: Any, new_handle: str | None
) -> bytes:
    """The recorded data with the recorded referenceId and record handle replaced by the new
    request's (keys referenceId, recordHandle and GSW_RECORD_HANDLE, at any depth)."""
    old_ref, old_handle = recorded.reference_id, recorded.handle
    if (new_ref is None or new_ref == old_ref) and (new_handle in (None, old_handle)):
        return data
    tree = orjson.loads(data)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "referenceId" and new_ref is not None and value == old_ref:
                    value = new_ref
                elif (
                    key in ("recordHandle", "GSW_RECORD_HANDLE")
                    and new_handle is not None
                    and str(value) == old_handle
                ):
                    value = (
                        int(new_handle)
                        if isinstance(value, int)
                        and new_handle.isascii()
                        and new_handle.isdecimal()
                        else new_handle
                    )
                out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return orjson.dumps(walk(tree))
