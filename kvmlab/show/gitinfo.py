"""What the report needs to know from the kernel tree: subjects, authors,
files changed, release tags and the commit graph of the tested range.

Every question is one ``git`` call whatever the number of commits. The tree
is only read. A tree that moved on or is gone gives less detail, never an
error: the report then shows hashes only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kvmlab import proc
from kvmlab.bisect.git import GitRepository
from kvmlab.bisect.graph import CommitGraph
from kvmlab.errors import KvmlabError

log = logging.getLogger(__name__)

#: Seconds for one git call.
GIT_TIMEOUT = 120.0


@dataclass(frozen=True)
class FileChange:
    path: str
    added: int | None
    """Lines added (None for a binary file)."""
    deleted: int | None


@dataclass(frozen=True)
class CommitMeta:
    hash: str
    parents: tuple[str, ...] = ()
    subject: str = ""
    author: str = ""
    """``Name <email>``."""
    date: str = ""
    """As ``git log`` prints it by default."""
    tags: tuple[str, ...] = ()


@dataclass
class TreeInfo:
    """Answers about one tree; empty when the tree cannot be read."""

    path: Path | None
    commits: dict[str, CommitMeta] = field(default_factory=dict)
    problem: str = ""
    """Why there is no detail (one line), or empty."""

    def subject(self, h: str) -> str:
        c = self.commits.get(h)
        return c.subject if c else ""


def _git(tree: Path, *args: str) -> str:
    return proc.run(["git", "-C", str(tree), *args], timeout=GIT_TIMEOUT).stdout


def read_commits(tree: Path | None, hashes: Sequence[str]) -> TreeInfo:
    """Subject, author, date, parents and tags of each of ``hashes``."""
    info = TreeInfo(tree)
    if tree is None:
        info.problem = "the kernel tree is not known"
        return info
    if not tree.is_dir():
        info.problem = f"{tree}: the kernel tree is gone"
        return info
    want = list(dict.fromkeys(hashes))
    if not want:
        return info
    try:
        tags: dict[str, list[str]] = {}
        refs = _git(tree, "for-each-ref", "--format=%(refname:short)%00%(objectname)%00%(*objectname)",
                    "refs/tags")
        for line in refs.splitlines():
            name, obj, peeled = [*line.split("\x00"), "", ""][:3]
            tags.setdefault(peeled or obj, []).append(name)
        out = _git(tree, "show", "-s", "--date=default", "--format=%H%x00%P%x00%an <%ae>%x00%ad%x00%s%x1e",
                   *want, "--")
    except KvmlabError as e:
        info.problem = f"{tree}: {str(e).splitlines()[0]}"
        log.warning("report: no commit details: %s", info.problem)
        return info
    for rec in out.split("\x1e"):
        rec = rec.strip("\n")
        if not rec:
            continue
        h, parents, author, date, subject = [*rec.split("\x00"), "", "", "", ""][:5]
        info.commits[h] = CommitMeta(h, tuple(parents.split()), subject, author, date,
                                     tuple(sorted(tags.get(h, []))))
    return info


def read_range(tree: Path | None, tip: str, boundary: Sequence[str]) -> CommitGraph | None:
    """The commits reachable from ``tip`` and not from ``boundary`` (None when
    the tree cannot answer)."""
    if tree is None or not tree.is_dir():
        return None
    try:
        return GitRepository(tree).graph(tip, list(boundary))
    except (KvmlabError, ValueError) as e:
        log.warning("report: no commit graph for %s: %s", tip[:12], str(e).splitlines()[0])
        return None


def files_changed(tree: Path | None, commit: str) -> list[FileChange]:
    """Files ``commit`` changes (against its first parent for a merge)."""
    if tree is None or not tree.is_dir():
        return []
    try:
        out = _git(tree, "show", "--numstat", "--format=", "--diff-merges=first-parent", commit, "--")
    except KvmlabError as e:
        log.warning("report: no file list for %s: %s", commit[:12], str(e).splitlines()[0])
        return []
    return parse_numstat(out)


def parse_numstat(text: str) -> list[FileChange]:
    """``git show --numstat`` lines (``added<TAB>deleted<TAB>path``; ``-`` for binary)."""
    out = []
    for line in text.splitlines():
        parts = line.split("\t", 2)
        if len(parts) != 3:
            continue
        a, d, path = parts
        out.append(FileChange(path, None if a == "-" else int(a), None if d == "-" else int(d)))
    return out


def commit_message(tree: Path | None, commit: str) -> str:
    """The full commit message ('' when the tree cannot say)."""
    if tree is None or not tree.is_dir():
        return ""
    try:
        return _git(tree, "show", "-s", "--format=%B", commit, "--").rstrip("\n")
    except KvmlabError:
        return ""
