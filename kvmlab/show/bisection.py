"""A bisection as the report shows it, made from its workdir: the journal
(every build and run with the time it ended, the engine's belief after each
step), ``meta.json`` (what was asked), ``result.json`` (the answer, once there
is one), the text log, and the kernel tree for subjects, authors and the graph.

:func:`load_job` reads the files; :func:`bisection_view` turns them into the
plain data the template draws. A running bisection (no result yet) gives a
report of what is known so far.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvmlab import oops as crash_report
from kvmlab.bisect.graph import CommitGraph
from kvmlab.bisect.seams import CommitInfo as _CommitInfo
from kvmlab.bisect.seams import cc_list, email_of, parse_trailers
from kvmlab.errors import MissingFileError, UserError
from kvmlab.show import gitinfo, layout, panels
from kvmlab.show.meta import JobMeta, load_meta
from kvmlab.show.model import BuildView, CommitView, ConfirmView, Culprit, RunView, TitleCount, build_kind
from kvmlab.vmm.resources import SAMPLES_NAME, read_samples

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
RESULT_NAME = "result.json"
#: Candidates of an inconclusive result listed, at most.
MAX_CANDIDATES = 50
#: Commits drawn in the graph besides the tested ones (candidates), at most.
MAX_EXTRA_NODES = 12


@dataclass
class Job:
    """The raw files of one bisection."""

    workdir: Path
    journal: list[dict[str, Any]]
    meta: JobMeta | None = None
    result: dict[str, Any] | None = None
    log_text: str = ""


def load_job(path: Path) -> Job:
    """The bisection in ``path``: a workdir, or a journal file (its directory
    is then taken as the workdir). Raises :class:`UserError` when there is no
    journal to show."""
    path = Path(path)
    if path.is_dir():
        workdir, journal_path = path, path / JOURNAL_NAME
        meta = load_meta(workdir)
        if not journal_path.is_file() and meta is not None and meta.journal:
            journal_path = Path(meta.journal)
    elif path.is_file():
        workdir, journal_path = path.parent, path
        meta = load_meta(workdir)
    else:
        raise MissingFileError(f"{path}: no such bisection workdir or journal")
    if not journal_path.is_file():
        raise MissingFileError(f"{path}: no bisection journal ({JOURNAL_NAME}) in it")
    lines = read_journal(journal_path)
    if not lines or lines[0].get("kind") != "start":
        raise UserError(f"{journal_path}: not a kvmlab bisection journal (no start line)")
    result = None
    try:
        d = json.loads((workdir / RESULT_NAME).read_text())
        # A result of another bisection (the workdir was reused) is not this one's.
        if isinstance(d, dict) and d.get("bad") == lines[0].get("header", {}).get("bad"):
            result = d
    except (OSError, ValueError):
        pass
    log_text = ""
    if meta is not None and meta.log:
        try:
            log_text = Path(meta.log).read_text(errors="replace")
        except OSError:
            log_text = ""
    return Job(workdir, lines, meta, result, log_text)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Journal lines; a partial last line (a write in progress) and lines that
    are not JSON objects are left out."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict):
            out.append(d)
    return out


# ----------------------------------------------------------------- the view

@dataclass
class BisectView:
    """Everything the bisection template draws."""

    workdir: Path
    meta: JobMeta | None
    fix: bool
    policy: str
    bad: str
    good: str | None
    state: str
    """``found``, ``inconclusive``, ``no-repro``, ``oldest-release-bad`` or ``running``."""
    message: str
    confidence: float | None
    confidence_goal: float | None
    commits: dict[str, CommitView]
    """Every commit drawn, tested ones in the order they were first tested."""
    order: list[str]
    """Graph rows, top (newest) to bottom."""
    graph: layout.GraphLayout
    graph_note: str
    culprit: Culprit | None
    candidates: list[CommitView]
    prob_chart: layout.Chart | None
    prob_keys: list[tuple[str, str, str]]
    """(commit, label, colour) of the probability chart's series."""
    remaining_chart: layout.Chart | None
    steps: list[dict[str, Any]]
    titles: list[TitleCount]
    target_title: str
    timeline: layout.Timeline | None
    time_totals: dict[str, tuple[float, int]]
    """Label -> (seconds, how many: builds or runs; 0 when not a count)."""
    load_note: str
    """What the lines in the timeline's VM rows are (empty: no samples)."""
    warnings: list[str]
    updated: float
    """Unix time of the last journal line."""
    tree_problem: str
    totals: dict[str, Any]
    generated: float = field(default_factory=time.time)

    @property
    def tested(self) -> list[CommitView]:
        return [c for c in self.commits.values() if c.tested]


def _steps(lines: Sequence[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    return [(float(d.get("t", 0.0)), d["step"]) for d in lines
            if d.get("kind") == "step" and isinstance(d.get("step"), dict) and d["step"].get("commit")]


def _target_flags(job: Job, runs: Sequence[tuple[float, str, dict[str, Any]]], bad: str
                  ) -> list[bool]:
    """Per journaled run: is its crash the bug being bisected? From the result
    when there is one; else by the rule ``kvmlab bisect`` uses (the bug named
    by ``--expect``, or else the first crash on the bad commit)."""
    if job.result is not None:
        flags: dict[str, list[bool]] = {
            e["commit"]: [bool(x) for x in e.get("target", [])] for e in job.result.get("evidence", [])
            if isinstance(e, dict) and "commit" in e
        }
        seen: Counter[str] = Counter()
        out = []
        for _, c, _r in runs:
            f = flags.get(c, [])
            out.append(f[seen[c]] if seen[c] < len(f) else False)
            seen[c] += 1
        return out
    expect = job.meta.expect if job.meta else None
    ref: tuple[str, ...] = ()
    if expect:
        ref = (expect,)
    else:
        for _, c, r in runs:
            if c == bad and r.get("status") == "crashed" and r.get("title"):
                ref = (r["title"], *r.get("alt_titles", ()))
                break
    out = []
    for _, _c, r in runs:
        titles = [t for t in (r.get("title"), *r.get("alt_titles", ())) if t]
        out.append(r.get("status") == "crashed" and bool(ref) and any(
            crash_report.same_bug(a, b) for a in titles for b in ref))
    return out


def _run_kind(r: dict[str, Any], target: bool) -> str:
    st = r.get("status", "")
    if st == "crashed":
        return "target" if target else "other"
    if st in ("ok", "boot-failed", "infra", "repro-failed", "guest-stopped"):
        return str(st)
    return "infra"


def _derived_verdict(c: CommitView) -> str:
    if c.build is not None and c.build.status == "failed":
        return "build-failed"
    kinds = {r.kind for r in c.runs}
    if "target" in kinds:
        return "bad"
    if "boot-failed" in kinds:
        return "skip"
    if "ok" in kinds:
        return "good"
    return "pending" if c.build is not None else "untested"


def _verdict_word(verdict: str, fix: bool) -> str:
    if verdict == "bad":
        return "broken" if fix else "bad"
    if verdict == "good":
        return "fixed" if fix else "good"
    return {"skip": "skip", "undecided": "undecided", "build-failed": "skip (build failed)",
            "pending": "being tested", "untested": "not tested"}[verdict]


def _being_tested(lines: Sequence[dict[str, Any]]) -> str | None:
    """The commit a running bisection is at: the last one built or run, unless
    a step closed it since."""
    for d in reversed(lines):
        if d.get("kind") == "step":
            return None
        if d.get("kind") == "build" and isinstance(d.get("build"), dict):
            return str(d["build"].get("commit", "")) or None
        if d.get("kind") == "run":
            return str(d.get("commit", "")) or None
    return None


def _place_runs(runs: list[RunView], ends: list[float]) -> None:
    """Start and end of each run. The journal stamps runs when their batch
    returns; a batch is the runs of one tester call (VM indexes restart at 0
    for each pool it used, pools one after the other); every VM of a pool
    starts with it."""
    i = 0
    while i < len(runs):
        j = i + 1
        while j < len(runs) and runs[j].commit == runs[i].commit and abs(ends[j] - ends[i]) < 2.0:
            j += 1
        pools: list[list[RunView]] = []
        for r in runs[i:j]:
            if not pools or any(x.vm == r.vm for x in pools[-1]):
                pools.append([])
            pools[-1].append(r)
        end = ends[i]
        for pool in reversed(pools):
            start = end - max(r.duration for r in pool)
            for r in pool:
                r.start, r.end = start, start + r.duration
            end = start
        i = j


def bisection_view(job: Job, *, tree: Path | None = None, now: float | None = None) -> BisectView:
    """The report's data for ``job``. ``tree`` overrides the tree named in ``meta.json``."""
    lines = job.journal
    header = lines[0].get("header", {})
    bad = str(header.get("bad", ""))
    fix = bool(header.get("fix", False))
    policy = str(header.get("policy", ""))
    res = job.result
    meta = job.meta
    good = (res or {}).get("good") or header.get("good")
    origin = float(lines[0].get("t", 0.0))
    if meta is not None and meta.started and meta.started < origin:
        origin = meta.started
    last_t = max(float(d.get("t", 0.0)) for d in lines)

    builds = [(float(d.get("t", 0.0)), d["build"]) for d in lines
              if d.get("kind") == "build" and isinstance(d.get("build"), dict)]
    jruns = [(float(d.get("t", 0.0)), str(d.get("commit", "")), d["run"]) for d in lines
             if d.get("kind") == "run" and isinstance(d.get("run"), dict)]
    steps = _steps(lines)
    flags = _target_flags(job, jruns, bad)

    commits: dict[str, CommitView] = {}

    def cv(h: str) -> CommitView:
        if h not in commits:
            commits[h] = CommitView(h)
        return commits[h]

    for t, b in builds:
        c = cv(str(b.get("commit", "")))
        kind, objects = build_kind(b)
        dur = float(b.get("duration", 0.0) or 0.0)
        c.build = BuildView(c.hash, str(b.get("status", "")), kind, dur, str(b.get("compiler", "")),
                            str(b.get("error", "")), objects, end=t - origin, start=t - origin - dur)
    all_runs: list[RunView] = []
    ends: list[float] = []
    for (t, h, r), target in zip(jruns, flags, strict=True):
        c = cv(h)
        rv = RunView(h, len(c.runs), int(r.get("index", 0)), str(r.get("status", "")), _run_kind(r, target),
                     str(r.get("title") or ""), str(r.get("detail") or ""), str(r.get("report") or ""),
                     float(r.get("duration", 0.0) or 0.0), str(r.get("console_log") or ""))
        c.runs.append(rv)
        all_runs.append(rv)
        ends.append(t - origin)
    _place_runs(all_runs, ends)

    last_step: dict[str, Any] = steps[-1][1] if steps else {}
    for n, (_, st) in enumerate(steps, 1):
        c = cv(str(st["commit"]))
        c.steps.append(n)
        if st.get("verdict") in ("good", "bad", "skip", "undecided"):
            c.verdict = str(st["verdict"])
        c.p_crash = float(st["p_crash"]) if isinstance(st.get("p_crash"), (int, float)) else c.p_crash
        c.rate = float(st["rate"]) if isinstance(st.get("rate"), (int, float)) else c.rate
        c.note = str(st.get("note") or "")
    state = str(res["outcome"]) if res else "running"
    current = _being_tested(lines) if state == "running" else None
    culprit_h = (res or {}).get("culprit")
    cand_hashes: list[str] = [str(h) for h in (res or {}).get("candidates", [])]
    top = [(str(h), float(p)) for h, p in last_step.get("top", []) if isinstance(h, str)]
    probs = dict(top)
    if state == "running" and top:
        cand_hashes = [h for h, _ in top]

    # Roles.
    cv(bad).roles.append("bad")
    if good:
        cv(str(good)).roles.append("good")
    if culprit_h:
        cv(str(culprit_h)).roles.append("culprit")
    confirming = [d for d in (res or {}).get("confirmations", []) if isinstance(d, dict)]
    for d in confirming:
        if d.get("commit"):
            cv(str(d["commit"])).roles.append("confirmation")
    if state in ("inconclusive", "running"):
        for h in cand_hashes[:MAX_EXTRA_NODES]:
            cv(h).roles.append("candidate")
    for h, c in commits.items():
        c.probability = probs.get(h)
        if not c.steps or (c.build is not None and c.build.status == "failed"):
            c.verdict = _derived_verdict(c)
        if h == current:
            c.verdict = "pending"
        c.verdict_word = _verdict_word(c.verdict, fix)
        if not c.tested and "good" in c.roles:
            c.verdict_word = "fixed (given)" if fix else "good (given)"

    # What the tree says about them.
    tree_path = tree or (Path(meta.tree) if meta is not None and meta.tree else None)
    extra_cands = [h for h in cand_hashes[:MAX_CANDIDATES] if h not in commits]
    in_chart = [str(h) for _, st in steps for h, _p in st.get("top", [])]
    tinfo = gitinfo.read_commits(tree_path, [*commits, *extra_cands, *in_chart])
    for h, c in commits.items():
        m = tinfo.commits.get(h)
        if m is not None:
            c.subject, c.author, c.date, c.tags = m.subject, m.author, m.date, m.tags
            if m.tags:
                c.roles.append("release")

    order, graph, note = _graph(tree_path, tinfo, commits, bad, str(good) if good else None, fix)

    # Culprit.
    culprit = None
    if culprit_h and culprit_h in commits:
        culprit = _culprit(commits[str(culprit_h)], commits, bad, tree_path, job, res or {})

    candidates = []
    for h in cand_hashes[:MAX_CANDIDATES]:
        c = commits.get(h) or CommitView(h)
        if h not in commits:
            m = tinfo.commits.get(h)
            if m is not None:
                c.subject, c.author, c.date = m.subject, m.author, m.date
            c.probability = probs.get(h)
        candidates.append(c)

    prob_chart, prob_keys = panels.prob_chart(steps, tinfo.subject, meta.confidence_goal if meta else None)
    remaining_chart = panels.remaining_chart(steps)

    titles = panels.crash_titles(commits)
    target_title = str((res or {}).get("target_title") or "") or next(
        (t.title for t in titles if t.target), "")

    end_t = now if state == "running" and now else last_t
    loads, load_note = panels.vm_loads(list(read_samples(job.workdir / SAMPLES_NAME)), origin)
    timeline, totals_t = panels.timeline(commits, meta, origin, end_t, loads)
    if res and isinstance(res.get("total_seconds"), (int, float)):
        # A finished job: the log's own split of its wall time, to the second.
        totals_t = panels.time_split(res, builds=len(builds), runs=len(jruns))
    warnings = [str(w) for w in (res or {}).get("warnings", []) if not str(w).startswith(_CONFIRM_PREFIX)]
    tested = [c for c in commits.values() if c.tested]
    totals = {
        "commits_tested": len(tested),
        "vm_runs": sum(1 for c in tested for r in c.runs if r.kind != "infra"),
        "builds": len(builds),
        "steps": len(steps),
        "remaining": last_step.get("remaining"),
    }
    message = str((res or {}).get("message") or "")
    if state == "running":
        message = f"running: {len(steps)} steps so far" + (
            f", {last_step.get('remaining')} candidates left" if last_step else "")
    return BisectView(
        workdir=job.workdir, meta=meta, fix=fix, policy=policy, bad=bad, good=str(good) if good else None,
        state=state, message=message,
        confidence=(res or {}).get("confidence") if res else last_step.get("confidence"),
        confidence_goal=(res or {}).get("confidence_goal") or (meta.confidence_goal if meta else None),
        commits=commits, order=order, graph=graph,
        graph_note=note, culprit=culprit, candidates=candidates, prob_chart=prob_chart, prob_keys=prob_keys,
        remaining_chart=remaining_chart, steps=[st for _, st in steps], titles=titles,
        target_title=target_title, timeline=timeline, time_totals=totals_t, load_note=load_note,
        warnings=warnings, updated=last_t, tree_problem=tinfo.problem, totals=totals,
    )


def _graph(tree: Path | None, tinfo: gitinfo.TreeInfo, commits: dict[str, CommitView], bad: str,
           good: str | None, fix: bool) -> tuple[list[str], layout.GraphLayout, str]:
    """Rows (newest first) and lanes of the drawn commits: the tested ones,
    the culprit and the candidates, each joined to its nearest drawn ancestors."""
    tip, boundary = (good, bad) if fix and good else (bad, good)
    g: CommitGraph | None = gitinfo.read_range(tree, tip, [boundary] if boundary else []) \
        if boundary else None
    # The culprit's confirmation commits are made by kvmlab on top of the bad
    # commit: they are shown with the culprit, not in the history.
    drawn = [h for h, c in commits.items() if "confirmation" not in c.roles]
    if g is not None:
        closure = {c.hash: g.closure[i] for i, c in enumerate(g.commits)}
        bit = {c.hash: 1 << i for i, c in enumerate(g.commits)}
        order = [c.hash for c in g.commits]
        keep = [h for h in drawn if h in bit]
        rows, hidden = layout.nearest_subgraph(order, closure, bit, keep)
        for h, n in hidden.items():
            commits[h].hidden_below = n
        outside = [h for h in drawn if h not in bit and h != boundary]
        full: list[tuple[str, list[str]]] = []
        if boundary is not None:
            full.append((boundary, []))
            rows = [(h, ps or [boundary]) for h, ps in rows]
        full += rows
        # Tested commits outside the range (releases tested before a good one
        # was found; a tree that moved on): drawn below, unconnected.
        lay = layout.lay_out_graph(full + [(h, []) for h in reversed(outside)])
        note = (f"{len(keep)} of the range's {len(g)} commits drawn, each joined to its nearest drawn "
                "ancestors; (+n untested): commits between it and those")
        return [n.commit for n in lay.nodes], lay, note
    # No range (no good commit, or no tree): the commits in the order they were
    # tested, newest release last; joined only where git says one is an ancestor.
    chain = ([boundary] if boundary else []) + list(reversed([h for h in drawn if h != boundary]))
    rows2: list[tuple[str, list[str]]] = []
    for i, h in enumerate(chain):
        parent = chain[i - 1] if i else None
        linked = (parent is not None and tree is not None and h in tinfo.commits
                  and gitinfo.is_ancestor(tree, parent, h))
        rows2.append((h, [parent] if linked and parent else []))
    lay = layout.lay_out_graph(rows2)
    note = ("no kernel tree to read the graph from: commits in the order they were tested"
            if tinfo.problem else "no good commit: the tested commits in order of ancestry")
    return [n.commit for n in lay.nodes], lay, note


def _culprit(c: CommitView, commits: dict[str, CommitView], bad: str, tree: Path | None, job: Job,
             res: dict[str, Any]) -> Culprit:
    message = gitinfo.commit_message(tree, c.hash)
    cc = _cc_from_log(job.log_text)
    if cc is None:
        name, _, rest = c.author.partition(" <")
        info = _CommitInfo(c.hash, (), c.subject, name, email_of(c.author) or rest.rstrip(">"), c.date,
                           message, parse_trailers(message))
        cc = cc_list(info)
    files = gitinfo.files_changed(tree, c.hash)
    title, rep = "", ""
    for h in (c.hash, bad, *commits):
        x = commits.get(h)
        hit = next((r for r in (x.runs if x else []) if r.kind == "target"), None)
        if hit is not None:
            title, rep = hit.title, hit.report
            break
    # The result's warnings also carry the confirmation's summary lines: those
    # are shown as the confirmation.
    warnings = [str(w) for w in res.get("warnings", []) if not str(w).startswith(_CONFIRM_PREFIX)]
    return Culprit(c, message, cc, files, _confirmations(res, job.log_text, commits), title, rep, warnings)


def _cc_from_log(text: str) -> list[str] | None:
    """The log's ``cc: ["a@b" ...]`` line (it includes the maintainers
    get_maintainer.pl named when the bisection ended)."""
    for line in reversed(text.splitlines()):
        if line.startswith("cc: ["):
            return [e.strip('"') for e in line[len("cc: ["):].rstrip("]").split() if e.strip('"')]
    return None


#: The log's closing lines about the confirmation (``kvmlab bisect`` writes them
#: from the same results; read only when result.json is missing).
_CONFIRM_PREFIX = "kvmlab: confirmation on "


def _confirmations(res: dict[str, Any], log_text: str, commits: dict[str, CommitView]) -> list[ConfirmView]:
    """The checks of the culprit the bisection made (reverted on the bad commit,
    and on HEAD when that differs; for a fix, the fix applied): from the
    result's ``confirmations``, with the synthetic commits' builds and runs."""
    out = []
    for d in res.get("confirmations", []):
        if not isinstance(d, dict):
            continue
        c = commits.get(str(d.get("commit"))) if d.get("commit") else None
        out.append(ConfirmView(str(d.get("status", "")), str(d.get("message", "")),
                               str(d.get("base", "")), c))
    if out or "confirmations" in res:
        return out
    return [ConfirmView("log", ln.removeprefix(_CONFIRM_PREFIX).partition(": ")[2] or ln)
            for ln in log_text.splitlines() if ln.startswith(_CONFIRM_PREFIX)]
