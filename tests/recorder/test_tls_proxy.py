"""The recorder over TLS and through a forward proxy, on both transports, against real peers on
127.0.0.1: Faye over HTTPS (node's https module) with a CA made here (trustme), and proxy.py
(PyPI `proxy.py`, a maintained HTTP proxy that tunnels with CONNECT) whose access log shows
that it carried the traffic. Untrusted certificates fail in one line naming --cacert; mutual
TLS is accepted with a client certificate and refused without one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import orjson
import pytest
import trustme

from recorder.cli import record_to_tape
from recorder.net import NetOptions
from recorder.record import Outcome, RecordOptions
from tests.constants import ROOT, TIMEOUT
from tests.peers.faye import FayeServer, TlsFiles

TRANSPORTS = ["long-polling", "websocket"]
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "WSS_PROXY", "WS_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@dataclass
class Pki:
    cacert: Path  # the CA that signed the server's certificate
    server: TlsFiles
    client_cert: Path  # a client certificate, signed by the client CA the server may require
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, client_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = client_ca.issue_cert("recorder@example.test")
    files = {
        "ca.pem": ca.cert_pem.bytes(),
        "client-ca.pem": client_ca.cert_pem.bytes(),
        "server.pem": b"".join(blob.bytes() for blob in server.cert_chain_pems),
        "server.key": server.private_key_pem.bytes(),
        "client.pem": b"".join(blob.bytes() for blob in client.cert_chain_pems),
        "client.key": client.private_key_pem.bytes(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return Pki(
        cacert=folder / "ca.pem",
        server=TlsFiles(folder / "server.pem", folder / "server.key"),
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )


@pytest.fixture
def tls_faye(pki: Pki) -> Iterator[FayeServer]:
    with FayeServer(tls=pki.server) as server:
        yield server


@pytest.fixture
def mtls_faye(pki: Pki) -> Iterator[FayeServer]:
    tls = TlsFiles(pki.server.cert, pki.server.key, client_ca=pki.cacert.parent / "client-ca.pem")
    with FayeServer(tls=tls) as server:
        yield server


@dataclass
class ForwardProxy:
    url: str
    log: Path

    def tunnels(self, port: int) -> list[str]:
        """The access-log lines of the CONNECT tunnels it carried to 127.0.0.1:`port` (each is
        written when its tunnel closes)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if f"CONNECT 127.0.0.1:{port} " in line]

    async def wait_tunnels(self, port: int, count: int) -> list[str]:
        deadline = time.monotonic() + TIMEOUT
        while len(self.tunnels(port)) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.tunnels(port)


@pytest.fixture
def forward_proxy(tmp_path: Path) -> Iterator[ForwardProxy]:
    """proxy.py on a free 127.0.0.1 port, one worker, logging each connection it carried."""
    port_file, log = tmp_path / "proxy.port", tmp_path / "proxy.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "--hostname",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--num-acceptors",
            "1",
            "--num-workers",
            "1",
            "--log-level",
            "INFO",
            "--log-file",
            str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"proxy.py did not start: {err[-2000:]}")
            time.sleep(0.05)
        yield ForwardProxy(f"http://127.0.0.1:{int(port_file.read_text())}", log)
    finally:
        proc.terminate()
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(TIMEOUT)


async def record_some(
    faye: FayeServer, options: RecordOptions, tape: Path, count: int = 5
) -> Outcome:
    """Record while Faye publishes `count` messages on /t; the recorder stops at `count`."""
    task = asyncio.get_running_loop().create_task(record_to_tape(options, tape))
    try:
        await faye.await_subscribed(["/t"])
    except Exception:
        if task.done():  # it failed first: say why
            pytest.fail(f"the recorder stopped: {task.result().reason}")
        raise
    await faye.apublish("/t", [{"n": i} for i in range(count)])
    return await asyncio.wait_for(task, TIMEOUT)


def recorded(tape: Path) -> tuple[list[object], str, list[dict[str, object]]]:
    """The data of the /t messages, the session's transport, and its lifecycle events."""
    with duckdb.connect(str(tape), read_only=True) as conn:
        data = [
            orjson.loads(row[0])
            for row in conn.execute(
                "SELECT data FROM message_data WHERE channel = '/t' ORDER BY seq, idx"
            ).fetchall()
        ]
        row = conn.execute("SELECT transport FROM sessions").fetchone()
        lifecycle = [
            orjson.loads(bytes(raw))
            for (raw,) in conn.execute(
                "SELECT raw FROM frames WHERE kind = 'lifecycle' ORDER BY seq"
            ).fetchall()
        ]
    assert row is not None
    return data, str(row[0]), lifecycle


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_records_through_the_proxy_to_a_tls_server_with_cacert(
    transport: str, tls_faye: FayeServer, forward_proxy: ForwardProxy, pki: Pki, tmp_path: Path
) -> None:
    assert tls_faye.url.startswith("https://")
    options = RecordOptions(
        url=tls_faye.url,
        channels=("/t",),
        transport=transport,
        net=NetOptions(cacert=pki.cacert, proxy=forward_proxy.url),
        max_messages=5,
    )
    tape = tmp_path / "tls.duckdb"
    outcome = await record_some(tls_faye, options, tape)
    assert outcome.ok, outcome.reason
    data, used, _ = recorded(tape)
    assert data == [{"n": i} for i in range(5)]
    assert used == transport
    # The proxy carried it: a CONNECT tunnel to Faye's port (the recorder has closed them all)
    assert await forward_proxy.wait_tunnels(tls_faye.port, 1)


async def test_auto_takes_the_proxy_from_https_proxy_for_both_transports(
    tls_faye: FayeServer,
    forward_proxy: ForwardProxy,
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No --proxy: HTTPS_PROXY is honoured by aiohttp (the handshake over long-polling) and by
    websockets (the upgrade that follows): two tunnels."""
    monkeypatch.setenv("HTTPS_PROXY", forward_proxy.url)
    options = RecordOptions(
        url=tls_faye.url, channels=("/t",), net=NetOptions(cacert=pki.cacert), max_messages=5
    )
    tape = tmp_path / "env.duckdb"
    outcome = await record_some(tls_faye, options, tape)
    assert outcome.ok, outcome.reason
    data, used, lifecycle = recorded(tape)
    assert data == [{"n": i} for i in range(5)]
    assert used == "websocket"
    assert [e["chosen"] for e in lifecycle if e["event"] == "transport"] == ["websocket"]
    assert len(await forward_proxy.wait_tunnels(tls_faye.port, 2)) >= 2


async def test_no_proxy_bypasses_the_proxy(
    tls_faye: FayeServer,
    forward_proxy: ForwardProxy,
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", forward_proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    options = RecordOptions(
        url=tls_faye.url, channels=("/t",), net=NetOptions(cacert=pki.cacert), max_messages=5
    )
    outcome = await record_some(tls_faye, options, tmp_path / "direct.duckdb")
    assert outcome.ok, outcome.reason
    await asyncio.sleep(0.3)
    assert forward_proxy.tunnels(tls_faye.port) == []


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in PROXY_VARS}
    return subprocess.run(
        [sys.executable, "-m", "tape", "record", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        check=False,
    )


@pytest.mark.parametrize("transport", [*TRANSPORTS, "auto"])
def test_an_untrusted_certificate_is_one_line_naming_cacert(
    transport: str, tls_faye: FayeServer, tmp_path: Path
) -> None:
    result = run_cli(
        tls_faye.url, "-o", str(tmp_path / "t.duckdb"), "-c", "/t", "--transport", transport
    )
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "--cacert" in errors[0]
    assert "--insecure" in errors[0]
    assert "not trusted" in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_insecure_records_without_verifying(
    transport: str, tls_faye: FayeServer, tmp_path: Path
) -> None:
    options = RecordOptions(
        url=tls_faye.url,
        channels=("/t",),
        transport=transport,
        net=NetOptions(insecure=True),
        max_messages=5,
    )
    outcome = await record_some(tls_faye, options, tmp_path / "insecure.duckdb")
    assert outcome.ok, outcome.reason


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_mutual_tls_is_accepted_with_a_client_certificate(
    transport: str, mtls_faye: FayeServer, pki: Pki, tmp_path: Path
) -> None:
    options = RecordOptions(
        url=mtls_faye.url,
        channels=("/t",),
        transport=transport,
        net=NetOptions(cacert=pki.cacert, cert=pki.client_cert, key=pki.client_key),
        max_messages=5,
    )
    tape = tmp_path / "mtls.duckdb"
    outcome = await record_some(mtls_faye, options, tape)
    assert outcome.ok, outcome.reason
    assert recorded(tape)[0] == [{"n": i} for i in range(5)]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_mutual_tls_is_refused_without_one(
    transport: str, mtls_faye: FayeServer, pki: Pki, tmp_path: Path
) -> None:
    options = RecordOptions(
        url=mtls_faye.url, channels=("/t",), transport=transport, net=NetOptions(cacert=pki.cacert)
    )
    outcome = await asyncio.wait_for(
        record_to_tape(options, tmp_path / "refused.duckdb"), TIMEOUT * 2
    )
    assert not outcome.ok
    assert "\n" not in outcome.reason
    assert "--cert" in outcome.reason, outcome.reason
