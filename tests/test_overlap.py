"""Overlapping builds with tests, on a simulated clock: the scheduler's rules, and
a whole bisection with and without background builds."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from kvmlab.bisect import AdaptivePolicy, CommitGraph, bisect
from kvmlab.bisect.overlap import Claim, OverlapScheduler
from kvmlab.bisect.planner import PLAN_RUNS, plan_sizes
from kvmlab.bisect.simulate import ClockedTester, MemoryRepo
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome, RunStatus

pytestmark = pytest.mark.unit

TITLE = "KASAN: use-after-free Read in flaky"
GOOD = "0" * 40


def test_scheduler_starts_up_to_capacity_and_cancels_stale_builds() -> None:
    s = OverlapScheduler(capacity=1)
    assert s.want(["a", "b"]) == (["a"], [])
    assert s.want(["a", "b"]) == ([], [])  # already running
    assert s.want(["c", "b"]) == (["c"], ["a"])  # a is no longer wanted: cancelled
    assert s.cancelled == ["a"]
    assert s.finished("c", ok=True) == ["b"]
    assert s.claim("c") is Claim.READY and s.claim("b") is Claim.RUNNING
    assert s.claim("d") is Claim.ABSENT


def test_scheduler_without_capacity_builds_nothing() -> None:
    s = OverlapScheduler(capacity=0)
    assert s.want(["a", "b"]) == ([], [])
    assert s.claim("a") is Claim.ABSENT


def test_claimed_commit_leaves_the_queue() -> None:
    s = OverlapScheduler(capacity=1)
    s.want(["a", "b"])
    assert s.claim("b") is Claim.ABSENT  # the foreground builds it itself
    assert s.finished("a", ok=True) == []  # so b is not started in the background


@dataclass
class Flaky:
    """Commits from index ``culprit`` on crash a run with probability ``p``."""

    graph: CommitGraph
    culprit: int
    p: float
    seed: int
    count: dict[str, int] = field(default_factory=dict)

    def build(self, commit: str) -> BuildOutcome:
        return BuildOutcome(commit, BuildStatus.OK, compiler="gcc (GCC) 12.2.0")

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        bad = self.graph.index[build.commit] >= self.culprit
        out = []
        for _ in range(runs):
            k = self.count.get(build.commit, 0)
            self.count[build.commit] = k + 1
            hit = bad and random.Random(f"{self.seed}/{build.commit}/{k}").random() < self.p
            out.append(RunOutcome(k, RunStatus.CRASHED, title=TITLE) if hit else RunOutcome(k, RunStatus.OK))
        return out


def _history(n: int) -> CommitGraph:
    rows = [(f"{i + 1:040x}", [f"{i:040x}"], str(i + 1)) for i in range(n)]
    return CommitGraph.from_parents(rows, tip=f"{n:040x}", boundary=[GOOD])


def _run(graph: CommitGraph, seed: int, *, p: float = 0.5, batches: bool = True, build_seconds: float = 300.0,
         **clock: object) -> tuple[str | None, ClockedTester]:
    tester = ClockedTester(Flaky(graph, culprit=70, p=p, seed=seed), build_seconds=build_seconds,
                           run_seconds=60.0, **clock)  # type: ignore[arg-type]
    res = bisect(MemoryRepo(graph, GOOD), tester, bad=graph.tip, good=GOOD, verify=False,
                 is_target=lambda r: r.title == TITLE,
                 policy=AdaptivePolicy(chunk=tester.vms, plan_in_batches=batches))
    return res.culprit, tester


def _test_durations(t: ClockedTester) -> Sequence[float]:
    return [e.seconds for e in t.events if e.kind == "test"]


def test_overlap_on_a_big_host_saves_time_and_never_slows_a_test() -> None:
    """64 cores, 10 VMs of 2 vCPUs: 44 cores build what comes next while the VMs
    run. Same culprits, less time over a few bisections."""
    g = _history(200)
    culprit = g.commits[70].hash
    plain_time = over_time = 0.0
    cancels = 0
    for seed in range(4):
        plain_culprit, plain = _run(g, seed, cores=64, vms=10, vm_cores=2, overlap=False)
        over_culprit, over = _run(g, seed, cores=64, vms=10, vm_cores=2, overlap=True)
        assert plain_culprit == over_culprit == culprit
        plain_time += plain.now
        over_time += over.now
        # A test never waits for a background build and is never slowed by
        # one: each lasts exactly its batches of runs.
        for e in over.events:
            if e.kind == "test":
                batches = e.seconds / 60.0
                assert batches == int(batches) and batches >= 1
        assert [e for e in over.events if e.kind == "bg-start"], "nothing was built in the background"
        # Builds that stopped being likely were cancelled and never finished.
        cancelled = {e.commit for e in over.events if e.kind == "bg-cancel"}
        cancels += len(cancelled)
        finished = {e.commit for e in over.events if e.kind == "bg-done"}
        assert all(c in over.sched.cancelled for c in cancelled)
        for c in cancelled - finished:
            assert c not in over.prebuilt()
    assert cancels > 0
    assert over_time < plain_time


def test_overlap_on_two_cores_changes_nothing() -> None:
    g = _history(200)
    plain_culprit, plain = _run(g, 1, cores=2, vms=2, vm_cores=1, overlap=False)
    over_culprit, over = _run(g, 1, cores=2, vms=2, vm_cores=1, overlap=True)
    assert plain_culprit == over_culprit
    assert not [e for e in over.events if e.kind.startswith("bg-")]
    assert over.now == plain.now and _test_durations(over) == _test_durations(plain)


def test_prebuilder_threads_take_wait_and_cancel() -> None:
    """The real tester's background builds: a finished one is taken, the
    foreground waits for a running one, a stale one is cancelled mid-build."""
    import threading

    from kvmlab.jobs.tester import BuildCancelled, Prebuilder

    release = threading.Event()
    started: list[str] = []

    def build(commit: str, jobs: int, cancelled: threading.Event) -> BuildOutcome:
        started.append(commit)
        while not release.wait(0.01):
            if cancelled.is_set():
                raise BuildCancelled(commit)
        return BuildOutcome(commit, BuildStatus.OK, compiler=f"-j{jobs}")

    pb = Prebuilder(build, capacity=1, jobs=6)
    pb.want(["a", "b"])
    pb.want(["b"])  # a is cancelled while it builds; b starts
    release.set()
    got = pb.take("b")  # waits for the background build
    assert got is not None and got.compiler == "-j6"
    assert pb.take("c") is None  # never asked for: the foreground builds it
    assert "a" not in pb.ready() and pb.sched.cancelled == ["a"]
    pb.close()
    assert started[:2] == ["a", "b"]


def test_prebuilder_without_capacity_builds_nothing() -> None:
    from kvmlab.jobs.tester import Prebuilder

    calls: list[str] = []
    pb = Prebuilder(lambda c, j, f: calls.append(c) or BuildOutcome(c, BuildStatus.OK), capacity=0, jobs=1)
    pb.want(["a"])
    assert pb.take("a") is None and calls == []
    pb.close()


@pytest.mark.parametrize("vms", [2, 3])
def test_plans_in_batches_leave_no_vm_idle_and_take_less_wall_time(vms: int) -> None:
    """Single-run plans leave VMs of the pool waiting; plans of whole batches
    do not, find the same culprits and take less wall time over a few
    bisections (a deterministic bug and a flaky one; six seeds: the flaky
    bug's paths vary, and two seeds were once a coin flip)."""
    g = _history(100)
    single_time = batch_time = 0.0
    for seed in range(6):
        for p in (1.0, 0.4):
            one_culprit, one = _run(g, seed, p=p, batches=False, build_seconds=30.0, cores=2, vms=vms)
            all_culprit, full = _run(g, seed, p=p, batches=True, build_seconds=30.0, cores=2, vms=vms)
            assert one_culprit == all_culprit == g.commits[70].hash
            tests = [e for e in full.events if e.kind == "test"]
            assert all(e.runs % vms == 0 for e in tests), [e.runs for e in tests]
            assert full.idle_vm_seconds() == 0.0
            single_time += one.now
            batch_time += full.now
    assert one.idle_vm_seconds() > 0.0  # the comparison is not empty
    assert batch_time < 0.9 * single_time


def test_plan_sizes_are_whole_batches_and_a_pool_larger_than_any_plan_runs_one_batch() -> None:
    assert plan_sizes(1) == PLAN_RUNS
    assert plan_sizes(2) == (2, 4, 6, 8, 12, 20, 30) and plan_sizes(3) == (3, 6, 9, 12, 21, 30, 45)
    assert plan_sizes(64) == (64,)
    g = _history(100)
    culprit, t = _run(g, 0, p=0.5, build_seconds=30.0, cores=64, vms=64, vm_cores=1)
    assert culprit == g.commits[70].hash
    assert all(e.runs % 64 == 0 for e in t.events if e.kind == "test")
