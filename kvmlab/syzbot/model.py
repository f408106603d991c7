"""The syzbot dashboard's public JSON API, as data: pure parsing and choices.

The dashboard (syzkaller's ``dashboard/app``) answers a bug page with
``?json=1`` appended (``/bug?extid=EXTID&json=1`` or ``/bug?id=ID&json=1``)
with the ``api.Bug`` record of ``dashboard/api/api.go`` (``"version": 1``)::

    {"version": 1, "title": ..., "id": ..., "status": ...,
     "first-crash": ..., "last-crash": ..., "fix-time": ..., "fix-commits": [...],
     "crashes": [{"title", "syz-reproducer", "c-reproducer", "repro-opts",
                  "kernel-config", "kernel-source-git", "kernel-source-commit",
                  "syzkaller-git", "syzkaller-commit", "compiler-description",
                  "architecture", "crash-report-link"}, ...]}

The links are paths on the dashboard (``/text?tag=ReproSyz&x=...``), HTML
escaped. The dashboard lists a bug's crashes with the ones that have a
reproducer first, newest first within each group (its datastore query orders
by ``-ReportLen, -Time``), and the record has no crash times: the list's order
is the only "newest" there is. ``compiler-description`` is in the format but
the dashboard does not fill it yet; the kernel config's
``CONFIG_CC_VERSION_TEXT`` says the same thing (the compiler that made it).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvmlab.errors import UserError
from kvmlab.text import counted

#: The ``version`` of the dashboard's JSON format this module reads.
API_VERSION = 1
#: The public dashboard; ``syzbot.url`` in the config file replaces it.
DEFAULT_URL = "https://syzkaller.appspot.com"


class SyzbotError(UserError):
    """A syzbot bug cannot be used as asked (unknown, unusable, malformed answer)."""


@dataclass(frozen=True)
class BugRef:
    """A bug as the user named it: its dashboard and its id."""

    base: str
    """The dashboard's root URL, no trailing slash."""
    key: str
    """``extid`` (the id in ``syzbot+EXTID@`` addresses) or ``id`` (the bug page's)."""
    value: str

    @property
    def page(self) -> str:
        """The bug page's JSON address."""
        return f"{self.base}/bug?{urllib.parse.urlencode({self.key: self.value, 'json': '1'})}"

    @property
    def name(self) -> str:
        """What names the bug in messages and in the cache."""
        return self.value


def parse_ref(text: str, base: str = DEFAULT_URL) -> BugRef:
    """A bug reference: a bug page URL (``https://HOST/bug?extid=X`` or
    ``?id=X``: that dashboard), a ``syzbot+X@...`` address, or a bare id
    (``base``'s dashboard)."""
    text = text.strip()
    base = base.rstrip("/")
    m = re.fullmatch(r"(?:Reported-by:\s*)?syzbot\+([0-9a-f]+)@\S+", text, re.I)
    if m:
        return BugRef(base, "extid", m.group(1).lower())
    if "://" in text:
        u = urllib.parse.urlsplit(text)
        q = urllib.parse.parse_qs(u.query)
        for key in ("extid", "id"):
            if q.get(key) and re.fullmatch(r"[0-9a-fA-F]+", q[key][0]):
                return BugRef(f"{u.scheme}://{u.netloc}", key, q[key][0].lower())
        raise SyzbotError(f"--syzbot {text}: not a bug page (want .../bug?extid=ID or .../bug?id=ID)")
    if re.fullmatch(r"[0-9a-fA-F]{8,64}", text):
        # Bug page ids are 40-hex SHA-1s; extids (the e-mail's) are shorter.
        return BugRef(base, "id" if len(text) == 40 else "extid", text.lower())
    raise SyzbotError(f"--syzbot {text!r}: give a bug page URL, a syzbot+ID@ address or the bug's id")


@dataclass(frozen=True)
class Crash:
    """One crash of a bug as the dashboard lists it."""

    title: str
    commit: str
    tree: str
    config_link: str
    syz_link: str = ""
    c_link: str = ""
    repro_opts: str = ""
    report_link: str = ""
    log_link: str = ""
    """The full console log (``crash-log``: not in the format yet; the report when absent)."""
    compiler: str = ""
    arch: str = ""
    syzkaller_commit: str = ""

    @property
    def has_repro(self) -> bool:
        return bool(self.syz_link or self.c_link)

    def key(self) -> str:
        """What tells this crash's files apart in the cache (commit and links)."""
        text = "\0".join((self.commit, self.config_link, self.syz_link, self.c_link, self.report_link))
        return f"{self.commit[:12]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class FixCommit:
    title: str
    hash: str = ""
    repo: str = ""
    branch: str = ""


@dataclass(frozen=True)
class Bug:
    """A bug page's record."""

    title: str
    id: str
    status: str
    crashes: tuple[Crash, ...]
    fix_commits: tuple[FixCommit, ...] = ()
    fixed: bool = False
    """The dashboard says fixed (a fix time, or a status that says so)."""

    def fix_line(self) -> str:
        """``fixed by: TITLE (HASH)...`` for the messages, '' when not fixed."""
        if not self.fix_commits:
            return "fixed" if self.fixed else ""
        parts = [f"{c.title} ({c.hash[:12]})" if c.hash else c.title for c in self.fix_commits]
        return "fixed by " + "; ".join(parts)


def _str(d: dict[str, Any], key: str, where: str, *, required: bool = False) -> str:
    v = d.get(key, "")
    if v is None:
        v = ""
    if not isinstance(v, str):
        raise SyzbotError(f"{where}: {key!r} is not a string")
    if required and not v:
        raise SyzbotError(f"{where}: no {key!r}")
    return html.unescape(v)


def parse_bug(text: str, *, where: str) -> Bug:
    """A bug page's JSON (``where``: its address, for the messages)."""
    try:
        data = json.loads(text)
    except ValueError:
        head = " ".join(text[:60].split())
        raise SyzbotError(f"{where}: not the dashboard's JSON (starts {head!r})") from None
    if not isinstance(data, dict):
        raise SyzbotError(f"{where}: not the dashboard's JSON (not an object)")
    if data.get("version") != API_VERSION:
        raise SyzbotError(f"{where}: JSON format version {data.get('version')!r}, kvmlab reads "
                          f"version {API_VERSION}")
    crashes_raw = data.get("crashes") or []
    if not isinstance(crashes_raw, list) or not all(isinstance(c, dict) for c in crashes_raw):
        raise SyzbotError(f"{where}: 'crashes' is not a list of objects")
    crashes = []
    for i, c in enumerate(crashes_raw):
        w = f"{where}: crashes[{i}]"
        crashes.append(Crash(
            title=_str(c, "title", w), commit=_str(c, "kernel-source-commit", w),
            tree=_str(c, "kernel-source-git", w), config_link=_str(c, "kernel-config", w),
            syz_link=_str(c, "syz-reproducer", w), c_link=_str(c, "c-reproducer", w),
            repro_opts=_str(c, "repro-opts", w), report_link=_str(c, "crash-report-link", w),
            log_link=_str(c, "crash-log", w), compiler=_str(c, "compiler-description", w),
            arch=_str(c, "architecture", w), syzkaller_commit=_str(c, "syzkaller-commit", w)))
    fixes_raw = data.get("fix-commits") or []
    if not isinstance(fixes_raw, list) or not all(isinstance(c, dict) for c in fixes_raw):
        raise SyzbotError(f"{where}: 'fix-commits' is not a list of objects")
    fixes = tuple(FixCommit(_str(c, "title", where), _str(c, "hash", where), _str(c, "repo", where),
                            _str(c, "branch", where)) for c in fixes_raw)
    status = _str(data, "status", where)
    fixed = bool(data.get("fix-time")) or bool(fixes) or status.lower().startswith("fixed")
    return Bug(title=_str(data, "title", where, required=True), id=_str(data, "id", where), status=status,
               crashes=tuple(crashes), fix_commits=fixes, fixed=fixed)


@dataclass(frozen=True)
class Choice:
    crash: Crash
    use_syz: bool
    """Run repro.syz (else repro.c)."""
    in_tree: bool
    """The crash's commit is in the user's tree."""
    why: str
    """One line: which crash, and why that one."""


def choose_crash(bug: Bug, *, have_syz: bool, in_tree: Callable[[str], bool]) -> Choice:
    """The crash to reproduce: one with a reproducer of the kind that can run
    here (a syz program when syz binaries are configured, else a C one; the
    other kind when that is all there is), the newest whose commit is in the
    user's tree, else the newest. No crash with a reproducer: one line."""
    with_repro = [c for c in bug.crashes if c.has_repro and c.commit]
    if not with_repro:
        seen = f"{counted(len(bug.crashes), 'crash', 'crashes')} listed"
        raise SyzbotError(f"syzbot bug {bug.id or '?'} ({bug.title}): no reproducer on the dashboard "
                          f"({seen}): kvmlab needs a syz or C reproducer")

    def usable(c: Crash) -> bool:
        return bool(c.syz_link) if have_syz else bool(c.c_link)

    preferred = [c for c in with_repro if usable(c)] or with_repro
    for c in preferred:
        if in_tree(c.commit):
            chosen, inside = c, True
            break
    else:
        chosen, inside = preferred[0], False
    use_syz = bool(chosen.syz_link) and (have_syz or not chosen.c_link)
    kind = "syz" if use_syz else "C"
    if chosen.syz_link and not use_syz:
        kind += " (no syz binaries: --syz-dir)"
    where = "the newest crash on your tree" if inside else "the newest crash (its commit is not in your tree)"
    return Choice(chosen, use_syz, inside, f"{where}, commit {chosen.commit[:12]}, {kind} reproducer")


# -- compilers -------------------------------------------------------------------------------


def config_compiler(config_text: str) -> str:
    """``CONFIG_CC_VERSION_TEXT`` of a kernel config: what compiled it ('' if absent)."""
    m = re.search(r'^CONFIG_CC_VERSION_TEXT="(.*)"\s*$', config_text, re.M)
    return m.group(1) if m else ""


def compiler_name(description: str) -> str | None:
    """The compiler table's name for a compiler description (syzbot's
    ``gcc (Debian 12.2.0-14) 12.2.0`` or ``Debian clang version 15.0.6``,
    a config's CC_VERSION_TEXT): ``gcc-12``, ``clang-15``; None when it names
    neither gcc nor clang with a version."""
    d = description.strip()
    m = re.search(r"\bclang version (\d+)\.", d) or re.match(r"clang-(\d+)\b", d)
    if m:
        return f"clang-{m.group(1)}"
    if re.search(r"\bgcc\b|\bGCC\b|^gcc-\d+", d):
        m = re.match(r"gcc-(\d+)\b", d) or re.search(r"\)\s+(\d+)\.\d+(?:\.\d+)?\b", d) or \
            re.search(r"\b(\d+)\.\d+\.\d+\b", d)
        if m:
            return f"gcc-{m.group(1)}"
    return None


def fix_lines(bug: Bug, found: str, subject: str) -> list[str]:
    """A fix bisection's result as syzbot words it, next to what the
    dashboard says fixed the bug."""
    lines = [f"kvmlab: bug {bug.id or bug.title}: fixed by commit {found[:12]} {subject}"]
    if not bug.fix_commits:
        state = f" ({bug.status})" if bug.status else ""
        return [*lines, f"kvmlab: the dashboard names no fix commit{state}; if this one looks right, "
                        f"reply to syzbot with: #syz fix: {subject}"]
    same = [c for c in bug.fix_commits
            if (c.hash and found.startswith(c.hash[:12].lower())) or c.title.strip() == subject.strip()]
    names = "; ".join(f"{c.title} ({c.hash[:12]})" if c.hash else c.title for c in bug.fix_commits)
    if same:
        return [*lines, f"kvmlab: agrees with the dashboard's fix commit: {names}"]
    return [*lines, f"kvmlab: the dashboard's fix commit is another: {names}"]
