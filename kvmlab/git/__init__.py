"""The one place kvmlab runs ``git``: the user's kernel trees (only read),
the worktrees kvmlab builds in, and commits it makes with git's plumbing in a
private index (never on a branch of the user's)."""

from kvmlab.git.repo import (
    CHECKOUT_TIMEOUT,
    GIT_TIMEOUT,
    AppliedChange,
    CommitRecord,
    PatchedCommit,
    Repo,
    run_git,
)

__all__ = ["CHECKOUT_TIMEOUT", "GIT_TIMEOUT", "AppliedChange", "CommitRecord", "PatchedCommit", "Repo",
           "run_git"]
