"""Which files of a kernel tree a build depends on, and whether a commit touches one.

Kbuild writes a ``.<target>.cmd`` file next to every object in the object
directory; fixdep puts there the source (``source_<obj> := path``) and every
header the compiler read (``deps_<obj> := \\`` then one path a line). Read
over the whole object directory, that is the set of tree files the built
kernel was compiled from (:func:`read_build_dir`).

A commit whose diff touches none of them cannot change the kernel: a driver
the config does not build, another architecture, documentation, most of
``tools/``. :class:`BuildFiles` answers that question for one path
(:meth:`BuildFiles.relevant`) and for a commit's diffs against each of its
parents (:meth:`BuildFiles.touches`). It is conservative where the
dependency files are silent:

* every ``Kconfig*``, ``Makefile*`` and ``Kbuild*`` file of the tree is
  relevant (a config or Makefile change can make a file part of the build
  that was not before, and make reads them all the way down);
* everything under ``scripts/`` is (the build runs those tools), and so is
  objtool's source when the build made objtool (:data:`HOST_TOOL_PREFIXES`);
* a file that is not C, assembly or Rust source (a syscall table, a linker
  script input, a firmware blob, a ``.sh`` generator) in a directory the build
  read a file from is, since make rules read such files without fixdep
  recording them. Documentation (``.rst``/``.txt``) is not.

Pure apart from :func:`read_build_dir`, which only reads files.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: File-name starts of the files Kbuild and Kconfig read in every directory.
ALWAYS_NAMES: tuple[str, ...] = ("Kconfig", "Makefile", "Kbuild")
#: Tree prefixes that are always relevant: tools every build runs.
ALWAYS_PREFIXES: tuple[str, ...] = ("scripts/",)
#: Host tools whose C sources the tools/ build system's dependency files do
#: not name in tree terms (objtool, its libsubcmd, fixdep): relevant whenever
#: the build read anything under ``tools/`` (it built objtool).
HOST_TOOL_PREFIXES: tuple[str, ...] = ("tools/objtool/", "tools/lib/subcmd/", "tools/build/")
#: Suffixes of files that matter only when a dependency file names them (a new
#: one is built only once a Makefile or an included file says so).
SOURCE_SUFFIXES: tuple[str, ...] = (".c", ".h", ".S", ".s", ".rs")
#: Suffixes of files that never change a kernel binary by being next to one.
TEXT_SUFFIXES: tuple[str, ...] = (".rst", ".txt", ".md", ".yaml", ".json")

#: The name of the list a build leaves in its cache entry (one path a line).
INPUTS_NAME = "inputs.txt"


def parse_cmd(text: str) -> list[str]:
    """The paths one ``.cmd`` file names as the object's source and dependencies,
    as written (``$(wildcard ...)`` config markers left out)."""
    out: list[str] = []
    in_deps = False
    for line in text.splitlines():
        if in_deps:
            item = line.strip().removesuffix("\\").strip()
            if item and not item.startswith("$("):
                out.append(item)
            in_deps = line.rstrip().endswith("\\")
            continue
        if line.startswith("source_"):
            _, sep, path = line.partition(":=")
            if sep and path.strip():
                out.append(path.strip())
        elif line.startswith("deps_"):
            _, sep, rest = line.partition(":=")
            rest = rest.strip()
            in_deps = rest.endswith("\\")
            rest = rest.removesuffix("\\").strip()
            if sep and rest and not rest.startswith("$("):
                out.extend(rest.split())
    return out


def tree_path(raw: str, *, obj: Path, src: Path) -> str | None:
    """``raw`` (absolute, or relative to the object dir as Kbuild and ccache
    write it) as a path inside the source tree, or None when it is outside it
    (a system header, a generated file in the object dir)."""
    # Kbuild writes the source tree's real path (abs_srctree is a realpath).
    return _tree_path(raw, os.path.realpath(obj), os.path.realpath(src))


def _tree_path(raw: str, obj: str, root: str) -> str | None:
    p = posixpath.normpath(raw if raw.startswith("/") else posixpath.join(obj, raw))
    return p[len(root) + 1:] if p.startswith(root + "/") else None


def read_build_dir(obj: Path, src: Path) -> frozenset[str]:
    """Every source-tree path the ``.cmd`` files of object dir ``obj`` name
    (the tree checked out at ``src``)."""
    real_obj, root = os.path.realpath(obj), os.path.realpath(src)
    found: set[str] = set()
    seen: set[str] = set()
    for dirpath, _dirs, files in os.walk(obj):
        for name in files:
            if not (name.startswith(".") and name.endswith(".cmd")):
                continue
            try:
                text = (Path(dirpath) / name).read_text(errors="replace")
            except OSError:
                continue
            for raw in parse_cmd(text):
                if raw in seen:  # most headers are named by hundreds of objects
                    continue
                seen.add(raw)
                rel = _tree_path(raw, real_obj, root)
                if rel is not None:
                    found.add(rel)
    return frozenset(found)


def write_inputs(path: Path, files: Iterable[str]) -> None:
    path.write_text("".join(f"{f}\n" for f in sorted(files)))


def read_inputs(path: Path) -> frozenset[str]:
    return frozenset(line for line in path.read_text().splitlines() if line)


@dataclass(frozen=True)
class BuildFiles:
    """The tree files one or more builds read, and the rules around them."""

    files: frozenset[str]
    dirs: frozenset[str] = field(init=False, repr=False, compare=False)
    tools: bool = field(init=False, repr=False, compare=False)
    """The build made host tools from ``tools/`` (objtool)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dirs", frozenset(posixpath.dirname(f) for f in self.files))
        object.__setattr__(self, "tools", any(f.startswith("tools/") for f in self.files))

    def union(self, other: BuildFiles) -> BuildFiles:
        return BuildFiles(self.files | other.files)

    def relevant(self, path: str) -> bool:
        """Can a change of ``path`` change the built kernel?"""
        if path in self.files:
            return True
        name = posixpath.basename(path)
        if name.startswith(ALWAYS_NAMES) or path.startswith(ALWAYS_PREFIXES):
            return True
        if self.tools and path.startswith(HOST_TOOL_PREFIXES):
            return True
        if posixpath.dirname(path) in self.dirs:
            return not name.endswith(SOURCE_SUFFIXES) and not name.endswith(TEXT_SUFFIXES)
        return False

    def touches(self, paths: Iterable[str]) -> bool:
        """Is a commit that changes ``paths`` relevant? For a merge, ``paths``
        is what it changes against any of its parents: it is relevant when its
        diff against one parent is (its kernel then differs from that one's)."""
        return any(self.relevant(p) for p in paths)
