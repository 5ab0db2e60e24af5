"""How the recorder reaches a server: TLS options and the forward proxy, for both transports.

`NetOptions` is what the user asked for on the command line; each transport turns it into its
library's settings (an `ssl.SSLContext`, a proxy URL). `describe_error` turns a connection
error of either library into one line, naming TLS problems in words `_first_failure` in
recorder/record.py turns into advice (`--cacert`, `--cert`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

# Said by describe_error, read by recorder.record._first_failure.
UNTRUSTED = "TLS certificate not trusted"
CLIENT_CERT = "TLS client certificate refused or missing"


@dataclass(frozen=True, slots=True)
class NetOptions:
    cacert: Path | None = None  # a CA bundle to trust instead of the system store
    cert: Path | None = None  # a client certificate, for mutual TLS
    key: Path | None = None  # its private key (None: inside `cert`)
    insecure: bool = False  # no certificate verification at all
    proxy: str | None = None  # None: from HTTPS_PROXY/HTTP_PROXY/NO_PROXY; "": no proxy

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for an https:// or wss:// server."""
        context = ssl.create_default_context(cafile=str(self.cacert) if self.cacert else None)
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    @property
    def trust_env(self) -> bool:
        """Whether the proxy comes from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)."""
        return self.proxy is None

    @property
    def proxy_url(self) -> str | None:
        """The proxy given on the command line; None for none or the environment's."""
        return self.proxy or None


def describe_error(exc: BaseException) -> str:
    """One line for a failed connection or request, from aiohttp or websockets."""
    tls = _ssl_error(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        detail = getattr(tls, "verify_message", None) or tls.reason or str(tls)
        return f"{UNTRUSTED} ({detail})"
    if tls is not None and _is_client_cert_alert(tls):
        return f"{CLIENT_CERT} ({getattr(tls, 'reason', None) or tls})"
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    if type(exc).__name__ == "ClientProxyConnectionError":  # aiohttp's, not imported here
        return f"cannot reach the proxy: {exc}; check --proxy or HTTPS_PROXY/HTTP_PROXY"
    if isinstance(exc, ImportError) and "socks" in str(exc).lower():
        return "SOCKS proxies are not supported; give an http:// proxy (--proxy or HTTPS_PROXY)"
    return str(exc) or type(exc).__name__


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind `exc`, if any: aiohttp wraps it, websockets chains it."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        # aiohttp's connector errors hold the ssl error (and some are ssl errors themselves,
        # without its fields): look inside first
        inner = [getattr(current, name, None) for name in ("certificate_error", "os_error")]
        found = [e for e in inner if isinstance(e, BaseException)]
        if found:
            todo += found
            continue
        if isinstance(current, ssl.SSLError):
            return current
        todo += [current.__cause__, current.__context__]
    return None


def _is_client_cert_alert(error: ssl.SSLError) -> bool:
    reason = (getattr(error, "reason", None) or str(error)).upper()
    return (
        "CERTIFICATE_REQUIRED" in reason
        or "BAD_CERTIFICATE" in reason
        or ("HANDSHAKE_FAILURE" in reason and "ALERT" in reason)
    )
