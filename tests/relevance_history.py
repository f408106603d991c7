"""A throwaway kernel-like git history whose commits touch named paths, and a
fake tester whose kernels are made only of the files the "build" reads.

Shared by ``tests/test_relevance.py`` and ``benchmarks/relevance.py``. The
fake's build reads :attr:`RelevanceTester.inputs`; the kernel binary's digest
is the content of those files (and of every Kconfig/Makefile) at the commit,
so commits that touch nothing built really do build byte-identical kernels,
as reproducible kernel builds do. A commit crashes when it contains the
culprit.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kvmlab import proc
from kvmlab.bisect import GitRepository
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome, RunStatus

TITLE = "KASAN: use-after-free Read in target_bug"
_ENV = {
    "GIT_AUTHOR_NAME": "Ann Author", "GIT_AUTHOR_EMAIL": "ann@example.org",
    "GIT_COMMITTER_NAME": "Carl Committer", "GIT_COMMITTER_EMAIL": "carl@example.org",
    "GIT_AUTHOR_DATE": "2018-08-16T21:49:07+02:00", "GIT_COMMITTER_DATE": "2018-08-16T21:49:07+02:00",
    "PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
}

#: Files the fake build reads (its ``.cmd`` files would name them).
BUILT: tuple[str, ...] = ("kernel/sys.c", "mm/slub.c", "fs/ext4/inode.c", "include/linux/sched.h",
                          "arch/x86/kernel/setup.c", "net/core/dev.c")
#: Files in the tree the build never reads.
NOT_BUILT: tuple[str, ...] = ("drivers/gpu/drm/i915/i915_drv.c", "drivers/net/wireless/ath/ath9k/main.c",
                              "arch/arm64/kernel/setup.c", "arch/riscv/mm/init.c",
                              "Documentation/admin-guide/README.rst", "Documentation/process/howto.rst",
                              "tools/perf/builtin-top.c", "tools/testing/selftests/net/tls.c")
#: Files every build reads but whose changes here are comments (the same binary).
COSMETIC: tuple[str, ...] = ("kernel/comments.c",)


def git(path: Path, *args: str) -> str:
    return proc.run(["git", "-C", str(path), *args], timeout=60, env=_ENV).stdout.strip()


@dataclass
class PathHistory:
    """A repo whose commits are titled ``0..n`` (merges too); ``h[title]`` is the hash."""

    path: Path
    h: dict[str, str] = field(default_factory=dict)
    touched: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Title -> the paths that commit changed."""

    @property
    def repo(self) -> GitRepository:
        return GitRepository(self.path)

    def title(self, commit: str) -> str:
        return {v: k for k, v in self.h.items()}[commit]


def _write(hist: PathHistory, title: str, paths: Sequence[str]) -> None:
    for p in paths:
        f = hist.path / p
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"{p} as of {title}\n")
    git(hist.path, "add", "-A")
    git(hist.path, "commit", "-q", "--allow-empty", "-m", title)
    hist.h[title] = git(hist.path, "rev-parse", "HEAD")
    hist.touched[title] = tuple(paths)


def make_path_history(path: Path, commits: Sequence[Sequence[str]], *,
                      side: tuple[int, Sequence[Sequence[str]], int] | None = None) -> PathHistory:
    """Commit ``i`` (title ``str(i)``) changes the paths ``commits[i]``;
    commit 0 adds every file of :data:`BUILT`, :data:`NOT_BUILT`,
    :data:`COSMETIC` and a top Kconfig and Makefile. ``side=(fork, branch,
    merge_at)``: a branch of commits titled ``b1..`` (changing ``branch[k]``)
    forked after commit ``fork``, merged by commit ``merge_at`` (a merge)."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "master")
    hist = PathHistory(path)
    _write(hist, "0", [*BUILT, *NOT_BUILT, *COSMETIC, "Kconfig", "Makefile", *commits[0]])
    for i in range(1, len(commits)):
        if side is not None and i == side[2]:
            git(path, "checkout", "-q", "-b", "side", hist.h[str(side[0])])
            for k, paths in enumerate(side[1], 1):
                _write(hist, f"b{k}", paths)
            git(path, "checkout", "-q", "master")
            git(path, "merge", "-q", "--no-ff", "-m", str(i), "side")
            hist.h[str(i)] = git(path, "rev-parse", "HEAD")
            hist.touched[str(i)] = ()
            continue
        _write(hist, str(i), commits[i])
    return hist


@dataclass
class RelevanceTester:
    """Builds read :attr:`inputs`; a commit that contains ``culprit`` crashes
    in a share ``p`` of its runs (1.0: every run)."""

    hist: PathHistory
    culprit: str
    p: float = 1.0
    seed: int = 0
    inputs: frozenset[str] = frozenset(BUILT) | frozenset(COSMETIC)
    with_inputs: bool = True
    """False: the tester cannot say what its builds read (relevance unknown)."""
    built: list[str] = field(default_factory=list)
    vm_runs: int = 0
    _anc: dict[str, bool] = field(default_factory=dict)

    def _crashes(self, commit: str) -> bool:
        if commit not in self._anc:
            self._anc[commit] = self.hist.repo.is_ancestor(self.hist.h[self.culprit], commit)
        return self._anc[commit]

    def digest(self, commit: str) -> str:
        """The kernel binary: the built files' and the Kconfig/Makefiles' blobs."""
        listing = git(self.hist.path, "ls-tree", "-r", commit)
        h = hashlib.sha256()
        for line in sorted(listing.splitlines()):
            meta, _, name = line.partition("\t")
            base = name.rsplit("/", 1)[-1]
            if name in COSMETIC:
                continue
            if name in self.inputs or base.startswith(("Kconfig", "Makefile", "Kbuild")):
                h.update(f"{name} {meta.split()[2]}\n".encode())
        return h.hexdigest()

    def build(self, commit: str) -> BuildOutcome:
        self.built.append(commit)
        return BuildOutcome(commit, BuildStatus.OK, compiler="gcc (GCC) 12.2.0",
                            artifacts={"kernel_sha256": self.digest(commit)}, duration=60.0)

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        bad = self._crashes(build.commit)
        out = []
        for k in range(runs):
            self.vm_runs += 1
            if bad and random.Random(f"{self.seed}/{build.commit}/{self.vm_runs}").random() < self.p:
                out.append(RunOutcome(k, RunStatus.CRASHED, title=TITLE, report=f"report of {TITLE}",
                                      duration=30))
            else:
                out.append(RunOutcome(k, RunStatus.OK, duration=60))
        return out

    def build_inputs(self, build: BuildOutcome) -> frozenset[str] | None:
        return self.inputs if self.with_inputs else None
