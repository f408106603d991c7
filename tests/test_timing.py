"""A bisection's time: the closing block's ``total time`` is the job's wall
time and its parts (build, test, VM idle, waiting) add up to it; result.json
and the HTML report's totals say the same numbers. A fake clock drives it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kvmlab.bisect import bisect
from kvmlab.bisect import log as fmt
from kvmlab.bisect.timing import Stopwatch, TimeSplit
from kvmlab.outcome import BuildOutcome, RunOutcome
from kvmlab.show import panels
from tests.test_bisect import FakeTester, make_history

pytestmark = pytest.mark.unit


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _sums(t: TimeSplit) -> bool:
    return abs(t.build + t.test + t.vm_idle + t.waiting - t.total) < 1e-9


def test_parts_add_up_to_the_wall_time() -> None:
    clock = FakeClock()
    sw = Stopwatch(clock)
    clock.advance(5)                       # setting up: waiting
    with sw.building():
        clock.advance(30)
    clock.advance(2)                       # planning: waiting
    with sw.testing(2) as span:            # two VMs, 48 s and 40 s, the batch took 50 s
        clock.advance(50)
        span.busy += 48 + 40
    clock.advance(3)
    t = sw.split()
    assert t == TimeSplit(total=90, build=30, test=44, vm_idle=6, waiting=10)
    assert _sums(t)


def test_one_run_on_a_two_vm_pool_is_half_idle() -> None:
    """The issue's case: the planner asked for one run, the other VM idled."""
    clock = FakeClock()
    sw = Stopwatch(clock)
    for _ in range(3):
        with sw.testing(2) as span:
            clock.advance(48)
            span.busy += 48
    t = sw.split()
    assert (t.total, t.test, t.vm_idle, t.waiting) == (144, 72, 72, 0)


def test_test_time_never_exceeds_its_wall_time() -> None:
    """VM time summed over VMs (the old ``test:``) could exceed the job's wall time."""
    clock = FakeClock()
    sw = Stopwatch(clock)
    with sw.testing(1) as span:            # a tester that says 1 slot but ran two at once
        clock.advance(48)
        span.busy += 96
    t = sw.split()
    assert (t.total, t.test, t.vm_idle) == (48, 48, 0)


def test_started_before_the_stopwatch_counts_as_waiting() -> None:
    clock = FakeClock()
    sw = Stopwatch(clock, started=clock.now - 7)
    assert sw.split() == TimeSplit(7, 0, 0, 0, 7)


def test_stretches_do_not_nest() -> None:
    sw = Stopwatch(FakeClock())
    with sw.building(), pytest.raises(RuntimeError), sw.testing(2):
        pass


def test_totals_line_keeps_syzbots_prefix() -> None:
    line = fmt.totals_line(8, TimeSplit(2876.0, 1200.5, 1500.0, 100.0, 75.5))
    assert line == ("revisions tested: 8, total time: 47m56s "
                    "(build: 20m0.5s, test: 25m0s, VM idle: 1m40s, waiting: 1m15.5s)")


@dataclass
class ClockedFake(FakeTester):
    """The bisection tests' fake tester on a fake clock: a build takes 100 s,
    a test call 60 s per batch of at most ``slots`` runs, each run 60 s of VM."""

    clock: FakeClock = field(default_factory=FakeClock)
    slots: int = 2

    def vm_slots(self) -> int:
        return self.slots

    def build(self, commit: str) -> BuildOutcome:
        self.clock.advance(100)
        return super().build(commit)

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        out = super().test(build, runs)
        self.clock.advance(60 * -(-len(out) // self.slots))
        return out


def _parts(line: str) -> dict[str, float]:
    m = re.fullmatch(r"revisions tested: \d+, total time: (\S+) \(build: (\S+), test: (\S+), "
                     r"VM idle: (\S+), waiting: (\S+)\)", line)
    assert m, line

    def secs(d: str) -> float:
        h = re.search(r"(\d+)h", d)
        mi = re.search(r"(\d+)m(?!s)", d)
        s = re.search(r"([\d.]+)s$", d)
        return (int(h[1]) * 3600 if h else 0) + (int(mi[1]) * 60 if mi else 0) + (float(s[1]) if s else 0)

    return dict(zip(("total", "build", "test", "vm_idle", "waiting"), map(secs, m.groups()), strict=True))


@pytest.mark.parametrize("policy", ["syzbot", "adaptive"])
def test_closing_block_json_and_report_say_the_same_wall_time(tmp_path: Path, policy: str) -> None:
    hist = make_history(tmp_path / "repo", 20)
    clock = FakeClock()
    tester = ClockedFake(hist, culprit="12", clock=clock)
    sw = Stopwatch(clock)
    clock.advance(30)                      # the job's own setup before the engine starts
    lines: list[str] = []
    res = bisect(hist.repo, tester, bad=hist.h["20"], good=hist.h["0"], policy=policy,
                 log=fmt.LogWriter(lines.append), stopwatch=sw, verify=False)
    wall = clock.now - 1000.0
    line = next(x for x in lines if x.startswith("revisions tested: "))
    parts = _parts(line)
    assert parts["total"] == pytest.approx(wall, abs=1e-3)
    assert sum(v for k, v in parts.items() if k != "total") == pytest.approx(wall, abs=1e-2)
    assert parts["build"] == pytest.approx(100 * len(tester.built))
    assert parts["waiting"] >= 30
    j = res.to_json()
    assert j["total_seconds"] == pytest.approx(wall, abs=1e-3)
    assert (j["build_seconds"] + j["test_seconds"] + j["vm_idle_seconds"] + j["waiting_seconds"]
            == pytest.approx(j["total_seconds"], abs=1e-2))
    shown = panels.time_split(j, builds=len(tester.built), runs=res.vm_runs)
    assert shown["total"][0] == j["total_seconds"]
    assert [v for v, _ in shown.values()][1:] == [j["build_seconds"], j["test_seconds"], j["vm_idle_seconds"],
                                                  j["waiting_seconds"]]
