"""Config minimization with the reproducer as the oracle, for a job about a
bug (:mod:`kvmlab.kernel.reduce` decides what to try; here it is tried).

Each candidate config is built at the bad commit in one build slot (so each
build is incremental on the one before: Kconfig and kbuild recompile only
what the changed options touch) and tested by VM runs until the target's
title shows or ``runs`` are spent. The answer is kept in kvmlab's cache per
(commit's tree, full config, fragments on top, target title, base), so a
bisection that is resumed, a second bisection of the same bug and ``repro``
at that commit do not pay for it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmlab import cache, checks
from kvmlab.bisect.timing import Stopwatch
from kvmlab.config import cache_dir
from kvmlab.errors import KvmlabError
from kvmlab.git import Repo
from kvmlab.jobs.tester import VMTester
from kvmlab.kernel import reduce
from kvmlab.kernel.builder import KernelBuilder, Progress
from kvmlab.kernel.config import ConfigRequest, parse_config, render_config
from kvmlab.kernel.minimize import Rule
from kvmlab.outcome import BuildStatus, RunOutcome

log = logging.getLogger(__name__)

#: kvmlab's own bootable config: what a candidate adds the full config's options to
#: (with ``nodwarf`` when the full config has no DWARF: the static half's choice stands).
BASE = ("base",)
NO_DWARF = "nodwarf"
#: VM runs per candidate at most (it stops at the first crash with the target's title).
RUNS = 8
#: The build slot every candidate is built in: each build is incremental on the last.
SLOT = 0
_VERSION = 1  # of the cache entry's meaning; bump when the search changes


@dataclass(frozen=True)
class Found:
    """A minimization's answer as cached: the config (None: keep the full one)."""

    config: str | None
    summary: str
    detail: dict[str, Any]

    def request(self, given: ConfigRequest) -> ConfigRequest:
        """``given`` with the minimized config in place of its full one."""
        if self.config is None:
            return given
        return _candidate(given, self.config)


def _candidate(given: ConfigRequest, text: str) -> ConfigRequest:
    # One name for every candidate: the answer's request is then the very
    # request its candidate was built with (a request-cache hit later).
    return ConfigRequest(fragments=given.fragments, full_config=text,
                         full_config_name=f"{given.full_config_name} (reproducer-minimized)")


def suspects(rules: list[Rule], title: str) -> tuple[str, ...]:
    """What the crash's title needs by the static rules (KASAN for a KASAN
    report): every candidate keeps it."""
    return tuple(o for r in rules if r.titles is not None and not r.applies(title) for o in r.disable)


def cache_file(tree: Path, commit: str, request: ConfigRequest, title: str) -> Path:
    tree_hash = Repo(tree).tree_hash(commit)
    key = hashlib.sha256(json.dumps([_VERSION, tree_hash, request.full_config, list(request.fragments),
                                     title, list(BASE)]).encode()).hexdigest()[:24]
    return cache_dir() / "minimized" / f"{key}.json"


def cached(tree: Path, commit: str, request: ConfigRequest, title: str | None) -> Found | None:
    """An earlier minimization of this full config for this bug at ``commit``."""
    if title is None or request.full_config is None:
        return None
    path = cache_file(tree, commit, request, title)
    try:
        data = json.loads(path.read_text())
        found = Found(data["config"], data["summary"], data["detail"])
        cache.touch(path)  # used now: the cache's size limit removes the least recently used
        return found
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("minimization cache entry %s unreadable (%s): minimizing again", path, e)
        return None


@dataclass
class Oracle:
    """Everything a candidate's test needs."""

    tree: Path
    commit: str
    request: ConfigRequest
    """The full config (after the static half), fragments on top."""
    title: str
    builder: KernelBuilder
    make_tester: Callable[[ConfigRequest, Path], VMTester]
    """A tester for a candidate's request, given the first candidate's kernel
    (the caller resolves the accelerator with it)."""
    is_target: Callable[[RunOutcome], bool]
    vm_slots: int
    stopwatch: Stopwatch
    say: Callable[[str], None]
    runs: int = RUNS
    progress: Callable[[Progress], None] | None = None
    """Hears each candidate build's progress."""


def minimize(o: Oracle, rules: list[Rule], budget: int) -> Found:
    """Minimize ``o.request``'s full config against kvmlab's base at
    ``o.commit``, in at most ``budget`` candidate tests; cache the answer."""
    assert o.request.full_config is not None
    path = cache_file(o.tree, o.commit, o.request, o.title)
    full = parse_config(o.builder.final_config(o.tree, o.commit, o.request, slot=SLOT),
                        source=o.request.full_config_name or "config")
    frags = (*BASE, *((NO_DWARF,) if full.get("CONFIG_DEBUG_INFO_NONE") == "y" else ()))
    base_request = ConfigRequest(fragments=(*frags, *o.request.fragments))
    base = parse_config(o.builder.final_config(o.tree, o.commit, base_request, slot=SLOT),
                        source="base config")
    testers: list[VMTester] = []

    def judge(config: dict[str, str], label: str) -> tuple[bool, str]:
        o.say(f"kvmlab: minimizing the config: testing {label}")
        req = _candidate(o.request, render_config(config))
        with o.stopwatch.building():
            build = o.builder.build(o.tree, o.commit, req, slot=SLOT, progress=o.progress)
        if build.status is not BuildStatus.OK:
            return False, f"did not build: {build.error}"
        if not testers:
            testers.append(o.make_tester(req, Path(build.artifacts["bzImage"])))
        done = 0
        while done < o.runs:
            with o.stopwatch.testing(o.vm_slots) as span:
                outs = testers[0].test(build, min(o.vm_slots, o.runs - done))
                span.busy += sum(r.duration for r in outs)
            done += len(outs)
            if any(o.is_target(r) for r in outs):
                return True, ""
        return False, f"{done} runs"

    def heard(t: reduce.Trial) -> None:
        o.say(f"kvmlab: minimizing the config: {t.describe()}")

    try:
        found = reduce.reduce(base, full, suspects(rules, o.title), judge, budget=budget, on_trial=heard)
    finally:
        for t in testers:
            t.close()
    text = None if found.config is None else render_config(found.config)
    answer = Found(text, found.summary(), found.to_json())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        checks.write_result(path, json.dumps({"config": text, "summary": answer.summary,
                                              "detail": answer.detail, "made": time.time()}, indent=1))
    except (OSError, KvmlabError) as e:  # the answer is used all the same; only its reuse is lost
        o.say(f"kvmlab: warning: the minimized config is not cached ({e}): a later job minimizes again")
    return answer
