"""The user's kernel git tree, read-only, and the worktrees kvmlab builds in.

kvmlab never changes the user's checkout or HEAD: builds happen in a detached
``git worktree`` under kvmlab's work directory (:mod:`kvmlab.git`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvmlab.errors import ProcessError, UnknownCommitError, UserError
from kvmlab.git import Repo

#: Files every kernel tree has at its top.
_KERNEL_MARKERS = ("Makefile", "Kbuild", "Kconfig")


class NotAKernelTreeError(UserError):
    """The path given as a kernel tree is not a git repository of a kernel."""


@dataclass(frozen=True)
class KernelTree:
    """A kernel git repository (the user's); only read."""

    repo: Repo
    git_dir: Path
    """The common git directory (shared with worktrees)."""

    @property
    def path(self) -> Path:
        return self.repo.path

    @classmethod
    def open(cls, path: Path) -> KernelTree:
        """Check that ``path`` is a git repository holding a kernel; one-line
        :class:`NotAKernelTreeError` otherwise."""
        if not path.is_dir():
            raise NotAKernelTreeError(f"not a kernel tree: {path} is not a directory")
        repo = Repo(path.resolve())
        git_dir = repo.common_dir()
        if git_dir is None:
            raise NotAKernelTreeError(f"not a kernel tree: {path} is not a git repository")
        if not repo.has_commits():
            raise NotAKernelTreeError(f"not a kernel tree: {path} has no commits")
        top = repo.top_names()
        missing = [m for m in _KERNEL_MARKERS if m not in top]
        if missing or "arch" not in top:
            raise NotAKernelTreeError(
                f"not a kernel tree: {path} has no {', '.join(missing or ['arch/'])} at HEAD"
            )
        return cls(repo, git_dir)

    def resolve(self, rev: str) -> str:
        """Full commit id of ``rev``; UnknownCommitError if it does not resolve."""
        try:
            return self.repo.resolve(rev)
        except UnknownCommitError:
            raise UnknownCommitError(f"unknown commit {rev!r} in {self.path}") from None

    def show(self, commit: str, path: str) -> str:
        """Text of file ``path`` at ``commit``."""
        try:
            return self.repo.show_file(commit, path)
        except ProcessError as e:
            raise NotAKernelTreeError(f"not a kernel tree: no {path} at {commit[:12]} in {self.path}") from e
