"""The bisection's :class:`~kvmlab.bisect.seams.Repository` over a git tree
(:class:`kvmlab.git.Repo`): the range as a :class:`CommitGraph`, release tags,
commit details, maintainers and synthetic revert commits."""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kvmlab import owner, proc
from kvmlab.bisect.graph import CommitGraph
from kvmlab.bisect.seams import CommitInfo, SyntheticCommit, Tag, email_of, parse_trailers
from kvmlab.errors import InfraError, UnknownCommitError
from kvmlab.git import Repo

log = logging.getLogger(__name__)

#: get_maintainer.pl reads MAINTAINERS only (no git history: that takes minutes
#: on a real tree) and prints bare addresses of maintainers and reviewers; the
#: author and the commit's own trailers come from the commit itself.
GET_MAINTAINER_ARGS = ("--no-git", "--no-git-fallback", "--no-rolestats", "--no-n", "--no-l", "--no-s")
GET_MAINTAINER_TIMEOUT = 120.0

_RELEASE = re.compile(r"^v(\d+)\.(\d+)(?:\.(\d+))?$")


def release_version(name: str) -> tuple[int, int, int] | None:
    """``v4.18`` -> (4, 18, 0); None for anything that is not a release (``-rc`` tags too)."""
    m = _RELEASE.match(name)
    if not m:
        return None
    return int(m[1]), int(m[2]), int(m[3] or 0)


class GitRepository:
    """The Repository seam for the git tree at ``path``."""

    def __init__(self, path: Path) -> None:
        self.repo = Repo(path)
        self.path = self.repo.path

    def resolve(self, rev: str) -> str:
        return self.repo.resolve(rev)

    def graph(self, bad: str, good: Sequence[str]) -> CommitGraph:
        return CommitGraph.from_parents(self.repo.log_range(bad, good), tip=bad, boundary=good)

    def changed_paths(self, tip: str, boundary: Sequence[str]) -> dict[str, frozenset[str]]:
        return self.repo.changed_paths(tip, boundary)

    def is_ancestor(self, a: str, b: str) -> bool:
        return self.repo.is_ancestor(a, b)

    def release_tags(self, tip: str, floor: str | None = None) -> list[Tag]:
        floor_v = None
        if floor is not None:
            floor_v = release_version(floor)
            if floor_v is None:
                raise UnknownCommitError(f"{floor}: not a release tag name (vX.Y)")
        found: list[tuple[tuple[int, int, int], Tag]] = []
        for name, commit in self.repo.tags(merged_into=tip, pattern="refs/tags/v*"):
            v = release_version(name)
            if v is None or (floor_v is not None and v < floor_v):
                continue
            found.append((v, Tag(name, commit)))
        found.sort(key=lambda t: t[0], reverse=True)
        return [t for _, t in found]

    def commit_info(self, commit: str) -> CommitInfo:
        c = self.repo.commit(commit)
        return CommitInfo(
            hash=c.hash, parents=c.parents, subject=c.subject, author_name=c.author_name,
            author_email=c.author_email, date=c.date, message=c.message, trailers=parse_trailers(c.message),
        )

    def tree_hash(self, commit: str) -> str:
        return self.repo.tree_hash(commit)

    def maintainers(self, commit: str) -> list[str]:
        """Addresses ``scripts/get_maintainer.pl`` of the checked-out tree gives
        for ``commit``'s patch; empty (with a warning) when the script is absent
        or fails: a missing cc line must not lose a bisection's result."""
        script = self.path / "scripts" / "get_maintainer.pl"
        if not script.is_file():
            return []
        patch = self.repo.format_patch(commit)
        if patch is None:
            log.warning("get_maintainer.pl skipped: git format-patch %s failed", commit[:12])
            return []
        with tempfile.NamedTemporaryFile("w", prefix=owner.prefix("culprit"), suffix=".patch") as f:
            f.write(patch)
            f.flush()
            try:
                done = proc.run(["perl", str(script), *GET_MAINTAINER_ARGS, f.name], cwd=self.path,
                                timeout=GET_MAINTAINER_TIMEOUT, check=False)
            except InfraError as e:
                log.warning("get_maintainer.pl skipped: %s", e)
                return []
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            log.warning("get_maintainer.pl exited %d: %s", done.returncode, last)
            return []
        return sorted({addr for line in done.stdout.splitlines() if (addr := email_of(line))})

    def head(self) -> str:
        return self.resolve("HEAD")

    def revert_onto(self, base: str, change: str, *, pick: bool = False) -> SyntheticCommit:
        """A commit on ``base`` that reverts ``change`` (``pick``: applies it),
        made with git's plumbing in a private index (:meth:`Repo.commit_change`):
        no branch, tag, worktree or checkout of the user changes, and the same
        request always gives the same commit (a resumed bisection re-uses it)."""
        info = self.repo.commit(change)
        parent = info.parents[0] if info.parents else None
        if parent is None:
            raise UnknownCommitError(f"{change[:12]}: a root commit cannot be reverted")
        old, new = (parent, change) if pick else (change, parent)
        verb = "Apply" if pick else "Revert"
        msg = (f'{verb} "{info.subject}"\n\nThis {"applies" if pick else "reverts"} commit {change} '
               f"on top of {base}, to confirm a bisection (made by kvmlab, on no branch).")
        made = self.repo.commit_change(base, old, new, msg)
        return SyntheticCommit(base, change, made.commit, made.applied, made.failed)
