"""Build a kernel at any commit: worktree, config, make, artifacts, cache.

Layout of the work directory (default ``$XDG_CACHE_HOME/kvmlab/kernel``)::

    slots/<repo-id>-<n>/src      detached git worktree of the user's tree
    slots/<repo-id>-<n>/obj      O= object directory, reused between commits
    slots/<repo-id>-<n>.lock     held while a build uses the slot
    builds/<key>/                one finished build: artifacts + manifest.json
                                 + inputs.txt (the tree files it read)
    requests/<key>.json          (tree, asked-for config, compiler) -> build key

A build is keyed by (source tree hash, final config hash, compiler version):
the same key never builds twice, and two commits with one tree share a build.
A failed compile is a :class:`~kvmlab.outcome.BuildOutcome` with status
FAILED; kvmlab's own and the host's failures are exceptions.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kvmlab import cache, proc
from kvmlab.errors import DiskFullError, HostToolError, InfraError, ProcessError
from kvmlab.git import Repo
from kvmlab.kernel import ccache_front, compilers, distcc, relevance
from kvmlab.kernel.config import (
    ConfigRequest,
    Dropped,
    config_hash,
    dropped_options,
    find_data_file,
    fragment_dirs,
    parse_config,
    render_config,
    summarize_changes,
)
from kvmlab.kernel.tree import KernelTree
from kvmlab.outcome import BuildOutcome, BuildStatus
from kvmlab.text import counted

log = logging.getLogger(__name__)

#: Seconds one ``make`` of the kernel may take before kvmlab kills it.
BUILD_TIMEOUT = 3 * 3600.0
#: Seconds for a Kconfig run (allnoconfig / olddefconfig).
CONFIG_TIMEOUT = 600.0
#: Refuse to start a build with less free space than this in the work dir (bytes).
MIN_FREE_BYTES = 3 * 1024**3
#: Lines of build log kept in a FAILED outcome.
LOG_TAIL_LINES = 60

ARTIFACTS = {
    "bzImage": "arch/x86/boot/bzImage",
    "vmlinux": "vmlinux",
    "System.map": "System.map",
    "config": ".config",
}

#: With CONFIG_GDB_SCRIPTS: the kernel's gdb helpers, kept next to vmlinux in
#: the build entry as Kbuild lays them out in the object dir (``gdb vmlinux``
#: then loads ``vmlinux-gdb.py``, which imports ``scripts/gdb/linux``).
GDB_LOADER = "vmlinux-gdb.py"
GDB_PACKAGE = "scripts/gdb/linux"

# Fixed build identity, so that a rebuild of one tree is byte-for-byte the
# same where the toolchain allows it and ccache can hit.
_REPRO_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC",
    "KBUILD_BUILD_USER": "kvmlab",
    "KBUILD_BUILD_HOST": "kvmlab",
    "LOCALVERSION": "",
}

_COMPILE_LINE = re.compile(r"^\s+(CC|AS)\s+\S+\.o$")


def default_work_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kvmlab" / "kernel"


@dataclass(frozen=True)
class Progress:
    """A progress report from a running build."""

    phase: str
    """``checkout``, ``config``, ``compile`` or ``done``."""
    objects: int = 0
    """Objects compiled so far in this build."""
    line: str = ""
    """The last line make printed."""
    elapsed: float = 0.0
    """Seconds since the build started."""


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class BuildManifest:
    """What one build was (``manifest.json``): enough to reproduce and to report it."""

    commit: str
    tree_hash: str
    config_hash: str
    config_request: str
    compiler: str
    """First line of ``cc --version``."""
    cc: str
    status: str
    duration: float
    """Seconds of the build that made this entry (0 never; cache hits keep it)."""
    objects_compiled: int
    ccache_hits: int
    ccache_misses: int
    dropped: list[str]
    """Requested options Kconfig did not keep, ``NAME=wanted (got x)``."""
    argv: list[str]
    """kvmlab's own command line (or the caller's argv)."""
    make_argv: list[str]
    kernel_sha256: str = ""
    error: str = ""
    key: str = ""
    slot: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """``incremental``: the slot held an earlier build's objects (else a clean build)."""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def load(cls, path: Path) -> BuildManifest:
        return cls(**json.loads(path.read_text()))


#: Bumped when the way kvmlab builds changes the binaries (2: source paths in
#: the kernel's own messages no longer carry the slot layout's "../src/").
BUILD_RECIPE = 2


@functools.cache
def _takes_macro_prefix_map(cc: str) -> bool:
    """gcc >= 8 and clang >= 10 know -fmacro-prefix-map; older ones fail on it."""
    try:
        done = proc.run([cc, "-fmacro-prefix-map=a=b", "-E", "-x", "c", "-"], timeout=60, check=False,
                        input_text="")
    except InfraError:
        return False
    return done.returncode == 0


def build_key(tree_hash: str, final_config_hash: str, compiler_version: str) -> str:
    """The cache key of a build (hex, 24 chars)."""
    h = hashlib.sha256(f"{BUILD_RECIPE}\0{tree_hash}\0{final_config_hash}\0{compiler_version}".encode())
    return h.hexdigest()[:24]


def request_key(
    tree_hash: str, config: ConfigRequest, requested: dict[str, str], compiler_version: str
) -> str:
    """Key of what was *asked* (before Kconfig): lets a repeated request find
    its build without a checkout."""
    text = render_config(requested) if config.full_config is None or config.fragments else config.full_config
    parts = (str(BUILD_RECIPE), tree_hash, config.describe(), text, compiler_version)
    h = hashlib.sha256("\0".join(parts).encode())
    return h.hexdigest()[:24]


def _parse_dropped(text: str) -> Dropped:
    """A manifest's ``NAME=wanted (got x)`` back into a Dropped."""
    m = re.fullmatch(r"(\S+?)=(.*) \(got (.*)\)", text)
    return Dropped(m.group(1), m.group(2), m.group(3)) if m else Dropped(text, "", "")


def first_error(log_text: str) -> str:
    """The first compiler/linker error line of a build log, else make's own
    error, else the last line."""
    lines = log_text.splitlines()
    for pat in (r":\d+(:\d+)?: (fatal )?error: ", r"\berror: ", r"undefined reference to", r"^make.*\*\*\*"):
        for line in lines:
            if re.search(pat, line):
                return line.strip()
    return lines[-1].strip() if lines else "build failed with no output"


def ccache_counts(stats_log: str) -> tuple[int, int]:
    """(hits, misses) from a ccache ``stats_log`` file's text."""
    hits = misses = 0
    for line in stats_log.splitlines():
        word = line.strip()
        if word in ("direct_cache_hit", "preprocessed_cache_hit"):
            hits += 1
        elif word == "cache_miss":
            misses += 1
    return hits, misses


def _remove_dead_tmps(builds: Path) -> None:
    """Remove half-written build entries left by killed kvmlab processes."""
    for tmp in builds.glob(".*.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _copy_gdb_scripts(obj: Path, dest: Path) -> None:
    """The gdb helpers of an object dir (symlinks into the source tree, and the
    generated constants.py), copied as plain files into ``dest``: the slot's
    source tree moves on to other commits, the build entry must not."""
    shutil.copy2((obj / GDB_LOADER).resolve(), dest / GDB_LOADER)
    pkg = dest / GDB_PACKAGE
    pkg.mkdir(parents=True)
    for f in sorted((obj / GDB_PACKAGE).glob("*.py")):
        shutil.copy2(f.resolve(), pkg / f.name)


class KernelBuilder:
    """Builds kernels from a git tree into a shared, cached work directory.

    ``jobs`` defaults to the core count; ``ccache`` puts ccache in front of
    the compiler when it is installed (keeping ``CCACHE_DIR`` from the
    environment). ``distcc_hosts``: compile hosts (see
    :mod:`kvmlab.kernel.distcc`): ccache's misses are compiled there, ``make
    -j`` is their slots plus ``jobs``, and the manifest says so.
    ``fragments_dir``: the user's fragments (and compiler table), looked up
    before kvmlab's own (see :func:`fragment_dirs`).
    """

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        fragments_dir: Path | None = None,
        compiler_table: Path | None = None,
        compiler: str | None = None,
        jobs: int | None = None,
        ccache: bool = True,
        timeout: float = BUILD_TIMEOUT,
        min_free_bytes: int = MIN_FREE_BYTES,
        max_slots: int = 4,
        distcc_hosts: tuple[distcc.CompileHost, ...] = (),
    ) -> None:
        self.work_dir = (work_dir or default_work_dir()).resolve()
        self.fragment_dirs = fragment_dirs(fragments_dir)
        self.rules = compilers.load_table(
            compiler_table or find_data_file("compilers.yaml", self.fragment_dirs))
        self.compiler_override = compiler
        self.jobs = jobs or os.cpu_count() or 1
        self.ccache = shutil.which("ccache") if ccache else None
        self.distcc_hosts = distcc_hosts
        self.distcc: str | None = None
        if distcc_hosts:
            self.distcc = shutil.which("distcc")
            if self.distcc is None:
                raise HostToolError("distcc: not found on this host (kernel.distcc_hosts is set): "
                                    "apt-get install distcc")
            self.jobs = distcc.job_count(distcc_hosts, self.jobs)
        self.timeout = timeout
        self.min_free_bytes = min_free_bytes
        self.max_slots = max_slots
        self._last_changes: tuple[str, ...] | None = None

    # -- public API -------------------------------------------------------

    def with_jobs(self, jobs: int) -> KernelBuilder:
        """The same builder (work dir, cache, compiler) running ``make -j jobs``."""
        other = copy.copy(self)
        other.jobs = jobs
        return other

    def build(
        self,
        tree_path: Path,
        rev: str,
        config: ConfigRequest,
        *,
        out_dir: Path | None = None,
        progress: ProgressCallback | None = None,
        argv: Sequence[str] = (),
        slot: int | None = None,
    ) -> BuildOutcome:
        """Build ``rev`` of the kernel at ``tree_path`` with ``config``.

        Returns a BuildOutcome (OK or FAILED; ``cached`` when nothing was
        built). ``artifacts`` maps names to paths in the cache, or in
        ``out_dir`` when given (copied there). Raises UserError for bad input
        (not a kernel tree, unknown commit/fragment), InfraError for the host
        (compiler missing, disk full, make timing out).
        """
        report = progress or (lambda _p: None)
        started = time.monotonic()
        tree = KernelTree.open(tree_path)
        commit = tree.resolve(rev)
        tree_hash = tree.repo.tree_hash(commit)
        requested = config.requested(self.fragment_dirs)
        cc = self._compiler_for(tree, commit)
        rkey = request_key(tree_hash, config, requested, cc.version)

        known = self._lookup_request(rkey)
        if known is not None:
            log.info("build cache hit for %s (%s)", commit[:12], known.name)
            cache.touch(known)  # used now: the cache's size limit removes the least recently used
            report(Progress("done", elapsed=time.monotonic() - started))
            outcome = self._outcome(known, commit, cached=True, out_dir=out_dir)
            self._note_changes(commit, BuildManifest.load(known / "manifest.json").dropped)
            return outcome

        self._check_disk()
        with self._slot(tree, slot, config) as (slot_name, src, obj):
            report(Progress("checkout", elapsed=time.monotonic() - started))
            tree.repo.ensure_worktree(src)
            Repo.checkout(src, commit)
            report(Progress("config", elapsed=time.monotonic() - started))
            # Objects of an earlier build in this slot make this one incremental.
            incremental = (obj / ".config").is_file()
            env = self._make_env(obj, cc)
            make_base = self._make_base(src, obj, cc)
            final_text, dropped = self._configure(make_base, env, obj, config, requested)
            key = build_key(tree_hash, config_hash(final_text), cc.version)
            entry = self.work_dir / "builds" / key
            self._note_changes(commit, [str(d) for d in dropped], dropped)
            if (entry / "manifest.json").is_file():
                log.info("build cache hit for %s (same tree and final config as %s)", commit[:12], key)
                cache.touch(entry)
                self._remember_request(rkey, key)
                report(Progress("done", elapsed=time.monotonic() - started))
                return self._outcome(entry, commit, cached=True, out_dir=out_dir)
            manifest = self._compile(
                make_base, env, src, obj, commit, tree_hash, key, config, final_text, dropped, cc,
                list(argv), slot_name, started, report, incremental,
            )
        self._remember_request(rkey, key)
        return self._outcome(entry, commit, cached=False, out_dir=out_dir, manifest=manifest)

    def lookup(self, tree_path: Path, rev: str, config: ConfigRequest) -> BuildOutcome | None:
        """The cached build of ``rev`` with ``config`` as :meth:`build` would
        return it, or None when it was never built (nothing is built here)."""
        tree = KernelTree.open(tree_path)
        commit = tree.resolve(rev)
        tree_hash = tree.repo.tree_hash(commit)
        requested = config.requested(self.fragment_dirs)
        cc = self._compiler_for(tree, commit)
        known = self._lookup_request(request_key(tree_hash, config, requested, cc.version))
        return None if known is None else self._outcome(known, commit, cached=True, out_dir=None)

    def final_config(
        self, tree_path: Path, rev: str, config: ConfigRequest, *, slot: int | None = None
    ) -> str:
        """The ``.config`` a build of ``rev`` with ``config`` would use (Kconfig
        run in a build slot, nothing compiled): seconds, not minutes."""
        tree = KernelTree.open(tree_path)
        commit = tree.resolve(rev)
        requested = config.requested(self.fragment_dirs)
        cc = self._compiler_for(tree, commit)
        with self._slot(tree, slot, config) as (_name, src, obj):
            tree.repo.ensure_worktree(src)
            Repo.checkout(src, commit)
            env = self._make_env(obj, cc)
            text, _dropped = self._configure(self._make_base(src, obj, cc), env, obj, config, requested)
        return text

    def _note_changes(self, commit: str, changes: Sequence[str], parsed: Sequence[Dropped] = ()) -> None:
        """Say which requested options Kconfig did not keep, in one line, and
        only when that list differs from the last one this builder said (a
        bisection over commits with the same Kconfig lists them once)."""
        key = tuple(changes)
        if key == self._last_changes:
            return
        self._last_changes = key
        if not key:
            return
        items = list(parsed) or [_parse_dropped(c) for c in changes]
        log.warning("Kconfig did not keep the requested config at %s: %s", commit[:12],
                    summarize_changes(items))

    # -- steps ------------------------------------------------------------

    def _compiler_for(self, tree: KernelTree, commit: str) -> compilers.Compiler:
        if self.compiler_override:
            return compilers.resolve(self.compiler_override, why="asked for with --compiler")
        version = compilers.kernel_version(tree.show(commit, "Makefile"))
        rule = compilers.choose(self.rules, version)
        return compilers.resolve_rule(rule, why=f"the compiler table's choice for v{version[0]}.{version[1]}")

    def _check_disk(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.work_dir).free
        if free < self.min_free_bytes:
            raise DiskFullError(
                f"disk full: {free / 1024**3:.1f} GiB free in {self.work_dir}, "
                f"a kernel build needs {self.min_free_bytes / 1024**3:.1f} GiB"
            )

    @contextlib.contextmanager
    def _slot(
        self, tree: KernelTree, want: int | None, config: ConfigRequest
    ) -> Iterator[tuple[str, Path, Path]]:
        """Take a free build slot of this repository (slot ``want``, waiting for
        it, when given).

        Slots whose last build used the same config come first (their
        objects make the build incremental), then unused slots, then the
        least recently used one.
        """
        repo_id = hashlib.sha256(str(tree.git_dir).encode()).hexdigest()[:12]
        slots = self.work_dir / "slots"
        slots.mkdir(parents=True, exist_ok=True)

        def rank(n: int) -> tuple[int, float]:
            stamp = slots / f"{repo_id}-{n}.last"
            if not stamp.exists():
                return (1, 0.0)
            same = stamp.read_text() == config.describe()
            return (0 if same else 2, -stamp.stat().st_mtime if same else stamp.stat().st_mtime)

        candidates = [want] if want is not None else sorted(range(self.max_slots), key=rank)
        for n in candidates:
            name = f"{repo_id}-{n}"
            lock: IO[str] = (slots / f"{name}.lock").open("w")
            try:
                flags = fcntl.LOCK_EX if want is not None else fcntl.LOCK_EX | fcntl.LOCK_NB
                fcntl.flock(lock, flags)
            except BlockingIOError:
                lock.close()
                continue
            try:
                (slots / name / "obj").mkdir(parents=True, exist_ok=True)
                cache.touch(slots / name)
                yield name, slots / name / "src", slots / name / "obj"
                (slots / f"{name}.last").write_text(config.describe())
                return
            finally:
                lock.close()
        raise InfraError(f"all {self.max_slots} build slots in {slots} are busy")

    def _make_env(self, obj: Path, cc: compilers.Compiler) -> dict[str, str]:
        env = dict(os.environ)
        env.update(_REPRO_ENV)
        if cc.llvm:
            # LLVM=1 takes clang, ld.lld, llvm-ar... by their plain names.
            env["PATH"] = f"{cc.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["CCACHE_STATSLOG"] = str(obj / "ccache-stats.log")
        # Make objects from different slots share cache entries.
        env.setdefault("CCACHE_BASEDIR", str(self.work_dir))
        # With -g, ccache also hashes the object dir unless told not to: then
        # no two slots (or two clones) would ever share an entry.
        env.setdefault("CCACHE_NOHASHDIR", "1")
        # Depend mode: a miss takes the compiler's own -MMD output (Kbuild asks
        # for it) instead of running the preprocessor once more to hash its
        # output. Measured on kernel/ and mm/ from an empty cache: 117 s in
        # ccache's default mode, 87 s in depend mode, 88 s without ccache;
        # warm, every object hits either way. Sources with .incbin bypass
        # ccache (ccache_front: depend mode does not see the included file).
        env.setdefault("CCACHE_DEPEND", "1")
        if self.ccache:
            env["KVMLAB_CCACHE"] = self.ccache
        env["LC_ALL"] = "C"
        if self.distcc:
            local = self.jobs - sum(h.slots for h in self.distcc_hosts)
            env["DISTCC_HOSTS"] = distcc.hosts_env(self.distcc_hosts, max(1, local))
            env["DISTCC_FALLBACK"] = "1"  # a host that drops: the object is compiled here
            # distcc's lock and state files; it does not make the directory itself.
            (obj / ".distcc").mkdir(parents=True, exist_ok=True)
            env["DISTCC_DIR"] = str(obj / ".distcc")
            if self.ccache:
                env["CCACHE_PREFIX"] = self.distcc  # only ccache's misses go out
        return env

    def _make_base(self, src: Path, obj: Path, cc: compilers.Compiler) -> list[str]:
        name = "clang" if cc.llvm else cc.cc
        cc_word = f"{ccache_front.install(self.work_dir)} {name}" if self.ccache else name
        if self.distcc and not self.ccache:
            cc_word = f"{self.distcc} {name}"
        argv = ["make", "-C", str(src), f"O={obj}", f"CC={cc_word}", f"HOSTCC={name}", "LOCALVERSION="]
        if cc.llvm:
            argv.append("LLVM=1")
        if self.ccache and _takes_macro_prefix_map(cc.cc):
            # CCACHE_BASEDIR hands the compiler "../src/mm/x.c" instead of the
            # absolute path Kbuild's own -fmacro-prefix-map strips, and reports
            # would say "kernel BUG at ../src/mm/x.c" (title rules match on
            # kernel paths). Strip that relative prefix too.
            rel = os.path.relpath(src, obj)
            flags = f"{os.environ.get('KCFLAGS', '')} -fmacro-prefix-map={rel}/=".strip()
            argv.append(f"KCFLAGS={flags}")
        return argv

    def _configure(
        self, make_base: list[str], env: dict[str, str], obj: Path, config: ConfigRequest,
        requested: dict[str, str],
    ) -> tuple[str, list[Dropped]]:
        try:
            if config.full_config is not None:
                # The full config as given, the fragments' options over it.
                text = config.full_config if not config.fragments else render_config(requested)
                (obj / ".config").write_text(text)
            else:
                frag = obj / "kvmlab-fragment.config"
                frag.write_text(render_config(requested))
                allno = [*make_base, f"KCONFIG_ALLCONFIG={frag}", "allnoconfig"]
                proc.run(allno, env=env, timeout=CONFIG_TIMEOUT)
            proc.run([*make_base, "olddefconfig"], env=env, timeout=CONFIG_TIMEOUT)
        except ProcessError as e:
            if "No space left on device" in e.output_tail:
                raise DiskFullError(f"disk full while configuring in {obj}") from None
            raise
        final_text = (obj / ".config").read_text()
        return final_text, dropped_options(requested, parse_config(final_text, source=str(obj / ".config")))

    def _compile(
        self, make_base: list[str], env: dict[str, str], src: Path, obj: Path, commit: str, tree_hash: str,
        key: str, config: ConfigRequest, final_text: str, dropped: list[Dropped], cc: compilers.Compiler,
        argv: list[str], slot_name: str, started: float, report: ProgressCallback, incremental: bool,
    ) -> BuildManifest:
        stats_log = obj / "ccache-stats.log"
        stats_log.unlink(missing_ok=True)
        gdb_scripts = parse_config(final_text).get("CONFIG_GDB_SCRIPTS") == "y"
        # `make bzImage` alone does not make the gdb helpers (only `all` does).
        make_argv = [*make_base, f"-j{self.jobs}", "bzImage", *(["scripts_gdb"] if gdb_scripts else [])]
        entry = self.work_dir / "builds" / key
        tmp = entry.with_name(f".{key}.tmp{os.getpid()}")
        _remove_dead_tmps(entry.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log_path = tmp / "build.log"
        log.info("building %s in %s with %s", commit[:12], slot_name, cc.version)
        rc, objects = self._run_make(make_argv, env, log_path, started, report)
        log_text = log_path.read_text(errors="replace")
        if "No space left on device" in log_text:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DiskFullError(f"disk full during the kernel build in {obj}")
        hits, misses = ccache_counts(stats_log.read_text(errors="replace") if stats_log.exists() else "")
        status = BuildStatus.OK if rc == 0 else BuildStatus.FAILED
        kernel_sha = ""
        error = ""
        if status is BuildStatus.OK:
            for name, rel in ARTIFACTS.items():
                shutil.copy2(obj / rel, tmp / name)
            if gdb_scripts:
                _copy_gdb_scripts(obj, tmp)
            kernel_sha = cache.file_sha256(tmp / "bzImage")
            # What the kernel was compiled from, while the object dir is this
            # build's: a bisection skips commits that touch none of it.
            relevance.write_inputs(tmp / relevance.INPUTS_NAME, relevance.read_build_dir(obj, src))
        else:
            (tmp / "config").write_text(final_text)
            # ccache's base_dir makes paths relative to the object dir; name
            # the file as it is in the tree.
            error = first_error(log_text).replace("../src/", "", 1)
        extra: dict[str, Any] = {"incremental": incremental}
        if self.distcc:
            fell_back = distcc.fallbacks(log_text)
            extra["distcc"] = {"hosts": [str(h) for h in self.distcc_hosts], "jobs": self.jobs,
                               "fallbacks": fell_back}
            if fell_back:
                log.warning("distcc: %s could not be sent to a compile host and ran on this "
                            "machine (a host dropped or refused them; see %s)", counted(fell_back, "compile"),
                            entry / "build.log")
        manifest = BuildManifest(
            commit=commit, tree_hash=tree_hash, config_hash=config_hash(final_text),
            config_request=config.describe(), compiler=cc.version, cc=cc.cc, status=status.value,
            duration=round(time.monotonic() - started, 3), objects_compiled=objects,
            ccache_hits=hits, ccache_misses=misses, dropped=[str(d) for d in dropped],
            argv=argv, make_argv=make_argv, kernel_sha256=kernel_sha, error=error, key=key, slot=slot_name,
            extra=extra,
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
        report(Progress("done", objects=objects, elapsed=time.monotonic() - started))
        return manifest

    def _run_make(
        self, argv: list[str], env: dict[str, str], log_path: Path, started: float, report: ProgressCallback
    ) -> tuple[int, int]:
        """Run make, teeing to ``log_path``; (exit code, objects compiled)."""
        deadline = time.monotonic() + self.timeout
        objects = 0
        p = proc.spawn(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert p.stdout is not None
        try:
            with log_path.open("wb") as out:
                for raw in p.stdout:
                    out.write(raw)
                    line = raw.decode(errors="replace").rstrip()
                    if _COMPILE_LINE.match(line):
                        objects += 1
                    report(Progress("compile", objects, line, time.monotonic() - started))
                    if time.monotonic() > deadline:
                        break
            if time.monotonic() > deadline:
                proc.kill_group(p)
                raise ProcessError(argv, None, log_path.read_text(errors="replace")[-4000:], timed_out=True)
            rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            proc.kill_group(p)
            raise
        return rc, objects

    # -- cache ------------------------------------------------------------

    def _lookup_request(self, rkey: str) -> Path | None:
        path = self.work_dir / "requests" / f"{rkey}.json"
        if not path.is_file():
            return None
        key = json.loads(path.read_text())["build"]
        entry = self.work_dir / "builds" / key
        return entry if (entry / "manifest.json").is_file() else None

    def _remember_request(self, rkey: str, key: str) -> None:
        d = self.work_dir / "requests"
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{rkey}.{os.getpid()}"
        tmp.write_text(json.dumps({"build": key}) + "\n")
        tmp.rename(d / f"{rkey}.json")

    def _outcome(
        self,
        entry: Path,
        commit: str,
        *,
        cached: bool,
        out_dir: Path | None,
        manifest: BuildManifest | None = None,
    ) -> BuildOutcome:
        m = manifest or BuildManifest.load(entry / "manifest.json")
        src = entry
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for f in entry.iterdir():
                if f.is_dir():
                    shutil.copytree(f, out_dir / f.name, dirs_exist_ok=True)
                else:
                    shutil.copy2(f, out_dir / f.name)
            src = out_dir
        artifacts = {
            name: str(src / name)
            for name in (*ARTIFACTS, "build.log", GDB_LOADER)
            if (src / name).exists()
        }
        artifacts["manifest"] = str(src / "manifest.json")
        if (src / relevance.INPUTS_NAME).is_file():
            artifacts["inputs"] = str(src / relevance.INPUTS_NAME)
        if m.kernel_sha256:
            artifacts["kernel_sha256"] = m.kernel_sha256  # a digest, not a path: equal kernels are one test
        tail = ""
        if m.status == BuildStatus.FAILED.value:
            tail = "\n".join((entry / "build.log").read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
        return BuildOutcome(
            commit=commit, status=BuildStatus(m.status), compiler=m.compiler, artifacts=artifacts,
            error=m.error, log_tail=tail, duration=0.0 if cached else m.duration, cached=cached,
        )
