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

from kvmlab.bisect.graph import CommitGraph
from kvmlab.errors import KvmlabError
from kvmlab.git import Repo

log = logging.getLogger(__name__)


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
        repo = Repo(tree)
        tags: dict[str, list[str]] = {}
        for name, commit in repo.tags():
            tags.setdefault(commit, []).append(name)
        records = repo.commits(want)
    except KvmlabError as e:
        info.problem = f"{tree}: {str(e).splitlines()[0]}"
        log.warning("report: no commit details: %s", info.problem)
        return info
    for c in records:
        info.commits[c.hash] = CommitMeta(c.hash, c.parents, c.subject, f"{c.author_name} <{c.author_email}>",
                                          c.date, tuple(sorted(tags.get(c.hash, []))))
    return info


def read_range(tree: Path | None, tip: str, boundary: Sequence[str]) -> CommitGraph | None:
    """The commits reachable from ``tip`` and not from ``boundary`` (None when
    the tree cannot answer)."""
    if tree is None or not tree.is_dir():
        return None
    try:
        return CommitGraph.from_parents(Repo(tree).log_range(tip, boundary), tip=tip, boundary=boundary)
    except (KvmlabError, ValueError) as e:
        log.warning("report: no commit graph for %s: %s", tip[:12], str(e).splitlines()[0])
        return None


def files_changed(tree: Path | None, commit: str) -> list[FileChange]:
    """Files ``commit`` changes (against its first parent for a merge)."""
    if tree is None or not tree.is_dir():
        return []
    try:
        out = Repo(tree).numstat(commit)
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
        return Repo(tree).commit(commit).message
    except KvmlabError:
        return ""


def is_ancestor(tree: Path, a: str, b: str) -> bool:
    """Whether ``a`` is an ancestor of ``b`` (False when the tree cannot say)."""
    try:
        return Repo(tree).is_ancestor(a, b)
    except KvmlabError:
        return False
