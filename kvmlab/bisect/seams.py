"""The two seams the bisection engine depends on: a repository and a tester.

The engine never runs git, builds a kernel or boots a VM itself; it asks these.
Tests drive it with a real throwaway git repository and a fake tester.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from kvmlab.bisect.graph import CommitGraph
from kvmlab.outcome import BuildOutcome, RunOutcome

#: Decides whether one run's crash is the bug being bisected.
IsTarget = Callable[[RunOutcome], bool]

#: Trailers whose people get cc'ed on a culprit.
CC_TRAILERS: tuple[str, ...] = ("Signed-off-by", "Acked-by", "Reviewed-by", "Tested-by")


@dataclass(frozen=True)
class Tag:
    """A release tag and the commit it points to (peeled)."""

    name: str
    commit: str


@dataclass(frozen=True)
class CommitInfo:
    """What the closing block of the log says about a commit."""

    hash: str
    parents: tuple[str, ...]
    subject: str
    author_name: str
    author_email: str
    date: str
    """As ``git log`` prints it by default, e.g. ``Thu Aug 16 21:49:07 2018 +0200``."""
    message: str
    """The full message, subject line included."""
    trailers: tuple[tuple[str, str], ...] = field(default=())
    """``(key, value)`` for Signed-off-by / Acked-by / Reviewed-by / Tested-by, in order."""

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1


class Repository(Protocol):
    """A kernel tree as the bisection sees it."""

    def resolve(self, rev: str) -> str:
        """Full hash of ``rev``; raises :class:`kvmlab.errors.UnknownCommitError`."""
        ...

    def graph(self, bad: str, good: Sequence[str]) -> CommitGraph:
        """Commits reachable from ``bad`` and not from any of ``good``, with parents."""
        ...

    def is_ancestor(self, a: str, b: str) -> bool:
        """True when ``a`` is ``b`` or an ancestor of it."""
        ...

    def release_tags(self, tip: str, floor: str | None = None) -> list[Tag]:
        """Release tags (``vX.Y``) reachable from ``tip``, newest first, down to
        ``floor`` included (all when None)."""
        ...

    def commit_info(self, commit: str) -> CommitInfo:
        ...


@runtime_checkable
class Prebuilds(Protocol):
    """Optional ability of a tester: build commits in the background while VMs
    run (see :mod:`kvmlab.bisect.overlap`)."""

    def prebuild(self, commits: Sequence[str]) -> None:
        """Build these commits in the background, most wanted first, on the
        cores the VMs leave free; cancel earlier ones not named again. Returns
        at once and never delays a test."""
        ...

    def prebuilt(self) -> frozenset[str]:
        """Commits whose background build has finished."""
        ...


@runtime_checkable
class TreeHashes(Protocol):
    """Optional ability: the tree object of a commit (equal trees build equal kernels)."""

    def tree_hash(self, commit: str) -> str: ...


@runtime_checkable
class ChangedPaths(Protocol):
    """Optional ability of a repository: the files each commit of a range changes."""

    def changed_paths(self, tip: str, boundary: Sequence[str]) -> dict[str, frozenset[str]]:
        """Per commit reachable from ``tip`` and not from ``boundary``: the paths
        it changes against any of its parents."""
        ...


@runtime_checkable
class BuildInputs(Protocol):
    """Optional ability of a tester: the tree files a build read (its
    dependency files, see :mod:`kvmlab.kernel.relevance`)."""

    def build_inputs(self, build: BuildOutcome) -> frozenset[str] | None:
        """Tree-relative paths ``build`` was compiled from; None when unknown
        (a failed build, a cache entry from before kvmlab kept the list)."""
        ...


@runtime_checkable
class Maintainers(Protocol):
    """Optional ability: the maintainers of the files a commit touches (the
    tree's ``scripts/get_maintainer.pl``), cc'ed on a culprit."""

    def maintainers(self, commit: str) -> list[str]: ...


class Tester(Protocol):
    """Builds kernels and runs the reproducer on them."""

    def build(self, commit: str) -> BuildOutcome:
        """Check out and build ``commit``. A failed build is a result, not an exception."""
        ...

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        """Run the reproducer ``runs`` times on a successful build; may be called
        again on the same build for more runs."""
        ...


@dataclass(frozen=True)
class SyntheticCommit:
    """A commit kvmlab made on top of ``base`` to confirm a culprit: ``commit``
    undoes (or, for a fix, applies) ``change``. Only objects are written: no
    branch, tag or checkout changes."""

    base: str
    change: str
    commit: str | None
    """None when no file's change applied."""
    applied: tuple[str, ...] = ()
    """Files whose change applied."""
    failed: tuple[str, ...] = ()
    """Files whose change does not apply on ``base`` (left as they are there)."""


@runtime_checkable
class Reverts(Protocol):
    """Optional ability: commits that revert (or cherry-pick) one change on top
    of another commit, and the tree's HEAD."""

    def revert_onto(self, base: str, change: str, *, pick: bool = False) -> SyntheticCommit:
        """``change`` reverted (``pick``: applied) on top of ``base``, file by
        file when the whole does not apply."""
        ...

    def head(self) -> str:
        """The commit the tree's HEAD points to."""
        ...


def cc_list(info: CommitInfo) -> list[str]:
    """Sorted unique e-mail addresses of the author and the cc trailers."""
    emails = {info.author_email.strip().lower()} if info.author_email.strip() else set()
    for key, value in info.trailers:
        if key in CC_TRAILERS:
            email = email_of(value)
            if email:
                emails.add(email)
    return sorted(emails)


def email_of(value: str) -> str:
    lt, gt = value.find("<"), value.rfind(">")
    if 0 <= lt < gt:
        return value[lt + 1 : gt].strip().lower()
    value = value.strip()
    return value.lower() if "@" in value and " " not in value else ""


def parse_trailers(message: str) -> tuple[tuple[str, str], ...]:
    """The cc trailers of a commit message, in order (other lines ignored)."""
    out = []
    for line in message.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key in CC_TRAILERS and value.strip():
            out.append((key, value.strip()))
    return tuple(out)
