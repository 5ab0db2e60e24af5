"""What a tape must not keep: secrets by name (redacted) and personal data (masked).

One `Privacy` object says it all, and reaches the last step before any frame is stored
(tape/prepare.py) through the tape writer; the recorder, the proxy and `import` build it from
their command-line options (`privacy_options`).

Redaction: a header, cookie, query or form parameter, or JSON field (a body's, a Bayeux `ext`'s)
whose NAME matches is replaced by `[REDACTED]`. A name is split into word parts at camelCase
and digit boundaries and at anything not a letter or digit (`X-Auth-Token` -> x auth token,
`apiKey` -> api key, `GSW_SESSION_ID` -> gsw session id), and matches when one of its parts is
a default word (`SECRET_WORDS`: token, auth, key, secret, session, password, credential,
cookie, with their plurals and common spellings), or when a part ends with one of the
unambiguous compounds in `SECRET_SUFFIXES` (`accesstoken`, `jsessionid`). Whole parts, not
substrings: `keyboard`, `monkey`, `author` and `possession` are not secrets. A `--redact NAME`
is split the same way and matches a name holding its parts in a row (`--redact pin` matches
`agentPin` and `PIN_CODE`). Bayeux's own fields (`clientId`, `channel`, `advice`...) are never
redacted. In a key/value pair object (`{"key": "apiKey", "value": "..."}`) the pair's name
decides for its `value`; its `key` member is a name, not a secret.

Masking: a field named exactly (case-sensitive) as one of `mask` keeps its place, its value
replaced by `pii:` and 16 hex digits: HMAC-SHA256 of the value (a string's text, anything else
its JSON text), truncated, under `key`. Equal values get equal tokens under one key, so joins
still work; the frame stays valid JSON. The shapes found: a JSON member (`"phoneNumber":
"+1555..."`), a key/value pair object (`{"key": "GSW_PHONE", "value": "..."}`, or `name`
for `key`), a flat key/value list (`[..., "GSW_PHONE", "+1555...", ...]`: the element after
the name, when the name sits at an even index), and a query or form field. The key is given
(an environment variable) or made at random when the Privacy is made: then it lives in the
writing process's memory only, and no later run can reproduce the tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
import orjson

REDACTED = "[REDACTED]"
DEFAULT_MASK = ("phoneNumber", "GSW_PHONE")

# Word parts that make a name a secret's. Plurals and common spellings are listed: parts are
# compared whole.
SECRET_WORDS = frozenset(
    {
        "token",
        "tokens",
        "auth",
        "oauth",
        "authn",
        "authz",
        "authorization",
        "authorisation",
        "authentication",
        "authenticator",
        "key",
        "keys",
        "apikey",
        "secret",
        "secrets",
        "session",
        "sessions",
        "sessionid",
        "sessid",
        "password",
        "passwords",
        "passwd",
        "pwd",
        "passphrase",
        "credential",
        "credentials",
        "cookie",
        "cookies",
    }
)
# Words recognised at the end of a part written without boundaries (`accesstoken`,
# `JSESSIONID`, `PHPSESSID`): only those no common word ends with (not `key`: monkey, turkey;
# not `session`: possession).
SECRET_SUFFIXES = (
    "token",
    "tokens",
    "secret",
    "password",
    "passwd",
    "credential",
    "credentials",
    "cookie",
    "apikey",
    "sessionid",
    "sessid",
)
# Bayeux's own message and advice fields: what analysis and replay read; never redacted.
BAYEUX_FIELDS = frozenset(
    {
        "channel",
        "clientId",
        "id",
        "data",
        "ext",
        "advice",
        "successful",
        "error",
        "subscription",
        "version",
        "minimumVersion",
        "supportedConnectionTypes",
        "connectionType",
        "timestamp",
        "reconnect",
        "interval",
        "timeout",
        "hosts",
        "multiple-clients",
    }
)
_PROTECTED = frozenset(name.lower() for name in BAYEUX_FIELDS)

_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_TOKEN = re.compile(r"pii:[0-9a-f]{16}")
_SCALAR = rb'("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false)'
_CACHE_LIMIT = 4096  # names remembered per Privacy (names come from the wire: bound them)


def split_name(name: str) -> tuple[str, ...]:
    """A name's word parts, lowercased: camelCase, digits and any non-alphanumeric split it
    (`XMLHttpRequest` -> xml http request, `GSW_PHONE` -> gsw phone, `api.key2` -> api key 2)."""
    return tuple(part.lower() for part in _PARTS.findall(name))


class Privacy:
    """What to redact and what to mask, and the masking key. Immutable once made.

    `redact`: names to redact besides the default pattern (split into parts, see above).
    `mask`: field names whose values are masked (exact, case-sensitive); () masks nothing.
    `key`: the HMAC key; None makes a random one, held by this object only (not shown by repr).
    """

    __slots__ = (
        "_hmac",
        "_rules",
        "_secret_cache",
        "_tokens",
        "finder",
        "hints",
        "key",
        "mask",
        "mask_set",
        "members",
        "name_finders",
        "needles",
        "plain_names",
        "redact",
    )

    def __init__(
        self,
        *,
        redact: Iterable[str] = (),
        mask: Iterable[str] = DEFAULT_MASK,
        key: bytes | None = None,
    ) -> None:
        self.redact = tuple(dict.fromkeys(redact))
        self.mask = tuple(dict.fromkeys(mask))
        self.key = secrets.token_bytes(32) if key is None else key
        if not self.key:
            raise ValueError("the masking key is empty")
        self.mask_set = frozenset(self.mask)
        # What a frame holding a masked field must contain, as JSON writes it: the name as a
        # string, whether it is a member's name or a key/value pair's (a bytes search, cheap
        # enough for every received frame).
        self.needles = tuple(orjson.dumps(name) for name in self.mask)
        self.plain_names = tuple(name.encode() for name in self.mask)
        # One literal search each: at memchr speed, where `bytes in` and an alternation of
        # names measured 1.5x and 5x slower on long-poll replies.
        self.name_finders = tuple(re.compile(re.escape(name)) for name in self.plain_names)
        # A masked member with a scalar value, in the bytes: valid JSON has `"NAME"` then `:`
        # only where a member is named NAME (inside a string its quotes would be escaped).
        names = b"|".join(re.escape(name) for name in self.plain_names) or b"(?!)"
        self.members = re.compile(rb'"(?:' + names + rb')"(\s*:\s*)' + _SCALAR)
        # What a received frame must hold to be looked at: a masked name, or a Bayeux `ext`
        # (where a client's credentials travel, and servers such as Faye echo them to every
        # subscriber). One regex pass over a batch of frames, whatever the number of names.
        self.finder = re.compile(rb'"(?:' + (names + b"|" if self.mask else b"") + rb'ext)"')
        self._rules = tuple(r for r in (split_name(n) for n in self.redact) if r)
        # What the lowered bytes of a name matching a --redact rule hold: its longest part.
        self.hints = tuple(max(rule, key=len).encode() for rule in self._rules)
        self._secret_cache: dict[str, bool] = {}
        self._hmac = hmac.new(self.key, digestmod=hashlib.sha256)
        # Values seen lately and their tokens (a desk's few phone numbers recur), in memory.
        self._tokens: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Privacy(redact={self.redact!r}, mask={self.mask!r}, key=...)"

    def __reduce__(self) -> tuple[Any, ...]:
        # To a writer process (over its pipe): the key goes along, in memory, never to a file.
        return (_rebuild, (self.redact, self.mask, self.key))

    # --- names --------------------------------------------------------------------------------

    def is_secret(self, name: str) -> bool:
        """Whether a field, header or parameter of this name is redacted."""
        found = self._secret_cache.get(name)
        if found is None:
            found = self._judge(name)
            if len(self._secret_cache) < _CACHE_LIMIT:
                self._secret_cache[name] = found
        return found

    def _judge(self, name: str) -> bool:
        if name.lower() in _PROTECTED:
            return False
        parts = split_name(name)
        if any(p in SECRET_WORDS or p.endswith(SECRET_SUFFIXES) for p in parts):
            return True
        return any(_holds(parts, rule) for rule in self._rules)

    def is_masked(self, name: str) -> bool:
        return name in self.mask_set

    # --- values -------------------------------------------------------------------------------

    def token(self, value: Any) -> str:
        """`pii:` + 16 hex: the value's HMAC-SHA256 under the key. A string is taken as its
        text, anything else as its JSON text (so 3001 and "3001" give one token); a token
        already is its own token (masking twice, or an exported tape imported, changes
        nothing)."""
        if type(value) is str:
            found = self._tokens.get(value)
            if found is not None:
                return found
            if _TOKEN.fullmatch(value):
                return value
            data = value.encode("utf-8", "surrogatepass")
        else:
            data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        mac = self._hmac.copy()  # the key's pads hashed once, not per value
        mac.update(data)
        token = "pii:" + mac.hexdigest()[:16]
        if type(value) is str:
            if len(self._tokens) >= _CACHE_LIMIT:
                self._tokens.clear()
            self._tokens[value] = token
        return token

    def may_mask(self, raw: bytes) -> bool:
        """False when `raw` cannot hold a masked field (the common case, one search a name)."""
        return any(needle in raw for needle in self.needles)


def _rebuild(redact: tuple[str, ...], mask: tuple[str, ...], key: bytes) -> Privacy:
    return Privacy(redact=redact, mask=mask, key=key)


def _holds(parts: tuple[str, ...], rule: tuple[str, ...]) -> bool:
    n = len(rule)
    return any(parts[i : i + n] == rule for i in range(len(parts) - n + 1))


# Redaction only, by the default pattern: for code that writes no tape (a URL in a message) and
# for library callers that give no Privacy.
REDACT_ONLY = Privacy(mask=())


# --- the command line -------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def privacy_options(command: F) -> F:
    """`--redact NAME`, `--mask FIELD`, `--no-mask`, `--mask-key-env VAR`, given to the command
    as one `privacy` parameter (a Privacy)."""
    options = [
        click.option(
            "--redact",
            "redact_names",
            multiple=True,
            metavar="NAME",
            help="Also redact headers, cookies, parameters and JSON fields named so (repeat; "
            "matched on word parts, case-insensitively). Names with token, auth, key, secret, "
            "session, password, credential or cookie in them are always redacted.",
        ),
        click.option(
            "--mask",
            "mask_fields",
            multiple=True,
            metavar="FIELD",
            help="Replace this field's values with a keyed hash, pii:<16 hex> (repeat; exact "
            f"name). Default: {', '.join(DEFAULT_MASK)}.",
        ),
        click.option(
            "--no-mask",
            is_flag=True,
            help="Mask nothing: personal data is kept in clear (secrets are still redacted).",
        ),
        click.option(
            "--mask-key-env",
            metavar="VAR",
            help="Environment variable holding the masking key, for the same tokens across "
            "tapes. Default: a random key for this run, kept nowhere.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return _privacy_parameter(command)


def _privacy_parameter(command: F) -> F:
    import functools

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["privacy"] = privacy_from_options(
            kwargs.pop("redact_names"),
            kwargs.pop("mask_fields"),
            no_mask=kwargs.pop("no_mask"),
            key_env=kwargs.pop("mask_key_env"),
        )
        return command(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def privacy_from_options(
    redact: Iterable[str],
    mask: Iterable[str],
    *,
    no_mask: bool = False,
    key_env: str | None = None,
    environ: dict[str, str] | None = None,
) -> Privacy:
    """The Privacy the options ask for; click.BadParameter naming the option when they cannot."""
    redact, mask = tuple(redact), tuple(mask)
    for name in redact:
        if not split_name(name):
            raise click.BadParameter(f"{name!r} has no letters or digits", param_hint="--redact")
        if name.lower() in _PROTECTED:
            raise click.BadParameter(
                f"{name} is a Bayeux field that analysis and replay read; it is never redacted",
                param_hint="--redact",
            )
    if no_mask and mask:
        raise click.BadParameter("--no-mask and --mask exclude each other", param_hint="--no-mask")
    key = None
    if key_env is not None:
        env = os.environ if environ is None else environ
        if not env.get(key_env):
            raise click.BadParameter(
                f"environment variable {key_env} is not set (or empty)",
                param_hint="--mask-key-env",
            )
        key = env[key_env].encode("utf-8", "surrogateescape")
    return Privacy(redact=redact, mask=() if no_mask else (mask or DEFAULT_MASK), key=key)
