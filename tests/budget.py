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
* the run's wall time against the budget;
* what it deferred, and whether each deferred group ran.

**Deferred tests.** The groups of :data:`DEFERRED` (a kernel config only they
build, an end-to-end bisection) cost minutes each. They run after every other
test, in the table's order, and a group runs only when the time already gone
(counted from ``scripts/test.sh``'s start, setup included) plus its estimate
fits the budget; otherwise each of its tests is skipped with the figures. The
estimate of a group that builds a kernel config of its own counts a cold build
when this run's full builds missed ccache (a fresh machine) and a warm one
otherwise. ``KVMLAB_TEST_BUDGET`` sets the budget in minutes; ``0`` runs
everything.

Apart from that it prints figures only: a slow run is not a failed run
(timings are the benchmarks' business), but the numbers are in every CI log.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
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


@dataclass(frozen=True)
class Deferred:
    """A group of tests that runs last, and only when it fits the budget."""

    name: str
    #: The tests themselves, minutes on 2 cores under TCG (measured).
    minutes: float
    #: (warm ccache, cold ccache) minutes of a kernel build only this group needs.
    build_minutes: tuple[float, float] = (0.0, 0.0)
    #: A test that uses one of these fixtures is in the group...
    fixtures: frozenset[str] = frozenset()
    #: ...and so is one whose node id ends with one of these.
    nodeids: tuple[str, ...] = ()

    def matches(self, nodeid: str, fixturenames: Sequence[str]) -> bool:
        return bool(self.fixtures.intersection(fixturenames)) or nodeid.endswith(self.nodeids)

    def estimate(self, cold: bool) -> float:
        return self.minutes + self.build_minutes[1 if cold else 0]


#: In the order they get the time that is left. Figures from CI logs (stops 21 and 30).
DEFERRED: tuple[Deferred, ...] = (
    # Measured 2026-12-04: 2.7 min with a warm ccache (candidate builds are
    # incremental on the suite's base builds, ~1 min more when cold).
    Deferred("config minimization with the reproducer (sysrq oracle, a bisection with a full config)",
             minutes=3.5, nodeids=("test_the_reproducer_keeps_sysrq_and_drops_the_file_systems",
                                   "test_a_bisection_with_a_full_config_bisects_with_the_minimized_one")),
    Deferred("the debug kernel's tests (KASAN report, addr2line, gdb, --cpus/PREEMPT, --share)",
             minutes=4.0, build_minutes=(5.0, 21.0),
             fixtures=frozenset({"kasan_culprit", "debug_head_kernel", "smp_preempt_kernel", "gdb_kernel"})),
    # Measured at stop 30: 210 + 54 + 176 s (the bug's own .config builds hit
    # ccache after the base builds, fresh machine or not).
    Deferred("the syzbot bug end to end (repro and patch test, boot --syzbot, bisect --syzbot)", minutes=7.5,
             fixtures=frozenset({"planted_bug"})),
    Deferred("the demo bisection of the deterministic bug", minutes=9.5,
             nodeids=("test_demo_finds_the_planted_culprit[culprit]",)),
    Deferred("the demo bisection of the flaky bug", minutes=17.0,
             nodeids=("test_demo_finds_the_planted_culprit[flaky_culprit]",)),
)


def budget_minutes() -> float | None:
    """``KVMLAB_TEST_BUDGET`` (minutes; ``0``: no budget, run everything),
    else :data:`BUDGET_MINUTES`."""
    raw = os.environ.get("KVMLAB_TEST_BUDGET", "").strip()
    if not raw:
        return BUDGET_MINUTES
    try:
        value = float(raw)
    except ValueError:
        raise pytest.UsageError(
            f"KVMLAB_TEST_BUDGET={raw!r}: not a number of minutes (0: no budget)") from None
    return value if value > 0 else None


def suite_started(now: float) -> float:
    """When ``scripts/test.sh`` started (``KVMLAB_SUITE_STARTED``, epoch
    seconds, so setup counts), else ``now``."""
    try:
        started = float(os.environ.get("KVMLAB_SUITE_STARTED", ""))
    except ValueError:
        return now
    return started if now - 6 * 3600 < started <= now else now


def group_of(nodeid: str, fixturenames: Sequence[str]) -> int | None:
    return next((i for i, d in enumerate(DEFERRED) if d.matches(nodeid, fixturenames)), None)


def order(items: list[pytest.Item]) -> list[pytest.Item]:
    """Items of no deferred group first (their order kept), then each group's
    in :data:`DEFERRED` order."""
    keyed = [(group_of(i.nodeid, getattr(i, "fixturenames", ())), n, i) for n, i in enumerate(items)]
    return [i for _, _, i in sorted(keyed, key=lambda k: (-1 if k[0] is None else k[0], k[1]))]


def decide(group: Deferred, elapsed_min: float, cold: bool, budget: float | None) -> str | None:
    """None when ``group`` runs, else why it is skipped."""
    if budget is None:
        return None
    estimate = group.estimate(cold)
    if elapsed_min + estimate <= budget:
        return None
    kind = "cold" if cold else "warm"
    return (f"deferred, over the {budget:.0f} min test budget: {elapsed_min:.1f} min gone + "
            f"~{estimate:.0f} min for {group.name} ({kind} ccache) (README: Test budget; "
            "KVMLAB_TEST_BUDGET=0 runs it)")


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
    #: group index -> (why skipped or None, minutes gone when decided, estimate)
    decisions: dict[int, tuple[str | None, float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.started = suite_started(self.started)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        items[:] = order(items)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        index = group_of(item.nodeid, getattr(item, "fixturenames", ()))
        if index is None:
            return
        if index not in self.decisions:
            elapsed = (time.time() - self.started) / 60
            cold = _ccache_cold(self.started)
            why = decide(DEFERRED[index], elapsed, cold, budget_minutes())
            self.decisions[index] = (why, elapsed, DEFERRED[index].estimate(cold))
        why = self.decisions[index][0]
        if why is not None:
            pytest.skip(why)

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


def _ccache_cold(since: float) -> bool:
    """Did this run's full kernel builds mostly miss ccache (a fresh machine)?"""
    from tests.fixtures_kernel import KERNEL_CACHE

    full = [b for b in _builds_since(KERNEL_CACHE / "work", since)
            if int(str(b.get("objects_compiled", 0))) >= COLD_OBJECTS]
    return any(int(str(b.get("ccache_misses", 0))) > int(str(b.get("ccache_hits", 0))) for b in full)


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
    for index, (why, elapsed, estimate) in sorted(budget.decisions.items()):
        verdict = "skipped" if why else "ran"
        tr.write_line(f"deferred {DEFERRED[index].name}: {verdict} (at {elapsed:.1f} min, "
                      f"estimated {estimate:.0f} min)")
    wall = (time.time() - budget.started) / 60
    verdict = "within" if wall <= BUDGET_MINUTES else "OVER"
    since = " since scripts/test.sh started" if os.environ.get("KVMLAB_SUITE_STARTED") else ""
    tr.write_line(f"wall{since}: {wall:.1f} min, {verdict} the {BUDGET_MINUTES:.0f} min budget for the whole "
                  "suite on a fresh machine (README: Test budget)")
