"""The test suite's time budget, shown at the end of every run.

CI runs the whole suite (``bash scripts/test.sh``) on a fresh machine, empty
caches included, in at most :data:`BUDGET_MINUTES`. The summary this plugin
prints says where a run's time went, so a change that adds to it shows:

* time per tier (the first of unit, kernel, libvirt, vm a test is marked with);
* every kernel build the run made (manifests written under the tests' kernel
  work dir during the run, the CLI's included), grouped by config, with the
  cold ones (most objects compiled, ccache mostly missing) and the test that
  was running when each was made; a config outside ``TEST_CONFIGS`` is named;
* figures tests recorded with ``record_property("budget", text)``;
* the run's wall time against the budget.

It prints figures only: a slow run is not a failed run (timings are the
benchmarks' business), but the numbers are in every CI log.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: What ``bash scripts/test.sh`` may take on a fresh machine (2 cores, no KVM,
#: empty ccache and test cache), minutes.
BUDGET_MINUTES = 45.0
#: A build that compiled at least this many objects, most of them ccache
#: misses, was a cold build.
COLD_OBJECTS = 300
TIERS = ("unit", "kernel", "libvirt", "vm")


@dataclass
class _Budget:
    """Plugin state and hooks (registered by :func:`pytest_configure`)."""

    started: float = field(default_factory=time.time)
    #: tier -> [tests, seconds]
    tiers: dict[str, list[float]] = field(default_factory=dict)
    #: (nodeid, start, stop) of every test phase
    windows: list[tuple[str, float, float]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        tier = next((t for t in TIERS if t in report.keywords), "other")
        row = self.tiers.setdefault(tier, [0.0, 0.0])
        if report.nodeid not in self.seen:
            self.seen.add(report.nodeid)
            row[0] += 1
        row[1] += report.duration
        self.windows.append((report.nodeid, report.start, report.stop))
        if report.when == "call":
            self.notes.extend((report.nodeid, str(v)) for k, v in report.user_properties if k == "budget")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.seen:
            _summary(self, terminalreporter)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Budget(), "kvmlab-test-budget")


def _builds_since(work: Path, since: float) -> list[dict[str, object]]:
    out = []
    for manifest in (work / "builds").glob("*/manifest.json"):
        try:
            mtime = manifest.stat().st_mtime
            if mtime < since:
                continue
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        data["_mtime"] = mtime
        out.append(data)
    return sorted(out, key=lambda d: float(str(d["_mtime"])))


def _test_at(windows: list[tuple[str, float, float]], when: float) -> str:
    for nodeid, start, stop in windows:
        if start <= when <= stop + 1:
            return nodeid
    return "(outside any test)"


def _summary(budget: _Budget, tr: pytest.TerminalReporter) -> None:
    from tests.fixtures_kernel import KERNEL_CACHE, TEST_CONFIGS

    tr.section("test budget")
    tiers = ", ".join(f"{t} {int(n)} tests {s / 60:.1f} min" for t, (n, s) in sorted(
        budget.tiers.items(), key=lambda kv: -kv[1][1]))
    tr.write_line(f"time by tier: {tiers}")
    builds = _builds_since(KERNEL_CACHE / "work", budget.started)
    known = {",".join(k) for k in TEST_CONFIGS}
    by_config: dict[str, list[dict[str, object]]] = {}
    for b in builds:
        by_config.setdefault(str(b.get("config_request", "?")), []).append(b)
    if not builds:
        tr.write_line("kernel builds: none (every build was a cache hit)")
    for cfg, group in by_config.items():
        total = sum(float(str(b.get("duration", 0))) for b in group)
        flag = "" if cfg in known else "  <- not in TEST_CONFIGS (tests/fixtures_kernel.py)"
        tr.write_line(f"kernel builds {cfg}: {len(group)}, {total / 60:.1f} min{flag}")
        for b in group:
            objects = int(str(b.get("objects_compiled", 0)))
            hits, misses = int(str(b.get("ccache_hits", 0))), int(str(b.get("ccache_misses", 0)))
            if objects >= COLD_OBJECTS:
                kind = "cold" if misses > hits else "warm ccache"
                tr.write_line(f"  {kind} full build {str(b.get('commit', ''))[:12]}: "
                              f"{float(str(b.get('duration', 0))):.0f} s, {objects} objects, "
                              f"ccache {hits} hits / {misses} misses, during "
                              f"{_test_at(budget.windows, float(str(b['_mtime'])))}")
    for nodeid, text in budget.notes:
        tr.write_line(f"{nodeid}: {text}")
    wall = (time.time() - budget.started) / 60
    verdict = "within" if wall <= BUDGET_MINUTES else "OVER"
    tr.write_line(f"wall: {wall:.1f} min, {verdict} the {BUDGET_MINUTES:.0f} min budget for the whole suite "
                  "on a fresh machine (README: Test budget)")
