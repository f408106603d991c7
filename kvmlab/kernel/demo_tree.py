"""The demo kernel history: Debian's linux-source-6.1 as a git repository with
a few dozen ordinary commits and planted bugs, for the demo and the tests.

The steps are data (``demo/history.yaml``); this module applies them with
fixed author, committer and dates, so the same inputs always give the same
commit ids *for the same source*. Which commit plants what is written to
``<tree>.demo.json`` next to the repository (tests compare bisection results
against it; the bisector never reads it), with the source the tree was made
from: Debian updates ``linux-source-6.1`` with every stable point release, and
a new source gives new commit ids (the same subjects, edits and dates).
"""

from __future__ import annotations

import json
import logging
import lzma
import os
import shutil
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from kvmlab import checks, proc
from kvmlab.cache import file_sha256
from kvmlab.errors import ConfigError, MissingFileError, ProcessError, UserError

log = logging.getLogger(__name__)

DEFAULT_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
BASE_TAG = "v6.1"
AUTHOR_NAME = "kvmlab demo"
AUTHOR_EMAIL = "demo@kvmlab.invalid"
#: 2022-12-11 20:00 UTC, the day v6.1 was released; each step is an hour later.
BASE_TIME = 1670788800
STEP_SECONDS = 3600

#: Seconds for unpacking the tarball and for adding ~75,000 files to git.
UNPACK_TIMEOUT = 1200.0
GIT_TIMEOUT = 1800.0
#: Seconds for compiling one reproducer.
CC_TIMEOUT = 120.0

MARKS = ("culprit", "flaky_culprit", "breaks", "fixes")


@dataclass(frozen=True)
class Edit:
    """One textual change to one file."""

    file: str
    find: str
    replace: str


@dataclass(frozen=True)
class Step:
    """One commit of the demo history."""

    title: str
    body: str
    edits: tuple[Edit, ...]
    marks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bug:
    name: str
    reproducer: str
    """File name of the C reproducer next to ``history.yaml``."""
    titles: Mapping[str, str]
    """Crash title by kernel kind (``kasan``, ``plain``)."""
    fraction: float
    """Share of runs that crash."""


@dataclass(frozen=True)
class History:
    steps: tuple[Step, ...]
    bugs: Mapping[str, Bug]


@dataclass(frozen=True)
class DemoSource:
    """What a demo tree was made from. ``base_tree`` (the git tree id of the
    release commit) identifies the content whatever the packaging;
    ``sha256`` and ``package`` say which file it came from."""

    path: str
    """The tarball or directory given."""
    version: str
    """The kernel version its Makefile names, e.g. ``6.1.192``."""
    base_tree: str
    sha256: str = ""
    """Of the tarball; empty for a directory."""
    package: str = ""
    """``NAME VERSION`` of the Debian package that installed the tarball, if any."""

    def describe(self) -> str:
        what = self.package or self.path
        return f"{what} (Linux {self.version}, tree {self.base_tree[:12]})"

    def same_content(self, other: DemoSource) -> bool:
        return self.base_tree == other.base_tree


def _data_dir() -> Path:
    return Path(str(resources.files("kvmlab.kernel") / "demo"))


def _parse_edit(e: Any, where: str) -> Edit:
    if not isinstance(e, dict) or not isinstance(e.get("file"), str):
        raise ConfigError(f"{where}: an edit needs a 'file'")
    keys = set(e) - {"file"}
    if keys == {"find", "replace"}:
        return Edit(e["file"], str(e["find"]), str(e["replace"]))
    if keys == {"before", "insert"}:
        line = str(e["before"])
        return Edit(e["file"], line + "\n", str(e["insert"]) + line + "\n")
    raise ConfigError(f"{where}: an edit needs find+replace or before+insert, got {sorted(keys)}")


def load_history(path: Path | None = None) -> History:
    """Load and validate ``history.yaml``."""
    path = path or _data_dir() / "history.yaml"
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or set(data) != {"steps", "bugs"}:
        raise ConfigError(f"{path}: want the keys 'steps' and 'bugs'")
    steps = []
    for i, s in enumerate(data["steps"], 1):
        where = f"{path}: step {i}"
        unknown = set(s) - {"title", "body", "edits", "marks"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        marks = tuple(s.get("marks", ()))
        for m in marks:
            if m not in MARKS:
                raise ConfigError(f"{where}: unknown mark {m!r}")
        edits = tuple(_parse_edit(e, where) for e in s["edits"])
        steps.append(Step(str(s["title"]), str(s.get("body", "")).strip(), edits, marks))
    bugs = {
        name: Bug(name, b["reproducer"], dict(b["titles"]), float(b["fraction"]))
        for name, b in data["bugs"].items()
    }
    return History(tuple(steps), bugs)


def apply_edit(text: str, edit: Edit) -> str:
    """``text`` with ``edit`` applied; the searched text must occur exactly once."""
    n = text.count(edit.find)
    if n != 1:
        raise ConfigError(f"demo edit of {edit.file}: expected text found {n} times: {edit.find[:60]!r}")
    return text.replace(edit.find, edit.replace)


def strip_debian_gitignore(text: str) -> str:
    """Drop Debian's packaging rule (ignore everything at the top level) from
    the kernel's .gitignore; the rest stays."""
    marker = "# Debian packaging"
    at = text.find(marker)
    if at < 0:
        return text
    head = text[:at].rstrip("\n")
    if head.endswith("\n#"):
        head = head[: -len("\n#")]
    return head.rstrip("\n") + "\n"


@dataclass(frozen=True)
class DemoTree:
    """A made demo tree and what it plants (the ``.demo.json``)."""

    path: Path
    base: str
    head: str
    culprit: str
    flaky_culprit: str
    broken: list[str]
    """Commits that do not build, oldest first."""
    fixed: str
    """The commit that builds again after ``broken``."""
    commits: list[str]
    """Every commit after ``base``, oldest first."""
    reproducers: dict[str, str] = field(default_factory=dict)
    """Bug name (``culprit``, ``flaky_culprit``) -> path of its C source."""
    titles: dict[str, dict[str, str]] = field(default_factory=dict)
    fractions: dict[str, float] = field(default_factory=dict)
    source: DemoSource | None = None
    """What it was made from (None: a tree made before kvmlab recorded it)."""

    @property
    def info_path(self) -> Path:
        return info_path(self.path)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        d["source"] = dict(self.source.__dict__) if self.source else None
        return d

    @classmethod
    def load(cls, tree: Path) -> DemoTree:
        d = json.loads(info_path(tree).read_text())
        d["path"] = Path(d["path"])
        src = d.get("source")
        d["source"] = DemoSource(**src) if isinstance(src, dict) else None
        return cls(**d)


def info_path(tree: Path) -> Path:
    """Where the planted-commits JSON of the demo tree at ``tree`` lives."""
    return tree.parent / f"{tree.name}.demo.json"


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    # Nothing from the user's or the system's git config may change the ids.
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME=AUTHOR_NAME,
        GIT_AUTHOR_EMAIL=AUTHOR_EMAIL,
        GIT_COMMITTER_NAME=AUTHOR_NAME,
        GIT_COMMITTER_EMAIL=AUTHOR_EMAIL,
        TZ="UTC",
        LC_ALL="C",
    )
    return env


def _commit(repo: Path, message: str, when: int, env: dict[str, str], files: Sequence[str] = ()) -> str:
    """Commit the index plus ``files`` (staging only them: `commit -a` would
    stat all ~75,000 files per step)."""
    stamp = f"@{when} +0000"
    env = {**env, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
    if files:
        proc.run(["git", "-C", repo, "add", "--", *files], env=env, timeout=GIT_TIMEOUT)
    proc.run(["git", "-C", repo, "commit", "-q", "--no-verify", "-m", message], env=env, timeout=GIT_TIMEOUT)
    return proc.run(["git", "-C", repo, "rev-parse", "HEAD"], env=env, timeout=60).stdout.strip()


def make_demo_tree(
    dest: Path,
    *,
    tarball: Path = DEFAULT_TARBALL,
    history: History | None = None,
    progress: Callable[[str], None] | None = None,
) -> DemoTree:
    """Make the demo repository at ``dest`` (reused when it is already there).

    ``tarball`` is the kernel source: a tarball (any compression tar reads)
    or an unpacked directory. Takes a few minutes (unpacking and committing
    the whole kernel source). A tree that is reused but was made from another
    source than ``tarball`` is said so through ``progress`` (its commit ids
    differ from those of a tree made now).
    """
    say = progress or (lambda _m: None)
    dest = dest.resolve()
    if dest.exists():
        if info_path(dest).is_file() and (dest / ".git").exists():
            demo = DemoTree.load(dest)
            check = proc.run(["git", "-C", dest, "rev-parse", "-q", "--verify", f"{demo.head}^{{commit}}"],
                             timeout=60, check=False)
            if check.returncode == 0:
                say(f"demo tree already at {dest}, made from {_made_from(demo)}")
                differs = source_differs(demo, tarball)
                if differs:
                    say(differs)
                return demo
        raise UserError(f"{dest} already exists and is not a kvmlab demo tree")
    check_source(tarball)
    checks.output_dir(dest, "demo tree")
    history = history or load_history()

    tmp = dest.parent / f".{dest.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        say(f"unpacking {tarball}")
        _unpack(tarball, tmp)
        gi = tmp / ".gitignore"
        if gi.is_file():
            gi.write_text(strip_debian_gitignore(gi.read_text()))
        env = _git_env()
        say("committing the base release")
        proc.run(["git", "init", "-q", "-b", "master", tmp], env=env, timeout=60)
        proc.run(["git", "-C", tmp, "add", "-A", "-f", "."], env=env, timeout=GIT_TIMEOUT)
        version = _makefile_version(tmp / "Makefile")
        base = _commit(tmp, f"Linux {version}\n\nDebian's linux-source-6.1 ({tarball.name}).", BASE_TIME, env)
        proc.run(["git", "-C", tmp, "tag", BASE_TAG, base], env=env, timeout=60)
        base_tree = proc.run(["git", "-C", tmp, "rev-parse", f"{base}^{{tree}}"], env=env,
                             timeout=60).stdout.strip()
        source = describe_source(tarball, version=version, base_tree=base_tree)
        say(f"source: {source.describe()}")

        commits: list[str] = []
        marked: dict[str, list[str]] = {m: [] for m in MARKS}
        for i, step in enumerate(history.steps, 1):
            for edit in step.edits:
                f = tmp / edit.file
                f.write_text(apply_edit(f.read_text(), edit))
            message = step.title + (f"\n\n{step.body}" if step.body else "")
            files = sorted({e.file for e in step.edits})
            sha = _commit(tmp, message, BASE_TIME + i * STEP_SECONDS, env, files)
            commits.append(sha)
            for m in step.marks:
                marked[m].append(sha)
            say(f"[{i}/{len(history.steps)}] {sha[:12]} {step.title}")
        demo = _describe(dest, base, commits, history, marked, source)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info_path(dest).write_text(json.dumps(demo.to_json(), indent=2) + "\n")
    return demo


def check_source(source: Path) -> None:
    """``source`` is a kernel source: a tar archive (any compression tar
    reads) or a directory with a top-level Makefile; a UserError naming it
    otherwise, before anything is unpacked."""
    if not source.exists():
        raise MissingFileError(f"kernel source tarball {source}: no such file (install linux-source-6.1)")
    if source.is_dir():
        if not (source / "Makefile").is_file():
            raise UserError(f"kernel source {source}: a directory without a Makefile, not a kernel source")
        return
    checks.input_file(source, "kernel source tarball")
    try:
        is_tar = tarfile.is_tarfile(source)
    except (OSError, EOFError, tarfile.TarError, ValueError, lzma.LZMAError) as e:
        raise UserError(f"kernel source tarball {source}: not readable as a tar archive ({e})") from None
    if not is_tar:
        raise UserError(f"kernel source tarball {source}: not a tar archive (give Debian's "
                        f"linux-source-6.1 tarball, or an unpacked kernel source directory)")


def _unpack(source: Path, into: Path) -> None:
    if source.is_dir():
        proc.run(["cp", "-a", "--", f"{source}/.", into], timeout=UNPACK_TIMEOUT)
        return
    # tar reads any compression it knows (xz for Debian's package).
    try:
        proc.run(["tar", "-xf", source, "-C", into, "--strip-components=1", "--no-same-owner"],
                 timeout=UNPACK_TIMEOUT)
    except ProcessError as e:
        if e.timed_out or "No space left" in e.output_tail:
            raise
        # A broken or truncated archive is the input's fault, not the host's.
        raise UserError(f"kernel source tarball {source}: tar could not unpack it: {e}") from None
    if not (into / "Makefile").is_file():
        raise UserError(f"kernel source tarball {source}: no top-level Makefile in it: not a kernel source")


def _owning_package(path: Path) -> str:
    """``NAME VERSION`` of the Debian package that installed ``path``, or ''."""
    if shutil.which("dpkg-query") is None:
        return ""
    owner = proc.run(["dpkg-query", "-S", str(path)], timeout=60, check=False)
    if owner.returncode != 0 or ":" not in owner.stdout:
        return ""
    name = owner.stdout.split(":", 1)[0].split(",")[0].strip()
    ver = proc.run(["dpkg-query", "-W", "-f=${Version}", name], timeout=60, check=False)
    return f"{name} {ver.stdout.strip()}" if ver.returncode == 0 else name


def describe_source(source: Path, *, version: str, base_tree: str) -> DemoSource:
    """The :class:`DemoSource` of a tarball or directory already unpacked,
    whose release commit has the git tree ``base_tree``."""
    if source.is_dir():
        return DemoSource(str(source), version, base_tree)
    return DemoSource(str(source), version, base_tree, file_sha256(source), _owning_package(source))


def _made_from(demo: DemoTree) -> str:
    return demo.source.describe() if demo.source else "a source kvmlab did not record (an older tree)"


def source_differs(demo: DemoTree, tarball: Path) -> str:
    """One line when ``tarball`` is not the file ``demo`` was made from
    (a tree made from it now would have other commit ids), else ''."""
    if demo.source is None or not demo.source.sha256 or not tarball.is_file():
        return ""
    if file_sha256(tarball) == demo.source.sha256:
        return ""
    now = _owning_package(tarball) or str(tarball)
    return (f"note: {tarball} ({now}) is not the source this demo tree was made from "
            f"({demo.source.describe()}): a demo tree made from it now has other commit ids")


def _makefile_version(makefile: Path) -> str:
    fields: dict[str, str] = {}
    for line in makefile.read_text().splitlines()[:10]:
        k, sep, v = line.partition("=")
        if sep:
            fields[k.strip()] = v.strip()
    return (f"{fields.get('VERSION', '?')}.{fields.get('PATCHLEVEL', '?')}.{fields.get('SUBLEVEL', '?')}"
            f"{fields.get('EXTRAVERSION', '')}")


def _describe(
    dest: Path, base: str, commits: list[str], history: History, marked: dict[str, list[str]],
    source: DemoSource,
) -> DemoTree:
    for m in ("culprit", "flaky_culprit", "breaks", "fixes"):
        if len(marked[m]) != 1:
            raise ConfigError(f"demo history: want exactly one step marked {m!r}, got {len(marked[m])}")
    start = commits.index(marked["breaks"][0])
    end = commits.index(marked["fixes"][0])
    data = _data_dir()
    return DemoTree(
        path=dest,
        base=base,
        head=commits[-1],
        culprit=marked["culprit"][0],
        flaky_culprit=marked["flaky_culprit"][0],
        broken=commits[start:end],
        fixed=commits[end],
        commits=commits,
        reproducers={n: str(data / b.reproducer) for n, b in history.bugs.items()},
        titles={n: dict(b.titles) for n, b in history.bugs.items()},
        fractions={n: b.fraction for n, b in history.bugs.items()},
        source=source,
    )


def compile_reproducer(source: Path, out: Path, *, cc: str = "gcc") -> Path:
    """Build a static reproducer binary from ``source`` at ``out``."""
    proc.run([cc, "-static", "-O2", "-o", out, source], timeout=CC_TIMEOUT)
    return out

