"""The user's kernel git tree, read-only, and the worktrees kvmlab builds in.

kvmlab never changes the user's checkout or HEAD: builds happen in a detached
``git worktree`` under kvmlab's work directory.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from kvmlab import proc
from kvmlab.errors import ProcessError, UnknownCommitError, UserError

log = logging.getLogger(__name__)

#: Seconds for quick git queries and for checkouts (a far checkout rewrites
#: tens of thousands of files).
GIT_QUERY_TIMEOUT = 60.0
GIT_CHECKOUT_TIMEOUT = 900.0

#: Files every kernel tree has at its top.
_KERNEL_MARKERS = ("Makefile", "Kbuild", "Kconfig")


class NotAKernelTreeError(UserError):
    """The path given as a kernel tree is not a git repository of a kernel."""


def git(repo: Path, *args: str, timeout: float = GIT_QUERY_TIMEOUT, check: bool = True) -> proc.Completed:
    return proc.run(["git", "-C", str(repo), *args], timeout=timeout, check=check)


@dataclass(frozen=True)
class KernelTree:
    """A kernel git repository (the user's); only read."""

    path: Path
    git_dir: Path
    """The common git directory (shared with worktrees)."""

    @classmethod
    def open(cls, path: Path) -> KernelTree:
        """Check that ``path`` is a git repository holding a kernel; one-line
        :class:`NotAKernelTreeError` otherwise."""
        if not path.is_dir():
            raise NotAKernelTreeError(f"not a kernel tree: {path} is not a directory")
        res = git(path, "rev-parse", "--path-format=absolute", "--git-common-dir", check=False)
        if res.returncode != 0:
            raise NotAKernelTreeError(f"not a kernel tree: {path} is not a git repository")
        tree = cls(path.resolve(), Path(res.stdout.strip()))
        head = git(path, "rev-parse", "--verify", "-q", "HEAD^{commit}", check=False)
        if head.returncode != 0:
            raise NotAKernelTreeError(f"not a kernel tree: {path} has no commits")
        top = set(git(path, "ls-tree", "--name-only", "HEAD").stdout.split())
        missing = [m for m in _KERNEL_MARKERS if m not in top]
        if missing or "arch" not in top:
            raise NotAKernelTreeError(
                f"not a kernel tree: {path} has no {', '.join(missing or ['arch/'])} at HEAD"
            )
        return tree

    def resolve(self, rev: str) -> str:
        """Full commit id of ``rev``; UnknownCommitError if it does not resolve."""
        if not rev or rev.startswith("-"):
            raise UnknownCommitError(f"unknown commit {rev!r} in {self.path}")
        res = git(self.path, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}", check=False)
        if res.returncode != 0:
            raise UnknownCommitError(f"unknown commit {rev!r} in {self.path}")
        return res.stdout.strip()

    def tree_hash(self, commit: str) -> str:
        """The git tree id of ``commit``: equal trees build equal kernels."""
        return git(self.path, "rev-parse", f"{commit}^{{tree}}").stdout.strip()

    def show(self, commit: str, path: str) -> str:
        """Text of file ``path`` at ``commit``."""
        try:
            return git(self.path, "show", f"{commit}:{path}").stdout
        except ProcessError as e:
            raise NotAKernelTreeError(f"not a kernel tree: no {path} at {commit[:12]} in {self.path}") from e

    def ensure_worktree(self, where: Path) -> Path:
        """A detached worktree of this repository at ``where`` (made if absent)."""
        if (where / ".git").exists():
            res = git(where, "rev-parse", "--path-format=absolute", "--git-common-dir", check=False)
            if res.returncode == 0 and Path(res.stdout.strip()) == self.git_dir:
                return where
            # The repository was re-made at the same path: the old worktree is dead.
            log.info("replacing stale build worktree %s", where)
            shutil.rmtree(where)
        where.parent.mkdir(parents=True, exist_ok=True)
        # A stale registration (directory deleted by hand) would block `add`.
        git(self.path, "worktree", "prune")
        log.info("creating build worktree %s", where)
        git(self.path, "worktree", "add", "--detach", "--no-checkout", str(where), "HEAD",
            timeout=GIT_CHECKOUT_TIMEOUT)
        return where

    def checkout(self, worktree: Path, commit: str) -> None:
        """Put ``worktree`` at ``commit``, discarding anything else in it.

        Only files that differ are rewritten, so their mtimes (and hence
        make's view of what changed) reflect the real difference.
        """
        git(worktree, "checkout", "--detach", "--force", "-q", commit, timeout=GIT_CHECKOUT_TIMEOUT)
        git(worktree, "clean", "-fdxq", timeout=GIT_CHECKOUT_TIMEOUT)
