"""Bisections for the report tests: the real engine over a throwaway git
history with the fake tester, leaving a workdir the way ``kvmlab bisect``
does (journal, meta.json, result.json, the log)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kvmlab.bisect import AdaptivePolicy, BisectResult, LogWriter, Outcome, bisect
from kvmlab.bisect.policy import POLICIES, Policy
from kvmlab.show import JobMeta
from tests.test_bisect import FakeTester, History, make_history


@dataclass
class Case:
    name: str
    outcome: Outcome
    kw: dict[str, Any]
    tester: dict[str, Any]
    bad: str = "30"
    good: str | None = "0"
    fix: bool = False
    policy: str | Policy = "adaptive"


CASES = {
    # Flaky culprit on a merged branch, another bug's crashes, a commit that does
    # not build and one that does not boot: every kind of node and run.
    "found": Case("found", Outcome.FOUND, {}, dict(culprit="b3", p=0.5, other_rate=0.1, broken=["16"],
                                                   boot_broken=["19"])),
    # The culprit on the mainline while a branch was open: tested commits on both.
    "merged-branch": Case("merged-branch", Outcome.FOUND, {}, dict(culprit="18")),
    # Without reverts: with them, the culprit among commits that do not build is found.
    "inconclusive": Case("inconclusive", Outcome.INCONCLUSIVE, {"verify": False},
                         dict(culprit="9", broken=["8", "9", "10"])),
    "no-repro": Case("no-repro", Outcome.NO_REPRO, {}, dict(culprit="30", p=0.0)),
    "fix": Case("fix", Outcome.FOUND, {}, dict(fixed_by="24"), bad="3", good="30", fix=True),
    "syzbot": Case("syzbot", Outcome.FOUND, {}, dict(culprit="17"), policy="syzbot"),
    "oldest-release-bad": Case("oldest-release-bad", Outcome.OLDEST_RELEASE_BAD, {}, dict(culprit="0"),
                               good=None),
}


@dataclass
class Bisected:
    hist: History
    workdir: Path
    result: BisectResult
    case: Case

    def h(self, title: str) -> str:
        return self.hist.h[title]


def history(path: Path) -> History:
    """Commits 0..30 (v1.0 is 0), with a branch b1..b5 forked after 10 and merged as 20."""
    return make_history(path, 30, tags={0: "v1.0"}, branch=(10, 5, 20))


def run_case(case: Case, base: Path, hist: History | None = None) -> Bisected:
    hist = hist or history(base / "repo")
    wd = base / "wd"
    wd.mkdir(parents=True)
    tester = FakeTester(hist, **case.tester)
    policy = POLICIES[case.policy] if isinstance(case.policy, str) else case.policy
    bad, good = hist.h[case.bad], hist.h[case.good] if case.good else None
    log_path = wd / "bisect-test.log"
    JobMeta(kind="bisect", tree=str(hist.path), bad=bad, good=good, fix=case.fix, policy=policy.name,
            confidence_goal=policy.confidence if isinstance(policy, AdaptivePolicy) else None,
            config=["base"], reproducer="C program repro.c", vms=2, accel="tcg",
            journal=str(wd / "journal.jsonl"), log=str(log_path), started=time.time()).write(wd)
    logw = LogWriter(None, log_path)
    try:
        res = bisect(hist.repo, tester, bad=bad, good=good, fix=case.fix, policy=policy,
                     journal=wd / "journal.jsonl", log=logw, **case.kw)
    finally:
        logw.close()
    assert res.outcome is case.outcome, (case.name, res.outcome, res.message)
    (wd / "result.json").write_text(json.dumps(res.to_json(), indent=1))
    return Bisected(hist, wd, res, case)


_DONE: dict[str, Bisected] = {}
_HISTORY: list[History] = []


def bisected(name: str, factory: pytest.TempPathFactory) -> Bisected:
    """The bisection of case ``name``, run once per test session over one
    shared history (treat both as read-only)."""
    if not _HISTORY:
        _HISTORY.append(history(factory.mktemp("history") / "repo"))
    if name not in _DONE:
        _DONE[name] = run_case(CASES[name], factory.mktemp(f"bisect-{name}"), _HISTORY[0])
    return _DONE[name]


def copy_of(b: Bisected, dest: Path) -> Bisected:
    """``b`` with a workdir of its own (same repository), for tests that change it."""
    shutil.copytree(b.workdir, dest)
    return Bisected(b.hist, dest, b.result, b.case)


def history_commits_tested(res: BisectResult) -> set[str]:
    """Commits the bisection built, less the ones it made to confirm the culprit."""
    made = {c.commit for c in res.confirmations if c.commit}
    return {c for c, e in res.evidence.items() if e.build is not None and c not in made}


def expected_colour_key(res: BisectResult, commit: str) -> str:
    """The verdict a tested commit's node must show, from the result's evidence
    (independently of the report's own code): crashed with the bug = bad,
    did not build = build-failed, ran clean = good, else skip."""
    e = res.evidence[commit]
    step = [s for s in res.steps if s.commit == commit]
    if e.build_failed:
        return "build-failed"
    if step:
        return step[-1].verdict
    if e.target_crashes:
        return "bad"
    if e.boot_failures:
        return "skip"
    return "good" if e.oks else "pending"
