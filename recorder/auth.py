"""How the recorder logs in the way GWS expects: HTTP basic, a cookie jar, and CSRF.

GWS answers any GET with `X-CSRF-HEADER` (the name of the header to send) and `X-CSRF-TOKEN`
(its value); every POST/PUT/DELETE without them fails with 403.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDictProxy


class LoginError(Exception):
    """The server refused the credentials or the login URL; the message says which."""


@dataclass(frozen=True, slots=True)
class Handover:
    """What a session learnt over one transport that the next must carry: cookies, CSRF pair."""

    cookies: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Credentials:
    """What the user gave: never stored in a tape (the redactor masks every header it makes)."""

    user: str | None = None
    password: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)

    def authorization(self) -> dict[str, str]:
        """The HTTP basic Authorization header, or nothing without a user."""
        if self.user is None:
            return {}
        token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def carrying(self, handover: Handover) -> Credentials:
        """These credentials with what another transport learnt (its wins on a clash)."""
        if not handover.cookies and not handover.headers:
            return self
        return Credentials(
            user=self.user,
            password=self.password,
            headers={**self.headers, **handover.headers},
            cookies={**self.cookies, **handover.cookies},
        )


@dataclass(slots=True)
class Csrf:
    """The CSRF header pair, learnt from the latest response that carried it."""

    header: str | None = None
    token: str | None = None

    def learn(self, headers: CIMultiDictProxy[str] | Mapping[str, str]) -> None:
        name, token = headers.get("X-CSRF-HEADER"), headers.get("X-CSRF-TOKEN")
        if name and token:
            self.header, self.token = name, token

    def headers(self) -> dict[str, str]:
        return {self.header: self.token} if self.header and self.token else {}

    def secret_names(self) -> list[str]:
        """Header names to redact besides the standard ones (GWS may name its own)."""
        return [self.header] if self.header else []


def session_headers(credentials: Credentials) -> dict[str, str]:
    return {
        "Content-Type": "application/json;charset=UTF-8",
        **credentials.authorization(),
        **credentials.headers,
    }
