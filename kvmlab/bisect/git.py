"""A :class:`~kvmlab.bisect.seams.Repository` backed by the ``git`` command.

Each question is one git call, however many commits it covers: the whole
range comes from a single ``git log`` with parents and subjects.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kvmlab import proc
from kvmlab.bisect.graph import CommitGraph
from kvmlab.bisect.seams import CommitInfo, SyntheticCommit, Tag, email_of, parse_trailers
from kvmlab.errors import InfraError, MissingFileError, ProcessError, UnknownCommitError

log = logging.getLogger(__name__)

#: Seconds for one git call; a range log of a kernel tree takes a few seconds.
GIT_TIMEOUT = 300.0

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
    """A git working tree or bare repository at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise MissingFileError(f"{self.path}: no such git tree")

    def _git(self, *args: str, check: bool = True) -> proc.Completed:
        return proc.run(["git", "-C", str(self.path), *args], timeout=GIT_TIMEOUT, check=check)

    def resolve(self, rev: str) -> str:
        done = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
                         check=False)
        if done.returncode != 0 or not done.stdout.strip():
            raise UnknownCommitError(f"{rev}: unknown revision in {self.path}")
        return done.stdout.strip()

    def graph(self, bad: str, good: Sequence[str]) -> CommitGraph:
        args = ["log", "--topo-order", "--reverse", "--format=%H%x00%P%x00%s", bad,
                *(f"^{g}" for g in good), "--"]
        rows: list[tuple[str, list[str], str]] = []
        for line in self._git(*args).stdout.splitlines():
            if not line:
                continue
            h, parents, subject = line.split("\x00", 2)
            rows.append((h, parents.split(), subject))
        return CommitGraph.from_parents(rows, tip=bad, boundary=good)

    def is_ancestor(self, a: str, b: str) -> bool:
        done = self._git("merge-base", "--is-ancestor", a, b, check=False)
        if done.returncode not in (0, 1):
            raise ProcessError(done.argv, done.returncode, done.output)
        return done.returncode == 0

    def release_tags(self, tip: str, floor: str | None = None) -> list[Tag]:
        floor_v = None
        if floor is not None:
            floor_v = release_version(floor)
            if floor_v is None:
                raise UnknownCommitError(f"{floor}: not a release tag name (vX.Y)")
        out = self._git(
            "for-each-ref", "--merged", tip,
            "--format=%(refname:short)%00%(objectname)%00%(*objectname)", "refs/tags/v*",
        ).stdout
        found: list[tuple[tuple[int, int, int], Tag]] = []
        for line in out.splitlines():
            name, obj, peeled = [*line.split("\x00"), "", ""][:3]
            v = release_version(name)
            if v is None or (floor_v is not None and v < floor_v):
                continue
            found.append((v, Tag(name, peeled or obj)))
        found.sort(key=lambda t: t[0], reverse=True)
        return [t for _, t in found]

    def commit_info(self, commit: str) -> CommitInfo:
        fmt = "%H%x00%P%x00%an%x00%ae%x00%ad%x00%s%x00%B"
        out = self._git("show", "-s", "--date=default", f"--format={fmt}", commit, "--").stdout
        h, parents, name, email, date, subject, body = out.split("\x00", 6)
        message = body.rstrip("\n")
        return CommitInfo(
            hash=h, parents=tuple(parents.split()), subject=subject, author_name=name,
            author_email=email, date=date, message=message, trailers=parse_trailers(message),
        )

    def tree_hash(self, commit: str) -> str:
        return self._git("rev-parse", f"{commit}^{{tree}}").stdout.strip()

    def maintainers(self, commit: str) -> list[str]:
        """Addresses ``scripts/get_maintainer.pl`` of the checked-out tree gives
        for ``commit``'s patch; empty (with a warning) when the script is absent
        or fails: a missing cc line must not lose a bisection's result."""
        script = self.path / "scripts" / "get_maintainer.pl"
        if not script.is_file():
            return []
        patch = self._git("format-patch", "-1", "--stdout", commit, check=False)
        if patch.returncode != 0:
            log.warning("get_maintainer.pl skipped: git format-patch %s failed", commit[:12])
            return []
        with tempfile.NamedTemporaryFile("w", prefix="kvmlab-culprit-", suffix=".patch") as f:
            f.write(patch.stdout)
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
        made with git's plumbing in a private index: no branch, tag, worktree
        or checkout of the user changes. Dates are the base's, so the same
        request always gives the same commit (a resumed bisection re-uses it).
        When the whole patch does not apply, each file's part that does is
        taken and the rest named in ``failed``."""
        info = self.commit_info(change)
        parent = info.parents[0] if info.parents else None
        if parent is None:
            raise UnknownCommitError(f"{change[:12]}: a root commit cannot be reverted")
        old, new = (parent, change) if pick else (change, parent)
        with tempfile.TemporaryDirectory(prefix="kvmlab-revert-") as tmp:
            date = self._git("show", "-s", "--format=%cI", base).stdout.strip()
            env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index"),
                   "GIT_AUTHOR_NAME": "kvmlab", "GIT_AUTHOR_EMAIL": "kvmlab@localhost",
                   "GIT_COMMITTER_NAME": "kvmlab", "GIT_COMMITTER_EMAIL": "kvmlab@localhost",
                   "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}

            def git(*args: str, check: bool = True) -> proc.Completed:
                return proc.run(["git", "-C", str(self.path), *args], timeout=GIT_TIMEOUT, env=env,
                                check=check)

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
                return SyntheticCommit(base, change, None, (), tuple(failed))
            tree = git("write-tree").stdout.strip()
            verb = "Apply" if pick else "Revert"
            partial = f"\n\nOnly these files: {', '.join(applied)}." if failed else ""
            msg = (f'{verb} "{info.subject}"\n\nThis {"applies" if pick else "reverts"} commit {change} '
                   f"on top of {base}, to confirm a bisection (made by kvmlab, on no branch).{partial}")
            commit = git("commit-tree", tree, "-p", base, "-m", msg).stdout.strip()
        return SyntheticCommit(base, change, commit, tuple(applied), tuple(failed))
