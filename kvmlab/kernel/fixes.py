"""Known build fixes for older kernels: applied when a commit does not build
with today's tool-chain, so a bisection or a release ladder reaches older
releases on a Debian 12 host instead of stopping at the first such failure.

The table is data (``kernel_configs/build_fixes.yaml``, on the fragments'
search path so a user's directory can replace it): per entry an upstream fix
commit and the build error it cures. :func:`build_with_fixes` builds a
commit; when the build fails with an entry's error, it applies that fix's
change on top of the commit (a synthetic commit on no branch, made with git
plumbing: :meth:`kvmlab.git.Repo.commit_change`), builds that, and repeats
while a new error has a known fix. The outcome keeps the asked-for commit's
hash and names the fixes applied (:attr:`BuildOutcome.fixes`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kvmlab import checks
from kvmlab.errors import ConfigError, UnknownCommitError
from kvmlab.git import Repo
from kvmlab.outcome import BuildOutcome, BuildStatus

log = logging.getLogger(__name__)

TABLE_NAME = "build_fixes.yaml"

_KEYS = {"title", "commit", "error", "after", "why"}
_HASH = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class BuildFix:
    """One known fix: the upstream commit ``commit`` (subject ``title``) cures
    builds whose log matches ``error``."""

    title: str
    commit: str
    error: re.Pattern[str]
    after: str | None = None
    """Only for commits that contain this one (the breakage's origin)."""
    why: str = ""

    def describe(self) -> str:
        return f"{self.commit[:12]} (\"{self.title}\")"


def load_table(path: Path) -> list[BuildFix]:
    """Load and validate a fixes table; a bad entry is one ConfigError naming
    the file, the entry and the key."""
    out = []
    for where, entry in checks.load_table(path, "build fixes table", "fixes", _KEYS):
        for key in ("title", "commit", "error"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(f"{where}: {key!r} is required (a string)")
        for key in ("commit", "after"):
            if key in entry and not (isinstance(entry[key], str) and _HASH.match(entry[key])):
                raise ConfigError(f"{where}: {key!r} must be a full 40-hex commit hash")
        try:
            error = re.compile(entry["error"])
        except re.error as e:
            raise ConfigError(f"{where}: 'error' is not a regular expression: {e}") from None
        out.append(BuildFix(title=entry["title"], commit=entry["commit"], error=error,
                            after=entry.get("after"), why=str(entry.get("why", ""))))
    return out


def matching(fixes: Sequence[BuildFix], log_text: str) -> list[BuildFix]:
    """The fixes whose error shows in ``log_text``, in table order."""
    return [f for f in fixes if f.error.search(log_text)]


def _log_text(out: BuildOutcome) -> str:
    path = out.artifacts.get("build.log")
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    return f"{out.log_tail}\n{out.error}"


def build_with_fixes(repo: Repo, commit: str, build: Callable[[str], BuildOutcome],
                     fixes: Sequence[BuildFix], *, say: Callable[[str], None] | None = None) -> BuildOutcome:
    """``build(commit)``; when it fails with a known error, the same with the
    fix applied on top (as many rounds as new known errors show). The outcome
    is the last build's, under ``commit``'s hash, with :attr:`BuildOutcome.fixes`
    naming what was applied (empty when the commit built as it is, or when no
    fix helped: then it is the commit's own failed build). ``say`` hears one
    line per fix tried."""
    tell = say or (lambda line: log.info("%s", line))
    first = out = build(commit)
    base = commit
    applied: list[BuildFix] = []
    tried: set[str] = set()
    while out.status is BuildStatus.FAILED:
        todo = [f for f in matching(fixes, _log_text(out)) if f.commit not in tried]
        if not todo:
            break
        moved = False
        for f in todo:
            tried.add(f.commit)
            why = _not_applicable(repo, commit, f)
            if why:
                tell(f"kvmlab: known build fix {f.describe()} not applied to {commit[:12]}: {why}")
                continue
            made = repo.commit_change(base, f"{f.commit}^", f.commit,
                                      f"{f.title}\n\nBuild fix {f.commit} applied by kvmlab on top of "
                                      f"{commit} (made on no branch).")
            if made.commit is None or made.failed:
                tell(f"kvmlab: known build fix {f.describe()} does not apply on {commit[:12]}")
                continue
            tell(f"kvmlab: {commit[:12]} does not build with this tool-chain ({out.error or 'see the log'}): "
                 f"applying the known fix {f.describe()}")
            base, moved = made.commit, True
            applied.append(f)
        if not moved:
            break
        out = build(base)
    if not applied or out.status is not BuildStatus.OK:
        if applied:
            tell(f"kvmlab: {commit[:12]} still does not build with the known fixes: {out.error}")
        return first
    return dataclasses.replace(out, commit=commit, fixes=tuple(f"{f.commit} {f.title}" for f in applied))


def _not_applicable(repo: Repo, commit: str, f: BuildFix) -> str:
    """Why ``f`` cannot be applied to ``commit`` ('' when it can)."""
    try:
        repo.resolve(f.commit)
    except UnknownCommitError:
        return "the fix commit is not in this tree (fetch mainline to use it)"
    if repo.is_ancestor(f.commit, commit):
        return "the commit already contains it"
    if f.after is not None:
        try:
            repo.resolve(f.after)
        except UnknownCommitError:
            return "the breakage's commit is not in this tree"
        if not repo.is_ancestor(f.after, commit):
            return "the commit predates the breakage it fixes"
    return ""
