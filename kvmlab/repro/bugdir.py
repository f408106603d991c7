"""syzbot bug directories: what syzbot publishes about a bug, as files.

Layout (every name as it is saved from the bug's page or report e-mail)::

    DIR/title          the crash title, one line (the bisection's target)
    DIR/commit         the commit it was seen on ("HEAD commit:" of the report)
    DIR/tree           optional: the git tree it was seen on (URL [branch])
    DIR/.config        the kernel config ("kernel config"; also: config, kernel.config)
    DIR/repro.syz      the syzkaller reproducer ("syz repro")      } one or both
    DIR/repro.c        the C reproducer ("C reproducer")           }
    DIR/console.log    optional: the console output (also: log)
    DIR/cmdline        optional: kernel command-line words for every boot
    DIR/compiler       optional: what built the kernel ("compiler:" of the report)

``title`` may be left out when ``console.log`` holds the crash: its title is
used. A missing piece, or two pieces that disagree (two configs that differ, a
title the console log's crash does not match, a commit that is not a hash),
is one :class:`BugDirError` line naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kvmlab import oops
from kvmlab.checks import read_text
from kvmlab.errors import UserError

CONFIG_NAMES = (".config", "config", "kernel.config")
LOG_NAMES = ("console.log", "log")


class BugDirError(UserError):
    """A syzbot bug directory lacks a piece or contradicts itself."""


@dataclass(frozen=True)
class BugDir:
    path: Path
    title: str
    commit: str
    config: Path
    repro_syz: Path | None = None
    repro_c: Path | None = None
    tree: str = ""
    """Where the commit lives (URL and optional branch), for the messages."""
    console_log: Path | None = None
    cmdline: tuple[str, ...] = ()
    compiler: str = ""
    """The compiler syzbot built with, as it describes it ('' = not said)."""


def _read(path: Path, *, console: bool = False) -> str:
    """A file of the directory; every one but a console log must be text (a
    console log may hold a few bytes of line noise)."""
    if console:
        try:
            return path.read_text(errors="replace")
        except OSError as e:
            raise BugDirError(f"bug directory: cannot read {path}: {e.strerror}") from None
    try:
        return read_text(path, "bug directory file")
    except UserError as e:
        raise BugDirError(str(e)) from None


def _one(path: Path, names: tuple[str, ...], what: str, *, console: bool = False) -> Path | None:
    """The one file of ``names`` in ``path``; several that differ contradict."""
    found = [path / n for n in names if (path / n).is_file()]
    if len(found) > 1:
        texts = {p: _read(p, console=console) for p in found}
        if len(set(texts.values())) > 1:
            raise BugDirError(f"bug directory {path}: {found[0].name} and {found[1].name} are two different "
                              f"{what}s; keep one")
    return found[0] if found else None


def load(path: Path) -> BugDir:
    """Read and check a bug directory (see the module docstring)."""
    if not path.is_dir():
        raise BugDirError(f"bug directory {path}: no such directory")
    config = _one(path, CONFIG_NAMES, "kernel config")
    if config is None:
        raise BugDirError(f"bug directory {path}: no kernel config (.config)")
    config_text = _read(config)
    if not re.search(r"(?m)^CONFIG_\w+=", config_text):
        what = "empty" if not config_text.strip() else "no CONFIG_ option in it"
        raise BugDirError(f"bug directory {path}: {config.name}: {what}, not a kernel config")
    syz = path / "repro.syz" if (path / "repro.syz").is_file() else None
    c = path / "repro.c" if (path / "repro.c").is_file() else None
    if syz is None and c is None:
        raise BugDirError(f"bug directory {path}: no reproducer (repro.syz or repro.c)")

    commit_file = path / "commit"
    if not commit_file.is_file():
        raise BugDirError(f"bug directory {path}: no commit file (the commit the bug was seen on)")
    words = _read(commit_file).split()
    if not words:
        raise BugDirError(f"bug directory {path}: {commit_file.name} is empty")
    commit = words[0]
    if not re.fullmatch(r"[0-9a-fA-F]{7,40}", commit):
        raise BugDirError(f"bug directory {path}: {commit_file.name}: {commit!r} is not a commit hash")
    hashes = {w for w in words if re.fullmatch(r"[0-9a-fA-F]{12,40}", w)}
    if len({h[:12].lower() for h in hashes}) > 1:
        raise BugDirError(f"bug directory {path}: {commit_file.name} names more than one commit")

    log = _one(path, LOG_NAMES, "console log", console=True)
    log_title: str | None = None
    if log is not None:
        rep = oops.parse(_read(log, console=True))
        log_title = rep.title if rep is not None else None
    title = ""
    if (path / "title").is_file():
        lines = _read(path / "title").strip().splitlines()
        title = lines[0].strip() if lines else ""
        if not title:
            raise BugDirError(f"bug directory {path}: title is empty")
        if log is not None and log_title is not None and not oops.same_bug(title, log_title):
            raise BugDirError(f"bug directory {path}: title says {title!r} but the crash in {log.name} "
                              f"is {log_title!r}")
    elif log_title is not None:
        title = log_title
    elif log is not None:
        raise BugDirError(f"bug directory {path}: no title file, and no crash found in {log.name}")
    else:
        raise BugDirError(f"bug directory {path}: no title (a title file or a console.log with the crash)")

    tree = " ".join(_read(path / "tree").split()) if (path / "tree").is_file() else ""
    cmdline = tuple(_read(path / "cmdline").split()) if (path / "cmdline").is_file() else ()
    compiler = " ".join(_read(path / "compiler").split()) if (path / "compiler").is_file() else ""
    return BugDir(path=path, title=title, commit=commit, config=config, repro_syz=syz, repro_c=c, tree=tree,
                  console_log=log, cmdline=cmdline, compiler=compiler)
