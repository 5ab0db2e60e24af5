"""`analyze report` in a real headless Chromium, checked for what a person sees: one
self-contained file with no console errors; every chart drawn, as wide as the page; each legend
in its line's colour; series told apart; no text cut off at a chart's edge; tick labels
distinct, not overlapping, in regular 1/2/5 x 10^n steps; the latency table before the charts.
A `record` tape (acks and events, no REST requests) shows the delivery and server processing
it has and says what it lacks. Screenshots are written next to the tapes."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import duckdb

from analysis.charts import clock, nice_step, number, time_ticks, value_ticks
from analysis.generate import generate
from replay.simulator import Simulator, SimulatorOptions
from tape.frame import Kind
from tests.agent import basic
from tests.browser import Browser, PageResult
from tests.constants import ROOT, TIMEOUT

CHECK = """(() => {
  const box = el => { const r = el.getBoundingClientRect();
                      return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
  const style = el => el ? getComputedStyle(el) : null;
  const charts = Array.from(document.querySelectorAll('svg.chart')).map(svg => {
    const frame = box(svg);
    const texts = Array.from(svg.querySelectorAll('text')).map(t => ({
      text: t.textContent, box: box(t), fill: style(t).fill}));
    const legend = Array.from(svg.querySelectorAll('g.legend[data-series]')).map(g => {
      const line = svg.querySelector(`g.series[data-series="${g.dataset.series}"] polyline`);
      const swatch = g.querySelector('.swatch');
      return {name: g.querySelector('text').textContent,
              text: style(g.querySelector('text')).fill,
              swatch: style(swatch).stroke, swatchDash: style(swatch).strokeDasharray,
              line: line ? style(line).stroke : null,
              lineDash: line ? style(line).strokeDasharray : null};
    });
    const ticks = axis => Array.from(svg.querySelectorAll(`text.tick.${axis}`)).map(
      t => ({text: t.textContent, box: box(t)}));
    return {title: svg.querySelector('text.title').textContent,
            subtitle: Array.from(svg.querySelectorAll('text.subtitle'))
                        .map(t => t.textContent).join(' '),
            kind: svg.parentElement.className.baseVal ?? svg.parentElement.className,
            frame, width: frame.right - frame.left, height: frame.bottom - frame.top,
            marks: svg.querySelectorAll('rect.bar, polyline').length,
            gaps: svg.querySelectorAll('rect.gap').length,
            texts, legend, x: ticks('x'), y: ticks('y')};
  });
  const external = document.querySelectorAll(
    'script, link, img, iframe, [src^="http"], [href^="http"]').length;
  const headings = Array.from(document.querySelectorAll('h2')).map(
    h => ({text: h.textContent, top: h.getBoundingClientRect().top + scrollY}));
  const tables = Object.fromEntries(Array.from(document.querySelectorAll('section')).filter(
    s => s.querySelector('h2') && s.querySelector('table')).map(s => [
      s.querySelector('h2').textContent,
      Array.from(s.querySelectorAll('tbody tr')).map(
        r => Array.from(r.querySelectorAll('td')).map(td => td.textContent))]));
  const firstChart = document.querySelector('svg.chart');
  return {charts, external, headings, tables, text: document.body.innerText,
          chartsTop: firstChart ? firstChart.getBoundingClientRect().top + scrollY : null,
          scrollWidth: document.documentElement.scrollWidth, innerWidth: innerWidth};
})()"""


# --- what every report must look like ---------------------------------------------------------


def _check_what_a_person_sees(page: PageResult) -> list[dict[str, Any]]:
    assert page.errors == []
    assert page.value["external"] == 0  # nothing to fetch: it opens offline
    assert page.value["scrollWidth"] <= page.value["innerWidth"]  # no sideways scrolling
    charts: list[dict[str, Any]] = page.value["charts"]
    assert charts
    for chart in charts:
        name = chart["title"]
        assert chart["marks"] > 0, f"nothing drawn in {name!r}"
        _check_text_inside(chart)
        _check_legend(chart)
        _check_x_ticks(chart)
        _check_y_ticks(chart)
    return charts


def _check_text_inside(chart: dict[str, Any]) -> None:
    """No text, measured by the browser, falls (even partly) outside its chart."""
    frame = chart["frame"]
    for text in chart["texts"]:
        b = text["box"]
        inside = (
            b["left"] >= frame["left"] - 0.5
            and b["right"] <= frame["right"] + 0.5
            and b["top"] >= frame["top"] - 0.5
            and b["bottom"] <= frame["bottom"] + 0.5
        )
        assert inside, f"{text['text']!r} is cut off at the edge of {chart['title']!r}"


def _check_legend(chart: dict[str, Any]) -> None:
    """Each legend entry is written and drawn in its line's colour and dash, and no two
    series look alike."""
    looks = set()
    for item in chart["legend"]:
        assert item["line"] is not None, f"legend {item['name']!r} has no line"
        assert item["text"] == item["line"], item  # the name in the line's colour, not grey
        assert item["swatch"] == item["line"], item
        assert item["swatchDash"] == item["lineDash"], item
        assert item["text"] != "rgb(51, 51, 51)", item  # the page's default text colour
        looks.add((item["line"], item["lineDash"]))
    assert len(looks) == len(chart["legend"]), f"two series look alike in {chart['title']!r}"
    # A line drawn over an identical one shows through only with its own dash pattern.
    dashes = {item["name"]: item["lineDash"] for item in chart["legend"]}
    for item in chart["legend"]:
        hidden = re.search(r"\(same as (.+)\)$", item["name"])
        if hidden:
            assert item["lineDash"] != dashes[hidden.group(1)], item


def _check_x_ticks(chart: dict[str, Any]) -> None:
    labels = [t["text"] for t in chart["x"]]
    assert len(labels) >= 2, (chart["title"], labels)
    assert len(set(labels)) == len(labels), f"repeated x tick labels: {labels}"
    boxes = sorted((t["box"] for t in chart["x"]), key=lambda b: b["left"])
    for a, b in itertools.pairwise(boxes):
        assert a["right"] <= b["left"], f"x tick labels overlap: {labels}"


def _check_y_ticks(chart: dict[str, Any]) -> None:
    """From 0, in one regular step of 1, 2 or 5 x 10^n; whole numbers on a histogram."""
    labels = [t["text"] for t in chart["y"]]
    values = [float(v[:-1]) * 1000 if v.endswith("k") else float(v) for v in labels]
    assert values[0] == 0, labels
    step = values[1] - values[0]
    for a, b in itertools.pairwise(values):
        assert math.isclose(b - a, step, rel_tol=1e-6), f"irregular y ticks: {labels}"
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 5)), labels
    if chart["kind"] == "histogram":
        assert all("." not in v for v in labels), f"fractional counts: {labels}"


def _report(tape: Path, out: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tape", "analyze", "report", str(tape), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 6,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout


# --- a tape with requests (as `proxy` records) --------------------------------------------


def _with_a_gap(tape: Path) -> None:
    """Add a recorder outage (lifecycle frames) to a generated tape."""
    conn = duckdb.connect(str(tape))
    conn.execute(
        f"""INSERT INTO frames (session_id, seq, t_wall_ns, t_mono_ns, direction, transport,
        kind, raw)
        SELECT 'gen-0', max(seq) + n, min(t_wall_ns) + n * 1000000000, 0, 'in', 'long-polling',
               '{Kind.LIFECYCLE}', encode(body)
        FROM frames, (VALUES (1, '{{"event":"disconnected","reason":"connection refused"}}'),
                             (2, '{{"event":"gap","gap_ms":1000.0,"action":"retry"}}')) v(n, body)
        WHERE session_id = 'gen-0' GROUP BY n, body"""
    )
    conn.close()


def test_the_report_of_a_proxy_tape_shows_latency_first_and_clearly(tmp_path: Path) -> None:
    tape = tmp_path / "g.duckdb"
    generate(tape, 3000, seed=11, spacing_us=2000)
    _with_a_gap(tape)
    report = tmp_path / "report.html"
    _report(tape, report)

    with Browser() as browser:
        page = browser.load(report.as_uri(), CHECK)
        wide = browser.load(report.as_uri(), CHECK, width=1500)
    (tmp_path / "report.png").write_bytes(page.screenshot)
    print(f"screenshot: {tmp_path / 'report.png'}")

    charts = _check_what_a_person_sees(page)
    _check_what_a_person_sees(wide)
    titles = [c["title"] for c in charts]
    histograms = [c for c in charts if c["title"].startswith("Request → ack, ")]
    assert len(histograms) == 5  # one per operation
    for chart in histograms:
        assert chart["kind"] == "histogram"
        assert re.match(r"\d+ acked, bins of \d+ ms", chart["subtitle"]), chart["subtitle"]
    assert "Request → ack latency over time" in titles
    assert "Messages per second by channel" in titles
    over_time = [c for c in charts if c["kind"] == "line"]
    assert len(over_time) == 2
    for chart in over_time:
        assert chart["gaps"] == 1  # the outage is marked on both time charts
        assert chart["height"] > 150
    latency = next(c for c in over_time if c["title"].startswith("Request → ack"))
    assert [item["name"] for item in latency["legend"]] == ["ack p50", "ack p99"]

    # The charts follow the page's width: the time charts fill it, histograms share a row.
    for narrow, broad in zip(charts, wide.value["charts"], strict=True):
        assert broad["width"] > narrow["width"] * 1.2, (narrow["title"], narrow["width"])
    assert all(900 < c["width"] <= 1000 for c in over_time)
    assert histograms[0]["frame"]["top"] == histograms[1]["frame"]["top"]

    # Two channels with the same counts: the second drawn dashed and said to be the same.
    rates = next(c for c in charts if c["title"] == "Messages per second by channel")
    names = [item["name"] for item in rates["legend"]]
    assert "/me/internal" in names
    assert "/v2/me/outbound (same as /me/internal)" in names

    headings = [h["text"] for h in page.value["headings"]]
    assert headings[0] == "Latency by operation (ms)"  # the key table, first
    assert page.value["headings"][0]["top"] < page.value["chartsTop"]
    for heading in ("Sessions", "Requests", "Gaps", "Delivery and server processing by event (ms)"):
        assert heading in headings
    assert "no REST requests" not in page.value["text"]
    assert page.screenshot.startswith(b"\x89PNG")
    assert len(page.screenshot) > 20_000


# --- a `record` tape: acks and events, no requests -----------------------------------------


async def _record_from_the_simulator(tape: Path, requests: int) -> None:
    """`cometd-tape record` subscribed to the simulator while a desktop that is not recorded
    sends `requests` REST requests straight to it: the tape gets the acks and their metrics
    (the simulator sends them to every subscriber when the requesting session has no Bayeux
    client), never the requests."""
    sim = Simulator(SimulatorOptions(median_ms=20, p99_ms=80, seed=3))
    await sim.start()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tape",
            "record",
            sim.url(),
            "-o",
            str(tape),
            "--user",
            "agent",
            "--password-env",
            "TEST_PASSWORD",
            "--max-messages",
            str(2 * requests),  # each ack and its metrics message
        ],
        cwd=ROOT,
        env={**os.environ, "TEST_PASSWORD": "agent"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = asyncio.get_running_loop().time() + TIMEOUT * 3
        while sim.sizes()["patterns"] < 2:  # the recorder's two channels
            assert proc.poll() is None, proc.communicate()[1]
            assert asyncio.get_running_loop().time() < deadline, "the recorder never subscribed"
            await asyncio.sleep(0.05)
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar, headers=basic("agent", "agent")) as http:
            async with http.get(sim.origin + "/api/v2/me") as response:
                csrf = {"X-CSRF-TOKEN": response.headers["X-CSRF-TOKEN"]}
            for n in range(requests):
                body = {"operationName": "DoNotCallRecord", "referenceId": f"ref-{n}"}
                path = f"/api/v2/me/outbound-records/{n}"
                async with http.post(sim.origin + path, json=body, headers=csrf) as response:
                    assert response.status == 200
                await asyncio.sleep(0.004)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT * 3)
        assert proc.returncode == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await sim.stop()


async def test_the_report_of_a_record_tape_shows_the_latency_it_has(tmp_path: Path) -> None:
    requests = 150
    tape = tmp_path / "recorded.duckdb"
    await _record_from_the_simulator(tape, requests)
    report = tmp_path / "report.html"
    await asyncio.to_thread(_report, tape, report)

    def look() -> PageResult:
        with Browser() as browser:
            return browser.load(report.as_uri(), CHECK)

    page = await asyncio.to_thread(look)
    (tmp_path / "report.png").write_bytes(page.screenshot)
    print(f"screenshot: {tmp_path / 'report.png'}")

    charts = _check_what_a_person_sees(page)
    text = page.value["text"]
    assert "no request was acknowledged" not in text
    assert "no REST requests" in text
    assert "cometd-tape proxy" in text
    headings = [h["text"] for h in page.value["headings"]]
    assert headings[0] == "Delivery and server processing by event (ms)"
    assert "Latency by operation (ms)" not in headings
    rows = page.value["tables"]["Delivery and server processing by event (ms)"]
    counts = {(r[0], r[1]): int(r[2]) for r in rows}
    assert counts[("DoNotCallAcknowledge", "delivery_ms")] == requests
    assert counts[("DoNotCallAcknowledge", "server_ms")] == requests
    titles = [c["title"] for c in charts]
    assert not any(t.startswith("Request → ack") for t in titles)
    for title in ("Delivery latency", "Server processing", "Messages per second by channel"):
        assert title in titles
    delivery = next(c for c in charts if c["title"].startswith("Delivery latency over time"))
    assert [item["name"] for item in delivery["legend"]] == ["delivery p50", "delivery p99"]
    # A recording of a second or two: the time ticks (distinct, as every chart's) read
    # sub-second. (A machine slow enough to stretch it past 3 s gets whole seconds.)
    conn = duckdb.connect(str(tape), read_only=True)
    (span_s,) = conn.execute(
        "SELECT (max(t_wall_ns) - min(t_wall_ns)) / 1e9 FROM frames"
    ).fetchall()[0]
    conn.close()
    rates = next(c for c in charts if c["title"] == "Messages per second by channel")
    if span_s < 3:
        assert all(re.search(r"\d:\d\d\.\d+$", t["text"]) for t in rates["x"]), rates["x"]


# --- ticks, without a browser ----------------------------------------------------------------


def test_ticks_are_regular_and_time_labels_distinct() -> None:
    assert [nice_step(x) for x in (0.7, 1, 1.2, 3, 7, 23, 0.013)] == [1, 1, 2, 5, 10, 50, 0.02]
    assert value_ticks(7.3, integer=True) == [0, 2, 4, 6, 8]
    assert value_ticks(0.4, integer=True) == [0, 1]
    assert value_ticks(0.43) == [0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5]
    assert number(0.30000000000000004, 0.1) == "0.3"
    assert number(25_000, 5000) == "25k"
    t0 = 1_767_225_600.123  # 2026-01-01T00:00:00.123Z
    for span in (0.004, 0.3, 1.7, 5.3, 42, 700, 5000, 90_000, 9e5):
        step, ticks = time_ticks(t0, t0 + span, 8)
        labels = [clock(t, step, span) for t in ticks]
        assert 2 <= len(ticks) <= 8, (span, labels)
        assert len(set(labels)) == len(labels), (span, labels)
        assert all(t0 - 1e-6 <= t <= t0 + span + 1e-6 for t in ticks)  # whole microseconds
    assert time_ticks(t0, t0 + 1.7, 8)[0] == 0.5
    assert clock(t0 + 0.377, 0.5, 1.7) == "00:00:00.5"
