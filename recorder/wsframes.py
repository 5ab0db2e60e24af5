"""Reading WebSocket frames out of a byte stream (RFC 6455), sans I/O, for the capture proxy,
which passes the bytes on untouched and records the messages they carry.

Messages are reassembled from fragments; masked (client) payloads are unmasked; with
permessage-deflate (RSV1) the message is inflated, keeping the window across messages (which
also reads senders that reset it). Control frames are not messages: a close is reported.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_TAIL = b"\x00\x00\xff\xff"


class FrameError(Exception):
    """The bytes are not WebSocket frames; `code` is the close code that says so."""

    def __init__(self, message: str, code: int = 1002) -> None:
        super().__init__(message)
        self.code = code


class WsReader:
    def __init__(
        self,
        on_message: Callable[[int, bytes], None],
        on_close: Callable[[], None] = lambda: None,
        *,
        max_size: int = 64 * 2**20,
        on_control: Callable[[int, bytes], None] | None = None,
        strict: bool = False,
    ) -> None:
        """`on_control(opcode, payload)`, if given, sees every control frame (close, ping,
        pong) before `on_close` is called for a close.

        `strict` is for a client that negotiated no extension, reading a server: every frame
        RFC 6455 forbids is a FrameError (reserved bits or opcodes, a masked frame, a long or
        fragmented control frame, a continuation out of place), and `max_size` bounds a whole
        message. The proxy reads leniently: it records what passed, it does not police it."""
        self._on_message, self._on_close = on_message, on_close
        self._on_control = on_control
        self._strict = strict
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._opcode = 0
        self._compressed = False
        self._inflater: zlib._Decompress | None = None
        self._max = max_size
        self._need = 0  # the bytes the frame at the buffer's start needs, once its head is read

    def feed(self, data: bytes) -> None:
        if self._buffer:  # a frame cut by the last read: one copy, and the fast path goes on
            self._buffer += data
            if len(self._buffer) < self._need:  # still not whole: no copy (a 64 MiB frame
                return  # comes in ~1000 reads, and a copy of the buffer each was quadratic)
            data = bytes(self._buffer)
            self._buffer.clear()
        if not self._parts:
            data = data[self._whole_texts(data) :]
        if data:
            self._buffer += data
            self._need = 0
            while self._one():
                pass

    def _whole_texts(self, data: bytes) -> int:
        """The fast path, for what a server sends most: whole unmasked text frames, read one
        after another straight out of `data` (one copy each, no per-frame call of `_one`).
        Returns where it stopped: at anything else, which `_one` then reads as before."""
        on_message, limit = self._on_message, self._max
        pos, end = 0, len(data)
        try:
            while end - pos >= 2 and data[pos] == 0x81:  # FIN, no extension bits, text
                length = data[pos + 1]  # the mask bit is clear, so this is the 7-bit length
                start = pos + 2
                if length == 126:
                    if end - pos < 4:
                        break
                    length, start = (data[pos + 2] << 8) | data[pos + 3], pos + 4
                elif length >= 127:  # a 64-bit length (rare), or a masked frame: `_one`
                    break
                if start + length > end or length > limit:
                    break
                pos = start + length
                on_message(TEXT, data[start:pos])
        except BaseException:
            self._buffer += data[pos:]  # as `_one` leaves it: the frames not yet read stay
            raise
        if pos:  # what `_one` would have set reading these frames
            self._opcode, self._compressed = TEXT, False
        return pos

    def _one(self) -> bool:
        buf = self._buffer
        if len(buf) < 2:
            return False
        first, second = buf[0], buf[1]
        length, pos = second & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return False
            length, pos = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return False
            length, pos = int.from_bytes(buf[2:10], "big"), 10
        if length > self._max:
            raise FrameError(f"a frame of {length} bytes is over the {self._max}-byte limit")
        mask = None
        if second & 0x80:
            if len(buf) < pos + 4:
                return False
            mask, pos = bytes(buf[pos : pos + 4]), pos + 4
        if len(buf) < pos + length:
            self._need = pos + length
            return False
        if self._strict:
            self._check(first, length, mask)
        payload = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        if mask is not None and payload:
            payload = unmask(payload, mask)
        opcode = first & 0x0F
        if opcode >= 0x8:
            if self._on_control is not None:
                self._on_control(opcode, payload)
            if opcode == CLOSE:
                self._on_close()
            return True
        if opcode != 0:
            self._opcode, self._compressed, self._parts = opcode, bool(first & 0x40), []
        self._parts.append(payload)
        if first & 0x80:  # FIN
            message = payload if len(self._parts) == 1 else b"".join(self._parts)
            self._parts = []
            if self._compressed:
                if self._inflater is None:
                    self._inflater = zlib.decompressobj(-15)
                try:
                    message = self._inflater.decompress(message + _TAIL)
                except zlib.error as exc:
                    raise FrameError(f"a compressed message does not inflate: {exc}") from None
            self._on_message(self._opcode, message)
        return True

    def _check(self, first: int, length: int, mask: bytes | None) -> None:
        opcode = first & 0x0F
        if first & 0x70:
            raise FrameError("reserved bits set, with no extension negotiated")
        if mask is not None:
            raise FrameError("a masked frame from the server")
        if opcode >= 0x8:
            if opcode not in (CLOSE, PING, PONG):
                raise FrameError(f"reserved opcode {opcode:#x}")
            if not first & 0x80 or length > 125:
                raise FrameError("a control frame fragmented or over 125 bytes")
            if opcode == CLOSE and length == 1:
                raise FrameError("a close frame with a 1-byte payload")
            return
        if opcode not in (0, TEXT, BINARY):
            raise FrameError(f"reserved opcode {opcode:#x}")
        if (opcode == 0) != bool(self._parts):
            raise FrameError("a continuation frame out of place")
        if sum(map(len, self._parts)) + length > self._max:
            raise FrameError(f"a message over the {self._max}-byte limit", code=1009)


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the repeating 4-byte mask, as one big-integer operation (no per-byte loop)."""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def mask_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """One final (FIN) frame as a client sends it: masked with the 4-byte `mask`."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 2**16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + (unmask(payload, mask) if payload else b"")
