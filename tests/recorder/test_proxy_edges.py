"""The capture proxy at its edges: Ctrl-C on the CLI keeps every frame, a response delimited by
the upstream closing, a client half-close, an interim 100 Continue, and credentials in the
upstream URL never reaching the client or the tape."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import duckdb

from tests.agent import basic
from tests.constants import ROOT, TIMEOUT
from tests.recorder.test_proxy import proxied

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_upstream(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def exchange(port: int, request: bytes, *, half_close: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    if half_close:
        writer.write_eof()
    data = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    return data


def frames(tape: Path) -> list[tuple[str, str, int | None, bytes]]:
    conn = duckdb.connect(str(tape), read_only=True)
    rows = conn.execute(
        "SELECT direction, kind, http_status, raw FROM frames WHERE kind <> 'lifecycle' "
        "ORDER BY session_id, seq"
    ).fetchall()
    return [(d, k, s, bytes(r)) for d, k, s, r in rows]


async def test_a_body_ended_by_the_upstream_closing_and_a_half_close(tmp_path: Path) -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello, world")
        await writer.drain()
        writer.close()

    tape = tmp_path / "t.duckdb"
    async with raw_upstream(http10) as port, proxied(f"http://127.0.0.1:{port}", tape) as proxy:
        got = await exchange(proxy.port, b"GET /x HTTP/1.0\r\n\r\n", half_close=True)
    assert got.endswith(b"hello, world")
    assert frames(tape) == [
        ("out", "http-request", None, b""),
        ("in", "http-response", 200, b"hello, world"),
    ]


async def test_an_interim_100_continue_is_not_taken_for_the_answer(tmp_path: Path) -> None:
    async def continues(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await reader.readexactly(4)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
        writer.write(body[::-1])
        await writer.drain()
        writer.close()

    tape = tmp_path / "c.duckdb"
    async with raw_upstream(continues) as port, proxied(f"http://127.0.0.1:{port}", tape) as p:
        got = await exchange(
            p.port,
            b"POST /y HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nabcd",
        )
    assert got.endswith(b"dcba")
    assert frames(tape) == [
        ("out", "http-request", None, b"abcd"),
        ("in", "http-response", 201, b"dcba"),
    ]


async def test_credentials_in_the_upstream_url_go_nowhere(tmp_path: Path) -> None:
    tape = tmp_path / "creds.duckdb"
    async with (
        proxied("http://admin:s3cr3t@127.0.0.1:9", tape) as proxy,
        aiohttp.ClientSession() as http,
        http.get(proxy.origin + "/api/v2/me", headers=basic("agent", "pw")) as response,
    ):
        assert response.status == 502
        text = await response.text()
    assert "s3cr3t" not in text
    assert b"s3cr3t" not in tape.read_bytes()
    assert all(b"s3cr3t" not in raw for *_, raw in frames(tape))


def test_ctrl_c_on_the_cli_keeps_every_frame(tmp_path: Path) -> None:
    """Ctrl-C at a terminal signals the whole process group, the tape writer's child too."""
    tape = tmp_path / "cli.duckdb"
    sim = subprocess.Popen(
        [sys.executable, "-m", "tape", "simulate", "--listen", "127.0.0.1:0", "--seed", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    proxy = None
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()
        origin = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert origin, line
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tape",
                "proxy",
                "--upstream",
                origin.group(1),
                "--listen",
                "127.0.0.1:0",
                "-o",
                str(tape),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert proxy.stderr is not None
        line = proxy.stderr.readline()
        found = re.search(r"proxy (http://127\.0\.0\.1:\d+)", line)
        assert found, line

        async def traffic() -> None:
            async with aiohttp.ClientSession(headers=basic("agent", "agent")) as http:
                for _ in range(50):
                    async with http.get(found.group(1) + "/api/v2/me") as response:
                        assert response.status == 200

        asyncio.run(traffic())
        os.killpg(proxy.pid, signal.SIGINT)
        _, err = proxy.communicate(timeout=TIMEOUT * 3)
        assert proxy.returncode == 0, err
        assert "stopped: 50 HTTP exchanges" in err
    finally:
        for proc in (p for p in (proxy, sim) if p is not None):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(TIMEOUT)
    conn = duckdb.connect(str(tape), read_only=True)
    kinds = dict(conn.execute("SELECT kind, count(*) FROM frames GROUP BY kind").fetchall())
    assert kinds == {"http-request": 50, "http-response": 50}
    ended = conn.execute("SELECT count(*) FROM sessions WHERE ended_ns IS NULL").fetchall()[0][0]
    assert ended == 0  # every session was closed, after the signal


async def test_an_answer_before_the_body_is_all_in_is_passed_on_alone(tmp_path: Path) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await writer.drain()
        await reader.read()  # the rest of the body arrives; the server ignores it
        writer.close()

    tape = tmp_path / "early.duckdb"
    async with raw_upstream(refuse) as port, proxied(f"http://127.0.0.1:{port}", tape) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        head = await asyncio.wait_for(reader.readuntil(b"big"), TIMEOUT)
        writer.write(b"defghij")  # the rest of the body, after the answer
        writer.write_eof()
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
    assert head.startswith(b"HTTP/1.1 413")
    assert b"400" not in rest  # no answer of the proxy's own after the server's
    assert frames(tape) == [
        ("out", "http-request", None, b"abc"),
        ("in", "http-response", 413, b"big"),
    ]


def test_a_proxy_that_cannot_listen_leaves_no_tape_and_an_existing_tape_is_refused(
    tmp_path: Path,
) -> None:
    import socket

    tape = tmp_path / "p.duckdb"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["--upstream", "http://127.0.0.1:9", "--listen", f"127.0.0.1:{port}"]

        def proxy() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "tape", "proxy", *args, "-o", str(tape)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=TIMEOUT * 3,
                check=False,
            )

        result = proxy()
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not tape.exists()
    tape.write_bytes(b"not a tape, and not ours to replace")
    result = proxy()  # refused before it would listen, so the port need not be free
    assert result.returncode == 1
    assert "exists; add --append to add to it, --overwrite to replace it" in result.stderr
    assert tape.read_bytes() == b"not a tape, and not ours to replace"


async def test_a_head_seen_before_skips_the_parser_with_the_same_bytes_and_record(
    tmp_path: Path,
) -> None:
    """A request or answer whose head the parser has read before, whole in one read, is taken
    without the parser: upstream, client and tape get what the parser's way gave the first."""
    seen: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"Content-Length: (\d+)", head)
                body = await reader.readexactly(int(length.group(1)) if length else 0)
                seen.append(head + body)
                answer = b'{"n":%03d}' % len(seen)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n" + answer)
                await writer.drain()
        writer.close()

    def request(n: int) -> bytes:
        body = b'{"i":%03d}' % n
        return (
            b"POST /r/%d HTTP/1.1\r\nHost: proxy\r\nX-CSRF-TOKEN: abc\r\nCookie: JSESSIONID=s1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (n, len(body), body)
        )

    tape = tmp_path / "quick.duckdb"
    got: list[bytes] = []
    async with raw_upstream(echo) as port, proxied(f"http://127.0.0.1:{port}", tape) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        for n in range(6):
            if n == 4:  # the head, then the body in a later read: the parser's way again
                writer.write(request(n)[:-4])
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(request(n)[-4:])
            else:
                writer.write(request(n))
            got.append(await asyncio.wait_for(reader.readuntil(b"}"), TIMEOUT))
        writer.write(request(6) + request(7))  # two in one read: the parser's way
        got.append(await asyncio.wait_for(reader.readuntil(b"}"), TIMEOUT))
        got.append(await asyncio.wait_for(reader.readuntil(b"}"), TIMEOUT))
        writer.close()
        quick = proxy.stats.quick
    assert quick >= 6  # requests 1, 2, 3, 5 and answers 1, 2, 3 at least (answers share a head)
    port_line = b"Host: 127.0.0.1:%d\r\n" % port
    assert seen == [request(n).replace(b"Host: proxy\r\n", port_line) for n in range(8)]
    assert got == [
        b'HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{"n":%03d}' % (n + 1) for n in range(8)
    ]
    conn = duckdb.connect(str(tape), read_only=True)
    rows = conn.execute(
        "SELECT direction, kind, http_method, http_path, http_status, headers, raw FROM frames "
        "WHERE kind <> 'lifecycle' ORDER BY seq"
    ).fetchall()
    requests = [row for row in rows if row[0] == "out"]
    answers = [row for row in rows if row[0] == "in"]
    assert len(requests) == len(answers) == 8
    first_request, first_answer = requests[0], answers[0]
    assert "abc" not in first_request[5]  # the CSRF token's name is redacted as ever
    for n, (out, answer) in enumerate(zip(requests, answers, strict=True)):
        assert out[:3] == first_request[:3]
        assert out[3] == f"/r/{n}"
        assert out[5] == first_request[5]
        assert bytes(out[6]) == b'{"i":%03d}' % n
        assert answer[:6] == first_answer[:6]
        assert bytes(answer[6]) == b'{"n":%03d}' % (n + 1)
