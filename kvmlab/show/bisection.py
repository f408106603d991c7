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

from kvmlab import report as crash_report
from kvmlab.bisect.graph import CommitGraph
from kvmlab.bisect.seams import CommitInfo as _CommitInfo
from kvmlab.bisect.seams import cc_list, email_of, parse_trailers
from kvmlab.errors import MissingFileError, UserError
from kvmlab.show import gitinfo, layout
from kvmlab.show.meta import JobMeta, load_meta

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
RESULT_NAME = "result.json"

#: Node colours by verdict (also used by the tests to check the screenshot).
VERDICT_COLOURS = {
    "bad": "#d62728",       # crashed with the bug
    "good": "#2ca02c",      # ran clean
    "skip": "#ff9f1c",      # could not be judged (boot failures, mixed evidence)
    "build-failed": "#7f7f7f",
    "pending": "#9ecae1",   # being tested now
    "untested": "#ffffff",
}

#: What a run came to, as the report names and colours it.
RUN_KINDS = {
    "target": ("crashed (the bug)", "#d62728"),
    "other": ("crashed (another bug)", "#9467bd"),
    "ok": ("OK", "#2ca02c"),
    "boot-failed": ("boot failed", "#ff9f1c"),
    "infra": ("infra error", "#7f7f7f"),
    "repro-failed": ("reproducer failed", "#8c564b"),
}

#: Candidates drawn in the probability chart, at most.
CHART_SERIES = 6
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
class RunView:
    commit: str
    ordinal: int
    """This commit's n-th run (0-based), as the log numbers them."""
    vm: int
    """The VM's index in its pool."""
    status: str
    kind: str
    """A key of :data:`RUN_KINDS`."""
    title: str
    detail: str
    report: str
    duration: float
    console_log: str
    end: float = 0.0
    """Seconds since the job started (approximate: the journal stamps a batch of runs when it returns)."""
    start: float = 0.0

    @property
    def label(self) -> str:
        what = RUN_KINDS[self.kind][0]
        extra = self.title or self.detail
        return f"run #{self.ordinal}: {what}" + (f": {extra}" if extra else "")

    @property
    def colour(self) -> str:
        return RUN_KINDS[self.kind][1]


@dataclass
class BuildView:
    commit: str
    status: str
    kind: str
    """``cached``, ``incremental``, ``clean``, ``built`` (kind not recorded) or ``failed``."""
    duration: float
    compiler: str
    error: str
    objects: int | None
    end: float = 0.0
    start: float = 0.0

    @property
    def label(self) -> str:
        if self.kind == "cached":
            return "build: cached"
        what = f"{self.kind} build" if self.kind != "built" else "build"
        objs = f", {self.objects} objects compiled" if self.objects is not None else ""
        if self.status == "failed":
            return f"build failed after {self.duration:.0f} s{objs}: {self.error or 'unknown error'}"
        return f"{what}: {self.duration:.0f} s{objs}"


@dataclass
class CommitView:
    hash: str
    subject: str = ""
    author: str = ""
    date: str = ""
    tags: tuple[str, ...] = ()
    verdict: str = "untested"
    """A key of :data:`VERDICT_COLOURS`."""
    verdict_word: str = ""
    """As ``git bisect`` would say it (good / bad, or fixed / broken for a fix bisection)."""
    build: BuildView | None = None
    runs: list[RunView] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    """1-based numbers of the steps that ended on this commit."""
    roles: list[str] = field(default_factory=list)
    """``bad``, ``good``, ``culprit``, ``candidate``, ``release``."""
    hidden_below: int = 0
    """Untested commits between this one and the next drawn ones below it."""
    probability: float | None = None
    """Its probability of being the culprit after the last step (adaptive)."""

    @property
    def short(self) -> str:
        return self.hash[:12]

    @property
    def tested(self) -> bool:
        return self.build is not None

    @property
    def colour(self) -> str:
        return VERDICT_COLOURS[self.verdict]

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(r.kind for r in self.runs)
        return {k: c[k] for k in RUN_KINDS if c[k]}

    @property
    def summary(self) -> str:
        """One line for the tooltip."""
        parts = [f"{self.short} {self.subject}".strip(), self.verdict_word or self.verdict]
        if self.build is not None:
            parts.append(self.build.label)
        if self.runs:
            parts.append(f"{len(self.runs)} runs: " + ", ".join(
                f"{n} {RUN_KINDS[k][0]}" for k, n in self.counts.items()))
        return " · ".join(parts)


@dataclass
class TitleCount:
    title: str
    count: int
    target: bool
    commits: list[str]
    kind: str
    """``crash`` or ``boot`` (a crash while booting)."""


@dataclass
class Culprit:
    commit: CommitView
    message: str
    cc: list[str]
    files: list[gitinfo.FileChange]
    confirmation: list[str]
    crash_title: str
    crash_report: str
    warnings: list[str]


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
    time_totals: dict[str, float]
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
    if st in ("ok", "boot-failed", "infra", "repro-failed"):
        return str(st)
    return "infra"


def _build_kind(b: dict[str, Any]) -> tuple[str, int | None]:
    """(kind, objects compiled) of a journaled build; the kind of an uncached
    build comes from its manifest in the build cache when that is still there."""
    if b.get("status") == "failed":
        kind = "failed"
    elif b.get("cached"):
        return "cached", None
    else:
        kind = "built"
    manifest = (b.get("artifacts") or {}).get("manifest")
    objects = None
    if manifest:
        try:
            m = json.loads(Path(manifest).read_text())
            objects = int(m.get("objects_compiled", 0))
            inc = (m.get("extra") or {}).get("incremental")
            if kind != "failed" and inc is not None:
                kind = "incremental" if inc else "clean"
        except (OSError, ValueError, TypeError):
            pass
    return kind, objects


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
    return {"skip": "skip", "build-failed": "skip (build failed)", "pending": "being tested",
            "untested": "not tested"}[verdict]


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
        kind, objects = _build_kind(b)
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
        if st.get("verdict") in ("good", "bad", "skip"):
            c.verdict = str(st["verdict"])
    state = str(res["outcome"]) if res else "running"
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
    if state in ("inconclusive", "running"):
        for h in cand_hashes[:MAX_EXTRA_NODES]:
            cv(h).roles.append("candidate")
    for h, c in commits.items():
        c.probability = probs.get(h)
        if not c.steps or (c.build is not None and c.build.status == "failed"):
            c.verdict = _derived_verdict(c)
        c.verdict_word = _verdict_word(c.verdict, fix)
        if not c.tested and "good" in c.roles:
            c.verdict_word = "fixed (given)" if fix else "good (given)"

    # What the tree says about them.
    tree_path = tree or (Path(meta.tree) if meta is not None and meta.tree else None)
    extra_cands = [h for h in cand_hashes[:MAX_CANDIDATES] if h not in commits]
    tinfo = gitinfo.read_commits(tree_path, [*commits, *extra_cands])
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

    prob_chart, prob_keys = _prob_chart(steps, commits, meta.confidence_goal if meta else None)
    remaining_chart = _remaining_chart(steps)

    titles = _titles(commits)
    target_title = str((res or {}).get("target_title") or "") or next(
        (t.title for t in titles if t.target), "")

    timeline, totals_t = _timeline(commits, meta, origin, (now if state == "running" and now else last_t))
    warnings = [str(w) for w in (res or {}).get("warnings", [])]
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
        confidence_goal=meta.confidence_goal if meta else None, commits=commits, order=order, graph=graph,
        graph_note=note, culprit=culprit, candidates=candidates, prob_chart=prob_chart, prob_keys=prob_keys,
        remaining_chart=remaining_chart, steps=[st for _, st in steps], titles=titles,
        target_title=target_title, timeline=timeline, time_totals=totals_t, warnings=warnings,
        updated=last_t, tree_problem=tinfo.problem, totals=totals,
    )


def _graph(tree: Path | None, tinfo: gitinfo.TreeInfo, commits: dict[str, CommitView], bad: str,
           good: str | None, fix: bool) -> tuple[list[str], layout.GraphLayout, str]:
    """Rows (newest first) and lanes of the drawn commits: the tested ones,
    the culprit and the candidates, each joined to its nearest drawn ancestors."""
    tip, boundary = (good, bad) if fix and good else (bad, good)
    g: CommitGraph | None = gitinfo.read_range(tree, tip, [boundary] if boundary else []) \
        if boundary else None
    drawn = list(commits)
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
        note = (f"{len(keep)} of the range's {len(g)} commits drawn; "
                "each is joined to its nearest drawn ancestors")
        return [n.commit for n in lay.nodes], lay, note
    # No range (no good commit, or no tree): the commits in the order they were
    # tested, newest release last; joined only where git says one is an ancestor.
    chain = ([boundary] if boundary else []) + list(reversed([h for h in drawn if h != boundary]))
    rows2: list[tuple[str, list[str]]] = []
    for i, h in enumerate(chain):
        parent = chain[i - 1] if i else None
        linked = (parent is not None and tree is not None and h in tinfo.commits
                  and _is_ancestor(tree, parent, h))
        rows2.append((h, [parent] if linked and parent else []))
    lay = layout.lay_out_graph(rows2)
    note = ("no kernel tree to read the graph from: commits in the order they were tested"
            if tinfo.problem else "no good commit: the tested commits in order of ancestry")
    return [n.commit for n in lay.nodes], lay, note


def _is_ancestor(tree: Path, a: str, b: str) -> bool:
    from kvmlab.bisect.git import GitRepository
    from kvmlab.errors import KvmlabError

    try:
        return GitRepository(tree).is_ancestor(a, b)
    except KvmlabError:
        return False


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
    return Culprit(c, message, cc, files, _confirmation(res, job.log_text), title, rep,
                   [str(w) for w in res.get("warnings", [])])


def _cc_from_log(text: str) -> list[str] | None:
    """The log's ``cc: ["a@b" ...]`` line (it includes the maintainers
    get_maintainer.pl named when the bisection ended)."""
    for line in reversed(text.splitlines()):
        if line.startswith("cc: ["):
            return [e.strip('"') for e in line[len("cc: ["):].rstrip("]").split() if e.strip('"')]
    return None


#: Log lines that carry a culprit's confirmation (issue 14: confirm by revert).
_CONFIRM_PREFIXES = ("confirmed:", "not confirmed:", "revert does not apply", "kvmlab: confirm")


def _confirmation(res: dict[str, Any], log_text: str) -> list[str]:
    """The confirmation of the culprit, where the bisection made one: the
    result's ``confirmation`` (any shape: shown as text), else the log's lines."""
    conf = res.get("confirmation", res.get("verify"))
    if isinstance(conf, str) and conf:
        return [conf]
    if isinstance(conf, dict):
        line = conf.get("message") or conf.get("summary")
        if line:
            return [str(line)]
        return [f"{k}: {v}" for k, v in conf.items() if not isinstance(v, (dict, list))]
    if isinstance(conf, list):
        return [str(x) for x in conf]
    return [ln for ln in log_text.splitlines() if ln.startswith(_CONFIRM_PREFIXES)]


def _prob_chart(steps: Sequence[tuple[float, dict[str, Any]]], commits: dict[str, CommitView],
                goal: float | None) -> tuple[layout.Chart | None, list[tuple[str, str, str]]]:
    """Probability of the leading candidates after each step (adaptive policy only)."""
    if not steps or not any(st.get("top") for _, st in steps):
        return None, []
    best: dict[str, float] = {}
    for _, st in steps:
        for h, p in st.get("top", []):
            best[h] = max(best.get(h, 0.0), float(p))
    final = [h for h, _ in steps[-1][1].get("top", [])[:3]]
    keys = list(dict.fromkeys([*final, *sorted(best, key=lambda h: -best[h])]))[:CHART_SERIES]
    series = []
    for h in keys:
        pts = []
        for n, (_, st) in enumerate(steps, 1):
            p = dict((str(x), float(y)) for x, y in st.get("top", [])).get(h)
            if p is not None:
                pts.append((float(n), p))
        c = commits.get(h)
        label = f"{h[:12]} {c.subject if c else ''}".strip()
        series.append(layout.Series(label, h, tuple(pts)))
    hl = [(goal, f"goal {goal:.0%}")] if goal else []
    chart = layout.line_chart(series, x_max=max(1, len(steps)), y_max=1.0,
                              y_ticks=(0.0, 0.25, 0.5, 0.75, 1.0), hlines=hl,
                              x_label_every=max(1, len(steps) // 12))
    return chart, [(ln.key, ln.label, ln.colour) for ln in chart.lines]


def _remaining_chart(steps: Sequence[tuple[float, dict[str, Any]]]) -> layout.Chart | None:
    pts = tuple((float(n), float(st.get("remaining", 0))) for n, (_, st) in enumerate(steps, 1))
    if not pts:
        return None
    top = max(y for _, y in pts) or 1.0
    ticks = sorted({0.0, float(round(top / 2)), top})
    return layout.line_chart([layout.Series("candidates left", "remaining", pts)], x_max=max(1, len(steps)),
                             y_max=top, y_ticks=ticks, y_fmt="{:.0f}", width=640, height=160,
                             x_label_every=max(1, len(steps) // 12))


def _titles(commits: dict[str, CommitView]) -> list[TitleCount]:
    seen: dict[tuple[str, str], TitleCount] = {}
    for c in commits.values():
        for r in c.runs:
            if r.kind in ("target", "other"):
                key = (r.title or "?", "crash")
            elif r.kind == "boot-failed" and r.title:
                key = (r.title, "boot")
            else:
                continue
            t = seen.setdefault(key, TitleCount(key[0], 0, False, [], key[1]))
            t.count += 1
            t.target = t.target or r.kind == "target"
            if c.hash not in t.commits:
                t.commits.append(c.hash)
    return sorted(seen.values(), key=lambda t: (not t.target, -t.count, t.title))


def _timeline(commits: dict[str, CommitView], meta: JobMeta | None, origin: float, end_t: float
              ) -> tuple[layout.Timeline | None, dict[str, float]]:
    spans: list[layout.Span] = []
    fb = meta.first_build if meta is not None else None
    if fb and meta is not None and meta.started:
        d = 0.0 if fb.get("cached") else float(fb.get("duration", 0.0))
        kind = "cached" if fb.get("cached") else str(fb.get("kind") or "built")
        s0 = meta.started - origin
        spans.append(layout.Span("build", s0, s0 + d, kind,
                                 f"{str(fb.get('commit', ''))[:12]} (before the first step): "
                                 f"{kind}, {d:.0f} s"))
    vms = 0
    for c in commits.values():
        if c.build is not None:
            b = c.build
            spans.append(layout.Span("build", b.start, b.end, b.kind, f"{c.short}: {b.label}"))
        for r in c.runs:
            vms = max(vms, r.vm + 1)
            spans.append(layout.Span(f"VM {r.vm}", r.start, r.end, r.kind,
                                     f"{c.short} {r.label} ({r.duration:.0f} s)"))
    total = max([end_t - origin, *(s.end for s in spans)], default=0.0)
    if not spans or total <= 0:
        return None, {}
    idle = layout.idle_spans(spans, total)
    rows = ["build", *(f"VM {i}" for i in range(vms)), "waiting"]
    tl = layout.lay_out_timeline([*spans, *idle], rows, total=total)
    totals: dict[str, float] = {"total": total}
    for s in spans:
        if s.row == "build":
            totals[f"build ({s.kind})"] = totals.get(f"build ({s.kind})", 0.0) + (s.end - s.start)
    totals["VM time (summed over VMs)"] = sum(s.end - s.start for s in spans if s.row.startswith("VM "))
    totals["waiting"] = sum(s.end - s.start for s in idle)
    return tl, totals

