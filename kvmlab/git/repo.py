"""A git repository, through the ``git`` command.

Each question is one git call however many commits it covers (a range comes
from a single ``git log``). Nothing here changes the user's checkout, index,
HEAD or refs: builds use detached worktrees kvmlab owns
(:meth:`Repo.ensure_worktree`), and synthetic commits (a revert to confirm a
culprit) are written with git's plumbing in a private index and are on no
branch (:meth:`Repo.commit_change`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kvmlab import owner, proc
from kvmlab.errors import MissingFileError, ProcessError, UnknownCommitError
from kvmlab.git.patch import failure as patch_failure

log = logging.getLogger(__name__)

#: Seconds for one git query; a range log of a kernel tree takes a few seconds.
GIT_TIMEOUT = 300.0
#: Seconds for a checkout or a worktree (a far checkout rewrites tens of
#: thousands of files).
CHECKOUT_TIMEOUT = 900.0

#: Identity and fixed dates of the commits kvmlab makes: the same request
#: always gives the same commit id.
_KVMLAB_IDENTITY = {"GIT_AUTHOR_NAME": "kvmlab", "GIT_AUTHOR_EMAIL": "kvmlab@localhost",
                    "GIT_COMMITTER_NAME": "kvmlab", "GIT_COMMITTER_EMAIL": "kvmlab@localhost"}


def run_git(path: Path, *args: str, timeout: float = GIT_TIMEOUT, check: bool = True,
            env: Mapping[str, str] | None = None) -> proc.Completed:
    """``git -C path ARGS`` through :func:`kvmlab.proc.run`."""
    return proc.run(["git", "-C", str(path), *args], timeout=timeout, check=check,
                    env=dict(env) if env is not None else None)


@dataclass(frozen=True)
class CommitRecord:
    """What ``git show -s`` says of one commit."""

    hash: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    date: str
    """As git prints it by default."""
    subject: str
    message: str
    """The whole message, without the trailing newline."""


@dataclass(frozen=True)
class AppliedChange:
    """A commit made on ``base`` from the diff between two commits."""

    commit: str | None
    """None when no file's part applied."""
    applied: tuple[str, ...]
    failed: tuple[str, ...]
    """Files whose part did not apply (the rest was applied without them)."""


@dataclass(frozen=True)
class PatchedCommit:
    """Patches applied on a commit: the new commit, or what did not apply."""

    commit: str | None
    """None when a patch did not apply."""
    failed: Path | None = None
    """The patch that did not apply."""
    failure: str = ""
    """Which file and hunk (:func:`kvmlab.git.patch.failure`)."""


class Repo:
    """A git working tree or bare repository at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise MissingFileError(f"{self.path}: no such git tree")

    def git(self, *args: str, timeout: float = GIT_TIMEOUT, check: bool = True,
            env: Mapping[str, str] | None = None) -> proc.Completed:
        return run_git(self.path, *args, timeout=timeout, check=check, env=env)

    # -- questions ----------------------------------------------------------------------------

    def resolve(self, rev: str) -> str:
        """The full commit id of ``rev``; :class:`UnknownCommitError` naming it otherwise."""
        if not rev or rev.startswith("-"):
            raise UnknownCommitError(f"{rev!r}: unknown revision in {self.path}")
        done = self.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
                        check=False)
        if done.returncode != 0 or not done.stdout.strip():
            if self.git("rev-parse", "--git-dir", check=False).returncode != 0:
                raise UnknownCommitError(f"{self.path}: not a git repository (looking for {rev})")
            raise UnknownCommitError(f"{rev}: unknown revision in {self.path}")
        return done.stdout.strip()

    def has_commits(self) -> bool:
        return self.git("rev-parse", "--verify", "-q", "HEAD^{commit}", check=False).returncode == 0

    def common_dir(self) -> Path | None:
        """The git directory shared by all worktrees (None: not a git repository)."""
        res = self.git("rev-parse", "--path-format=absolute", "--git-common-dir", check=False)
        return Path(res.stdout.strip()) if res.returncode == 0 else None

    def tree_hash(self, commit: str) -> str:
        """The git tree id of ``commit``: equal trees build equal kernels."""
        return self.git("rev-parse", f"{commit}^{{tree}}").stdout.strip()

    def top_names(self, commit: str = "HEAD") -> set[str]:
        """Names at the top of ``commit``'s tree."""
        return set(self.git("ls-tree", "--name-only", commit).stdout.split())

    def show_file(self, commit: str, path: str) -> str:
        """Text of file ``path`` at ``commit`` (:class:`ProcessError` when absent)."""
        return self.git("show", f"{commit}:{path}").stdout

    def is_ancestor(self, a: str, b: str) -> bool:
        done = self.git("merge-base", "--is-ancestor", a, b, check=False)
        if done.returncode not in (0, 1):
            raise ProcessError(done.argv, done.returncode, done.output)
        return done.returncode == 0

    def log_range(self, tip: str, boundary: Sequence[str]) -> list[tuple[str, list[str], str]]:
        """``(commit, parents, subject)`` of every commit reachable from ``tip``
        and not from ``boundary``, parents before children."""
        args = ["log", "--topo-order", "--reverse", "--format=%H%x00%P%x00%s", tip,
                *(f"^{g}" for g in boundary), "--"]
        rows: list[tuple[str, list[str], str]] = []
        for line in self.git(*args).stdout.splitlines():
            if line:
                h, parents, subject = line.split("\x00", 2)
                rows.append((h, parents.split(), subject))
        return rows

    def changed_paths(self, tip: str, boundary: Sequence[str]) -> dict[str, frozenset[str]]:
        """Per commit reachable from ``tip`` and not from ``boundary``: the paths
        it changes against any of its parents (renames as both paths; a root
        commit: every file it adds), in one ``git log -m``."""
        args = ["log", "-m", "--no-renames", "--name-only", "--format=%x01%H", tip,
                *(f"^{g}" for g in boundary), "--"]
        out: dict[str, set[str]] = {}
        current: set[str] | None = None
        for line in self.git(*args).stdout.splitlines():
            if line.startswith("\x01"):
                current = out.setdefault(line[1:].strip(), set())
            elif line and current is not None:
                current.add(line)
        return {h: frozenset(paths) for h, paths in out.items()}

    def tags(self, *, merged_into: str | None = None, pattern: str = "refs/tags") -> list[tuple[str, str]]:
        """``(tag name, commit it points at)``, annotated tags peeled; only the
        tags reachable from ``merged_into`` when given."""
        args = ["for-each-ref"]
        if merged_into is not None:
            args += ["--merged", merged_into]
        out = self.git(*args, "--format=%(refname:short)%00%(objectname)%00%(*objectname)", pattern).stdout
        tags = []
        for line in out.splitlines():
            name, obj, peeled = [*line.split("\x00"), "", ""][:3]
            tags.append((name, peeled or obj))
        return tags

    def commits(self, hashes: Sequence[str]) -> list[CommitRecord]:
        """:class:`CommitRecord` of each of ``hashes``, in one call."""
        if not hashes:
            return []
        fmt = "%H%x00%P%x00%an%x00%ae%x00%ad%x00%s%x00%B%x1e"
        out = self.git("show", "-s", "--date=default", f"--format={fmt}", *hashes, "--").stdout
        records = []
        for rec in out.split("\x1e"):
            rec = rec.lstrip("\n")
            if not rec:
                continue
            h, parents, name, email, date, subject, body = [*rec.split("\x00", 6), "", "", "", "", "", ""][:7]
            records.append(CommitRecord(h, tuple(parents.split()), name, email, date, subject,
                                        body.rstrip("\n")))
        return records

    def commit(self, rev: str) -> CommitRecord:
        found = self.commits([rev])
        if not found:
            raise UnknownCommitError(f"{rev}: unknown revision in {self.path}")
        return found[0]

    def numstat(self, commit: str) -> str:
        """``git show --numstat`` of ``commit`` against its first parent."""
        return self.git("show", "--numstat", "--format=", "--diff-merges=first-parent", commit, "--").stdout

    def format_patch(self, commit: str) -> str | None:
        """``commit`` as a patch (None when git cannot make one)."""
        done = self.git("format-patch", "-1", "--stdout", commit, check=False)
        return done.stdout if done.returncode == 0 else None

    # -- worktrees kvmlab owns -----------------------------------------------------------------

    def ensure_worktree(self, where: Path) -> Path:
        """A detached worktree of this repository at ``where`` (made if absent)."""
        mine = self.common_dir()
        if (where / ".git").exists():
            if Repo(where).common_dir() == mine:
                return where
            # The repository was re-made at the same path: the old worktree is dead.
            log.info("replacing stale build worktree %s", where)
            shutil.rmtree(where)
        where.parent.mkdir(parents=True, exist_ok=True)
        # A stale registration (directory deleted by hand) would block `add`.
        self.git("worktree", "prune")
        log.info("creating build worktree %s", where)
        self.git("worktree", "add", "--detach", "--no-checkout", str(where), "HEAD", timeout=CHECKOUT_TIMEOUT)
        return where

    @staticmethod
    def checkout(worktree: Path, commit: str) -> None:
        """Put a worktree kvmlab owns at ``commit``, discarding anything else
        in it. Only files that differ are rewritten, so their mtimes (and
        make's view of what changed) reflect the real difference."""
        run_git(worktree, "checkout", "--detach", "--force", "-q", commit, timeout=CHECKOUT_TIMEOUT)
        run_git(worktree, "clean", "-fdxq", timeout=CHECKOUT_TIMEOUT)

    # -- commits kvmlab makes -------------------------------------------------------------------

    def commit_change(self, base: str, old: str, new: str, message: str) -> AppliedChange:
        """A commit on ``base`` holding the diff ``old..new``, made in a private
        index (no branch, tag, worktree or checkout of the user changes).
        Dates are ``base``'s, so the same request always gives the same commit.
        When the whole diff does not apply, each file's part that does is taken
        and the rest named in ``failed``."""
        with owner.tempdir("change") as tmp:
            date = self.git("show", "-s", "--format=%cI", base).stdout.strip()
            env = {**os.environ, **_KVMLAB_IDENTITY, "GIT_INDEX_FILE": str(Path(tmp) / "index"),
                   "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}

            def git(*args: str, check: bool = True) -> proc.Completed:
                return self.git(*args, env=env, check=check)

            git("read-tree", base)
            files = [f for f in git("diff", "--name-only", "--no-renames", old, new, "--").stdout.splitlines()
                     if f]
            whole = str(Path(tmp) / "all.patch")
            git("diff", "--binary", "--no-renames", f"--output={whole}", old, new, "--")
            applied: list[str] = []
            failed: list[str] = []
            if git("apply", "--cached", whole, check=False).returncode == 0:
                applied = files
            else:
                for i, f in enumerate(files):
                    one = str(Path(tmp) / f"{i}.patch")
                    git("diff", "--binary", "--no-renames", f"--output={one}", old, new, "--", f)
                    ok = git("apply", "--cached", one, check=False).returncode == 0
                    (applied if ok else failed).append(f)
            if not applied:
                return AppliedChange(None, (), tuple(failed))
            if failed:
                message += f"\n\nOnly these files: {', '.join(applied)}."
            tree = git("write-tree").stdout.strip()
            commit = git("commit-tree", tree, "-p", base, "-m", message).stdout.strip()
        return AppliedChange(commit, tuple(applied), tuple(failed))

    def apply_patches(self, base: str, patches: Sequence[Path], message: str) -> PatchedCommit:
        """A commit on ``base`` with ``patches`` applied in order (git-format
        or plain unified diffs, ``-p1``; a plain diff without ``a/``/``b/``
        prefixes that fails is tried with ``-p0``), made in a private index
        like :meth:`commit_change`: no branch, no checkout, ``base``'s dates
        and kvmlab's identity, so the same patches on the same base always
        give the same commit. The first patch that does not apply stops it."""
        with owner.tempdir("patch") as tmp:
            date = self.git("show", "-s", "--format=%cI", base).stdout.strip()
            env = {**os.environ, **_KVMLAB_IDENTITY, "GIT_INDEX_FILE": str(Path(tmp) / "index"),
                   "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
            self.git("read-tree", base, env=env)
            for path in patches:
                try:
                    text = path.read_text(errors="replace")
                except OSError as e:
                    raise MissingFileError(f"--patch {path}: {e.strerror}") from None
                absolute = str(path.resolve())
                done = self.git("apply", "--cached", absolute, env=env, check=False)
                if done.returncode != 0 and "\n--- a/" not in f"\n{text}":
                    again = self.git("apply", "--cached", "-p0", absolute, env=env, check=False)
                    if again.returncode == 0:
                        done = again
                if done.returncode != 0:
                    return PatchedCommit(None, path, patch_failure(done.stderr or done.output, text))
            tree = self.git("write-tree", env=env).stdout.strip()
            if tree == self.tree_hash(base):
                return PatchedCommit(None, patches[-1] if patches else None, "the patches change nothing")
            commit = self.git("commit-tree", tree, "-p", base, "-m", message, env=env).stdout.strip()
        return PatchedCommit(commit)
