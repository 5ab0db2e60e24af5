"""`cometd-tape record`: record a CometD server's traffic into a tape, as a Bayeux client."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import sys
import time
from pathlib import Path
from typing import TypeVar

import click
import duckdb

from recorder.auth import Credentials
from recorder.net import NetOptions
from recorder.record import Outcome, Recorder, RecordError, RecordOptions
from recorder.replay_ext import parse_replay_from
from recorder.status import Status
from tape.cli import (
    TapeClaim,
    claim_set,
    claim_tape,
    output_tape_options,
    rotate_option,
    run_loop,
)
from tape.frame import Session
from tape.privacy import Privacy, privacy_options
from tape.reader import TapeReader
from tape.redact import redact_text, redact_url
from tape.runtime import keep_pandas_out_of_arrow, settle_gc
from tape.schema import TapeError, package_version
from tape.segments import Rotation, SegmentedWriter, set_folder
from tape.session import SessionLog, new_session_id
from tape.writer import TapeWriter

T = TypeVar("T")

DEFAULT_CHANNELS = ("/v2/me/outbound", "/me/internal")


def _pairs(values: tuple[str, ...], sep: str, what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, found, rest = value.partition(sep)
        if not found or not key.strip():
            raise click.BadParameter(f"{value!r} is not {what}")
        out[key.strip()] = rest.strip()
    return out


@click.command("record")
@click.argument("url")
@click.option(
    "-c",
    "--channel",
    "channels",
    multiple=True,
    help="Channel to subscribe to (repeat; wildcards /* and /** work). "
    "Default: /v2/me/outbound and /me/internal.",
)
@output_tape_options
@rotate_option
@click.option(
    "--transport",
    type=click.Choice(["auto", "long-polling", "websocket"]),
    default="auto",
    show_default=True,
    help="Bayeux transport. auto: WebSocket when the server offers it and the upgrade works, "
    "else long-polling (GWS); the other two are strict.",
)
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA certificates (PEM) to trust for an https:// server, instead of the system's.",
)
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Client certificate (PEM) for mutual TLS; its key in it or in --key.",
)
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The private key (PEM) of --cert.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Do not verify the server's certificate (says so on stderr and in the session's labels).",
)
@click.option(
    "--proxy",
    metavar="URL",
    help="Forward proxy (http://host:port) for both transports; default: HTTPS_PROXY, "
    "HTTP_PROXY and NO_PROXY from the environment; '' for none.",
)
@click.option(
    "--user", help="User for HTTP basic auth; the password comes from --password-env or a prompt."
)
@click.option("--password-env", metavar="VAR", help="Environment variable holding the password.")
@click.option(
    "--login-url",
    help="URL to GET first for cookies and the CSRF pair "
    "(default with --user: <origin>/api/v2/me).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME:VALUE",
    help="Extra request header (repeat).",
)
@click.option(
    "--cookie", "cookies", multiple=True, metavar="NAME=VALUE", help="Extra cookie (repeat)."
)
@click.option(
    "--url-suffix/--no-url-suffix",
    default=False,
    show_default=True,
    help="Append the message type to the URL (/handshake, /connect...).",
)
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@click.option(
    "--max-messages", type=click.IntRange(min=1), help="Stop after this many delivered messages."
)
@click.option(
    "--ext",
    "extensions",
    multiple=True,
    type=click.Choice(["replay"]),
    help="Bayeux extension to use. replay: Salesforce-style replay (ext.replay): each channel "
    "resumes after the last replayId recorded when the session is handshaken again.",
)
@click.option(
    "--replay-from",
    multiple=True,
    metavar="ID|CHANNEL=ID",
    help="With --ext replay: where to start, -1 new events only (default), -2 all the server "
    "retains, or an id to start after; CHANNEL=ID for one channel (repeat).",
)
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the session (repeat)."
)
@privacy_options
def record_command(
    url: str,
    channels: tuple[str, ...],
    output: Path,
    append: bool,
    overwrite: bool,
    rotation: Rotation | None,
    transport: str,
    cacert: Path | None,
    cert: Path | None,
    key: Path | None,
    insecure: bool,
    proxy: str | None,
    user: str | None,
    password_env: str | None,
    login_url: str | None,
    headers: tuple[str, ...],
    cookies: tuple[str, ...],
    url_suffix: bool,
    duration: float | None,
    max_messages: int | None,
    extensions: tuple[str, ...],
    replay_from: tuple[str, ...],
    labels: tuple[str, ...],
    privacy: Privacy,
) -> None:
    """Record a CometD server's traffic into a tape, as a Bayeux client.

    Handshakes, subscribes, and records every frame sent and received until stopped by
    Ctrl-C/SIGTERM, --duration or --max-messages. Credentials never reach the tape.
    """
    if key is not None and cert is None:
        raise click.BadParameter(
            "--key goes with --cert (the client certificate)", param_hint="--key"
        )
    if proxy and not proxy.lower().startswith(("http://", "https://")):
        raise click.BadParameter(
            f"{redact_text(proxy)!r} is not an http:// or https:// proxy URL (SOCKS is not "
            "supported); give http://host:port",
            param_hint="--proxy",
        )
    net = NetOptions(cacert=cacert, cert=cert, key=key, insecure=insecure, proxy=proxy)
    tags = _pairs(labels, "=", "KEY=VALUE")
    if insecure:
        click.echo(
            "warning: --insecure: the server's certificate is not verified; anyone on the path "
            "can read and change this recording",
            err=True,
        )
        tags["insecure"] = "true"
    credentials = Credentials(
        user=user,
        password=_password(user, password_env),
        headers=_pairs(headers, ":", "NAME:VALUE"),
        cookies=_pairs(cookies, "=", "NAME=VALUE"),
    )
    options = RecordOptions(
        url=url,
        channels=channels or DEFAULT_CHANNELS,
        transport=transport,
        net=net,
        credentials=credentials,
        login_url=login_url or _default_login(url, user),
        url_suffix=url_suffix,
        duration=duration,
        max_messages=max_messages,
        replay=_replay(extensions, replay_from),
    )
    keep_pandas_out_of_arrow()  # the writer runs in this process
    settle_gc()
    if rotation is not None:
        output = set_folder(output)
        claim = claim_set(output, append=append, overwrite=overwrite, keep_old_until_done=True)
    else:
        claim = claim_tape(output, append=append, overwrite=overwrite, keep_old_until_done=True)
    outcome = run_loop(
        record_to_tape(options, output, tags, claim=claim, privacy=privacy, rotation=rotation)
    )
    if not outcome.ok:
        raise click.ClickException(outcome.reason)


def _replay(
    extensions: tuple[str, ...], values: tuple[str, ...]
) -> tuple[int, dict[str, int]] | None:
    if "replay" not in extensions:
        if values:
            raise click.BadParameter("goes with --ext replay", param_hint="--replay-from")
        return None
    try:
        return parse_replay_from(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--replay-from") from None


def _password(user: str | None, env: str | None) -> str | None:
    if env is not None:
        if env not in os.environ:
            raise click.BadParameter(
                f"environment variable {env} is not set", param_hint="--password-env"
            )
        return os.environ[env]
    if user is not None:
        return getpass.getpass(f"password for {user}: ")
    return None


def _default_login(url: str, user: str | None) -> str | None:
    if user is None:
        return None
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/api/v2/me"


async def record_to_tape(
    options: RecordOptions,
    output: Path,
    labels: dict[str, str] | None = None,
    *,
    claim: TapeClaim | None = None,
    privacy: Privacy | None = None,
    rotation: Rotation | None = None,
) -> Outcome:
    """Record one session into `output` (with a `rotation`: a set of segments in the folder
    `output`, tape/segments.py); returns why it stopped.

    With a `claim` (tape.cli.claim_tape), a run that fails before the server sent a Bayeux
    frame gives it up: a tape it created is removed (a retry with the same path then starts
    clean), and one it was to overwrite is put back."""
    writer: TapeWriter | SegmentedWriter
    if rotation is not None:
        writer = SegmentedWriter(output, rotation, privacy=privacy)
    else:
        writer = TapeWriter(output, privacy=privacy)
    session = Session(
        session_id=new_session_id(),
        mode="record",
        endpoint=redact_url(options.url),
        transport=options.transport,
        channels=options.channels,
        recorder_version=package_version(),
        labels=labels or {},
    )
    log = SessionLog(writer, session)
    status = Status(log.session.session_id, options.transport)
    recorder = Recorder(options, log, status)
    _on_signals(recorder)
    ticker = asyncio.get_running_loop().create_task(_show_status(status))
    try:
        outcome = await recorder.run()
    except RecordError as exc:
        outcome = Outcome(str(exc), ok=False)
    finally:
        ticker.cancel()
    with contextlib.suppress(TapeError):  # frames held for a failed writer go with it
        log.release()
    log.close(outcome.reason)  # a failed writer still stores this row if it can (end_reason)
    try:
        writer.close()
    except TapeError as exc:
        outcome = Outcome(str(exc), ok=False)
    status.frames = log.frames  # the final `stopped` lifecycle frame too
    if claim is not None:
        if claim.created and not outcome.ok and not _server_spoke(output):
            kept = " (the tape it was to replace is kept)" if claim.aside else ""
            claim.give_up()
            return Outcome(
                f"{outcome.reason}\n(no tape written: the server sent nothing){kept}", ok=False
            )
        claim.keep()
    clear = "\r\x1b[2K" if sys.stderr.isatty() else ""
    if outcome.ok:  # on failure the error line says why; do not say it twice
        click.echo(clear + status.summary(outcome.reason), err=True)
        clear = ""
    click.echo(f"{clear}tape: {output}  session {log.session.session_id}", err=True)
    return outcome


def _server_spoke(tape: Path) -> bool:
    """Whether the tape (or the first segment of a set) holds a Bayeux frame from the server
    (a reply, even a refusal)."""
    if tape.is_dir():
        segments = sorted(tape.glob("*.duckdb"))
        if not segments:
            return False
        tape = segments[0]
    try:
        with TapeReader(tape) as reader:
            rows = reader.conn.execute(
                "SELECT count(*) FROM frames WHERE kind = 'bayeux' AND direction = 'in' "
                "AND parse_error IS NULL"
            ).fetchall()
    except (TapeError, duckdb.Error):
        return True  # cannot tell: keep it
    return bool(rows[0][0])


def _on_signals(recorder: Recorder) -> None:
    loop = asyncio.get_running_loop()
    for sig, name in ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")):
        loop.add_signal_handler(sig, recorder.stop, f"stopped by {name}")


async def _show_status(status: Status) -> None:
    """A live line on a terminal; a log line every 5 s when stderr is a file or pipe."""
    tty = sys.stderr.isatty()
    while True:
        await asyncio.sleep(0.5 if tty else 5.0)
        if tty:
            sys.stderr.write("\r\x1b[2K" + status.line(time.monotonic())[:200])
        else:
            sys.stderr.write(status.line(time.monotonic()) + "\n")
        sys.stderr.flush()
