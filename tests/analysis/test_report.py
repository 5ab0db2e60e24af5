"""`analyze report` in a real headless Chromium: one self-contained file that loads with no
console errors, every chart visible and drawn; a screenshot is taken."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from analysis.generate import generate
from tape.frame import Kind
from tests.browser import Browser
from tests.constants import ROOT, TIMEOUT

CHECK = """(() => {
  const charts = Array.from(document.querySelectorAll('svg.chart')).map(svg => {
    const box = svg.getBoundingClientRect();
    return {title: svg.querySelector('text.title').textContent,
            width: box.width, height: box.height,
            marks: svg.querySelectorAll('rect.bar, polyline, circle').length,
            gaps: svg.querySelectorAll('rect.gap').length};
  });
  const external = document.querySelectorAll(
    'script, link, img, iframe, [src^="http"], [href^="http"]').length;
  const tables = Array.from(document.querySelectorAll('h2')).map(h => h.textContent);
  return {charts, external, tables, width: document.documentElement.scrollWidth};
})()"""


def _with_a_gap(tape: Path) -> None:
    """Add a recorder outage (lifecycle frames) to a generated tape."""
    import duckdb

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


def test_the_report_loads_offline_with_every_chart_drawn(tmp_path: Path) -> None:
    tape = tmp_path / "g.duckdb"
    generate(tape, 3000, seed=11, spacing_us=2000)
    _with_a_gap(tape)
    report = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "tape", "analyze", "report", str(tape), "-o", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 6,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {report}" in done.stdout

    with Browser() as browser:
        page = browser.load(report.as_uri(), CHECK)
    (tmp_path / "report.png").write_bytes(page.screenshot)
    print(f"screenshot: {tmp_path / 'report.png'}")

    assert page.errors == []
    assert page.value["external"] == 0  # nothing to fetch: it opens offline
    charts = page.value["charts"]
    titles = [c["title"] for c in charts]
    assert sum(t.startswith("Ack latency, ") for t in titles) == 5  # one histogram per operation
    assert any(t.startswith("Ack latency over time") for t in titles)
    assert any(t.startswith("Messages per second by channel") for t in titles)
    for chart in charts:
        assert chart["width"] > 300, chart
        assert chart["height"] > 150, chart
        assert chart["marks"] > 0, f"nothing drawn in {chart['title']!r}"
    over_time = [c for c in charts if "over time" in c["title"] or "per second" in c["title"]]
    assert all(c["gaps"] == 1 for c in over_time)  # the outage is marked on both time charts
    for heading in ("Sessions", "Requests", "Gaps", "Latency by operation (ms)"):
        assert heading in page.value["tables"]
    assert page.screenshot.startswith(b"\x89PNG")
    assert len(page.screenshot) > 20_000
