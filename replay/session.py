"""One client's server-side Bayeux session (subscriptions, queue, held connect), the decoding of
incoming batches, and the wire replies and error strings the server builds."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson

from replay.events import HeldConnect, Reply, Wire
from tape.bayeux import (
    BayeuxDecodeError,
    BayeuxErrorString,
    InvalidJson,
    InvalidShape,
    Message,
    decode_frame,
    load_json,
)
from tape.channel import ChannelError, ChannelPattern, is_meta

Batch = bytes | bytearray | str | list[Any] | dict[str, Any]
SERVER_VERSION = "1.0"
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
CLIENT_ID_BYTES = 20  # 160 random bits; 31 base-36 characters, as long as Faye's
CLIENT_ID_LENGTH = 31
MATCH_CACHE = 256  # channels whose subscription test a session remembers


@dataclass(slots=True)
class Held:
    """A held connect: its prepared reply, and (long-polling) the other replies of its batch,
    which share its HTTP response. Mutable: the reply gains advice if the session ends."""

    info: HeldConnect
    reply: Wire
    pending: list[Wire] = field(default_factory=list)


@dataclass(slots=True)
class Session:
    """Mutable per-client state, owned by BayeuxServer; never handed out."""

    client_id: str
    last_seen: float  # when the last connect was answered (or the handshake): expiry runs from it
    patterns: dict[str, ChannelPattern] = field(default_factory=dict)
    queue: deque[Wire] = field(default_factory=deque)  # bounded by the server (maxlen)
    held: Held | None = None
    push: Hashable | None = None  # the WebSocket to push queued messages on, if any
    connected: bool = False  # a first connect was answered
    dropped: int = 0  # messages that fell off a full queue
    matched: dict[str, bool] = field(default_factory=dict)  # channel -> subscribed, cached


def new_client_id(random_bytes: Callable[[int], bytes]) -> str:
    """A base-36 clientId with 160 random bits, zero-padded to a fixed length."""
    number = int.from_bytes(random_bytes(CLIENT_ID_BYTES), "big")
    digits = []
    while number:
        number, digit = divmod(number, 36)
        digits.append(_BASE36[digit])
    return "".join(reversed(digits)).rjust(CLIENT_ID_LENGTH, "0")


def _version_key(version: str) -> tuple[int, ...]:
    # "1.0beta" -> (1, 0): Bayeux 1.0 "version" is major.minor with an optional suffix.
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def version_acceptable(message: Message) -> bool:
    """Bayeux 1.0 "handshake request": the client's minimumVersion (else its version) must not
    be above ours. Versions we cannot read are let through rather than refused."""
    wanted = message.minimum_version or message.version
    key = _version_key(wanted) if wanted else ()
    return not key or key <= _version_key(SERVER_VERSION)


def error(code: int, args: tuple[str, ...], text: str) -> str:
    # Codes and wording follow the Bayeux error codes CometD and Faye share (300 version,
    # 301 connection types, 402 missing parameter, 403 forbidden, 404/405 channel).
    return BayeuxErrorString(code, args, text).format()


def answer(request: Message, **fields: Any) -> Wire:
    """A reply on the request's channel; "Meta Message Field Definitions": it echoes the id."""
    wire: Wire = {"channel": request.channel, **fields}
    if "id" in request.fields:
        wire["id"] = request.fields["id"]  # echoed as sent: a number stays a number
    return wire


def sendable(data: Any) -> bool:
    """Whether `data` can be delivered, in a message in a batch: orjson, like most encoders,
    refuses what nests more than 255 deep, which a client may well send (its parser takes
    1,024)."""
    try:
        orjson.dumps([{"data": data}])
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


def unknown_client(request: Message, text: str) -> Wire:
    # Bayeux 1.0 "reconnect advice field": handshake tells the client to start a new session.
    advice = {"reconnect": "handshake", "interval": 0}
    return answer(request, successful=False, error=text, advice=advice)


def rejection(obj: Any, reason: str) -> Wire:
    """The 400 reply to an undecodable message: on its channel when it has one."""
    channel = obj.get("channel") if isinstance(obj, dict) else None
    wire: Wire = {"channel": channel if isinstance(channel, str) else "/meta/unknown"}
    wire |= {"successful": False, "error": error(400, (), reason)}
    request_id = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(request_id, str | int) and not isinstance(request_id, bool):
        wire["id"] = request_id
    return wire


def subscribed(found: Session, channel: str) -> bool:
    hit = found.matched.get(channel)
    if hit is None:
        hit = any(pattern.matches(channel) for pattern in found.patterns.values())
        if len(found.matched) < MATCH_CACHE:  # a timeline's channels are few; bounded anyway
            found.matched[channel] = hit
    return hit


def subscription_error(names: tuple[str, ...]) -> str | None:
    if not names:
        return error(402, ("subscription",), "Missing required parameter")
    for name in names:
        try:
            ChannelPattern.parse(name)
        except ChannelError:
            return error(405, (name,), "Invalid channel")
        if is_meta(name):
            # Bayeux 1.0 "Meta Channels": they are not subscribable.
            return error(403, (name,), "Forbidden channel")
    return None


def decode(batch: Batch) -> list[Message] | Reply:
    """The batch's messages, or a 400 reply naming the first problem (Bayeux 1.0 "Messages")."""
    if isinstance(batch, bytearray):
        batch = bytes(batch)
    if isinstance(batch, bytes | str):
        try:
            return decode_frame(batch)
        except InvalidJson as exc:
            return _rejected(None, exc)
        except BayeuxDecodeError:
            # Valid JSON (the codec's reading of it: numbers beyond a double included): find
            # the culprit below, to answer on its channel.
            batch = load_json(batch)
    objects = [batch] if isinstance(batch, dict) else batch
    if not isinstance(objects, list):
        return _rejected(None, InvalidShape("frame must be a JSON array or object"))
    messages = []
    for index, obj in enumerate(objects):
        try:
            messages.append(Message.from_wire(obj, index))
        except BayeuxDecodeError as exc:
            return _rejected(obj, exc)
    return messages


def _rejected(obj: Any, exc: BayeuxDecodeError) -> Reply:
    return Reply([rejection(obj, f"{exc.kind}: {exc}")], bad_request=True)
