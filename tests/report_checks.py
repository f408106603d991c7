"""What a person checks when they open a bisection report, done in headless
Chromium: the page loads with no console error and fetches nothing, the
culprit's subject is on screen, each tested commit has one node of the right
colour (read from the screenshot's pixels), the chart is drawn, and clicking a
commit shows its runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kvmlab.show.model import VERDICT_COLOURS
from tests.chromium import Browser, Shot, close_to, hex_rgb

#: Screenshot width in CSS pixels.
WIDTH = 1400


_ROW_CENTRE = """c => {
    const g = document.querySelector(`.graph .row[data-commit="${c}"]`);
    g.scrollIntoView({block: 'center'});
    const r = g.querySelector('text.verdict').getBoundingClientRect();
    return {x: r.x + r.width / 2, y: r.y + r.height / 2}; }"""
_DETAILS = """c => {
    const s = document.querySelector(`.details section[data-commit="${c}"]`);
    const open = Array.from(document.querySelectorAll('.details section')).filter(x => !x.hidden);
    return {hidden: s.hidden, runs: s.querySelectorAll('tr.run').length, others: open.length}; }"""
_TOOLTIP = """c => document.querySelector(`.graph .row[data-commit="${c}"] > title`).textContent"""


def expected_from_result(result: dict[str, Any]) -> tuple[dict[str, str], dict[str, int]]:
    """Per tested commit of a ``result.json``: the verdict its node must show
    (from the evidence, not from the report's code) and its number of runs."""
    steps = {s["commit"]: s["verdict"] for s in result.get("steps", [])}
    made = {c["commit"] for c in result.get("confirmations", []) if c.get("commit")}
    expected, runs = {}, {}
    for e in result["evidence"]:
        if e["build"] is None or e["commit"] in made:
            continue
        c = e["commit"]
        runs[c] = len(e["runs"])
        if e["build"]["status"] == "failed":
            expected[c] = "build-failed"
        elif c in steps:
            expected[c] = steps[c]
        elif any(e["target"]):
            expected[c] = "bad"
        elif any(r["status"] == "boot-failed" for r in e["runs"]):
            expected[c] = "skip"
        else:
            expected[c] = "good"
    return expected, runs


def open_report(b: Browser, path: Path) -> tuple[Any, Shot]:
    page = b.open(path.resolve().as_uri(), width=WIDTH)
    return page, Shot(page.screenshot(WIDTH))


def check_bisection_page(b: Browser, path: Path, *, expected: dict[str, str], culprit_subject: str | None,
                         runs: dict[str, int], chart: bool, shot: Path | None = None) -> None:
    """``expected``: tested commit -> verdict key (colour); ``runs``: commit ->
    number of runs its details must list."""
    page, png = open_report(b, path)
    if shot is not None:
        shot.write_bytes(png.png)
    assert page.console == [], page.console
    url = path.resolve().as_uri()
    assert [u for u in page.requests if u != url and not u.startswith("data:")] == [], page.requests

    if culprit_subject is not None:
        box = page.evaluate("""(() => { const e = document.getElementById('culprit-subject');
            const r = e.getBoundingClientRect(); const s = getComputedStyle(e);
            return {text: e.textContent, x: r.x, y: r.y, w: r.width, h: r.height,
                    visible: s.visibility === 'visible' && s.display !== 'none'}; })()""")
        assert box["text"] == culprit_subject and box["visible"] and box["w"] > 20 and box["h"] > 10, box
        assert box["y"] + box["h"] < 900, f"culprit subject not on the first screen: {box}"
        # Its text is drawn: dark pixels inside its box.
        dark = [png.pixel(box["x"] + dx, box["y"] + box["h"] / 2)
                for dx in range(2, int(min(box["w"], 300)), 2)]
        assert any(sum(p) < 200 for p in dark), "culprit subject box holds no text pixels"

    nodes = page.evaluate("""Array.from(document.querySelectorAll('circle.node')).map(c => {
        const r = c.getBoundingClientRect();
        return {commit: c.dataset.commit, x: r.x + r.width / 2 + window.scrollX,
                y: r.y + r.height / 2 + window.scrollY}; })""")
    drawn: dict[str, list[dict[str, Any]]] = {}
    for n in nodes:
        drawn.setdefault(n["commit"], []).append(n)
    for commit, verdict in expected.items():
        assert len(drawn.get(commit, [])) == 1, f"{commit}: {len(drawn.get(commit, []))} nodes"
        n = drawn[commit][0]
        got = png.pixel(n["x"], n["y"])
        want = hex_rgb(VERDICT_COLOURS[verdict])
        assert close_to(got, want), f"{commit[:12]} ({verdict}): node pixel {got}, want {want}"

    if chart:
        c = page.evaluate("""(() => { const s = document.getElementById('prob-chart');
            if (!s) return null; const r = s.getBoundingClientRect();
            return {paths: s.querySelectorAll('path.series').length, x: r.x + window.scrollX,
                    y: r.y + window.scrollY, w: r.width, h: r.height}; })()""")
        assert c is not None and c["paths"] >= 1 and c["w"] > 300 and c["h"] > 100, c
        colours = {png.pixel(c["x"] + dx, c["y"] + dy)
                   for dx in range(50, int(c["w"]) - 10, 7) for dy in range(10, int(c["h"]) - 30, 7)}
        assert any(max(p) - min(p) > 60 for p in colours), "the chart has no coloured line on screen"

    # Click each tested commit's row: its details (with every run) show.
    for commit, n_runs in runs.items():
        row = page.evaluate(f"({_ROW_CENTRE})({json.dumps(commit)})")
        page.click(row["x"], row["y"])
        shown = page.evaluate(f"({_DETAILS})({json.dumps(commit)})")
        assert shown == {"hidden": False, "runs": n_runs, "others": 1}, (commit, shown)
        # Hovering shows the same in a tooltip.
        tip = page.evaluate(f"({_TOOLTIP})({json.dumps(commit)})")
        assert commit[:12] in tip and (n_runs == 0 or f"{n_runs} runs:" in tip), tip
    assert page.console == [], page.console
