"""Symbolize a crash report: ``func+0xfa/0x920`` -> ``func+0xfa/0x920 file.c:123``.

Frames inlined into a function come first, each on its own ``[inline]`` line,
as in syzbot's reports. The function's address comes from the binary's symbol
table (``nm -S``, read once per binary and kept while the file is unchanged),
and all the report's addresses go to a single ``addr2line -a -i -f`` process,
so a report takes well under a second even on a large vmlinux.

Frames of modules (``func+0x1/0x2 [mod]``) are left as they are.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from kvmlab.errors import HostToolError, MissingFileError, ProcessError
from kvmlab.proc import run

log = logging.getLogger(__name__)

#: ``nm`` on a full vmlinux (~150k symbols) and one ``addr2line`` run.
TOOL_TIMEOUT = 120.0

_FRAME = re.compile(
    r"(?:\[\<(?:(?:0x)?[0-9a-f]+)\>\])?[ \t]+\(?(?:[0-9]+:)?([a-zA-Z0-9_.]+)\+0x([0-9a-f]+)/0x([0-9a-f]+)"
    r"( ?\[([a-zA-Z0-9_.]+)( .*)?\])?\)?"
)
_RIP = re.compile(r"(?:IP|NIP|pc |PC is at):? ")


@dataclass(frozen=True)
class Symbol:
    address: int
    size: int


@dataclass(frozen=True)
class _Frame:
    line_index: int
    match: re.Match[str]
    pc: int


def _check(binary: Path) -> os.stat_result:
    try:
        st = binary.stat()
    except OSError as e:
        raise MissingFileError(f"{binary}: cannot read the kernel image ({e.strerror})") from e
    if not binary.is_file():
        raise MissingFileError(f"{binary}: not a file")
    return st


def symbols(binary: Path) -> dict[str, tuple[Symbol, ...]]:
    """Function symbols of ``binary`` by name (a static function may have several)."""
    st = _check(binary)
    return _symbols(binary.resolve(), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _symbols(binary: Path, _mtime_ns: int, _size: int) -> dict[str, tuple[Symbol, ...]]:
    try:
        out = run(["nm", "-S", "--defined-only", binary], timeout=TOOL_TIMEOUT).stdout
    except ProcessError as e:
        raise HostToolError(f"nm cannot read symbols of {binary}: {e}") from e
    table: dict[str, list[Symbol]] = {}
    for line in out.splitlines():
        parts = line.split()
        # "address size type name"; symbols without a size have 3 fields
        if len(parts) != 4 or parts[2] not in "tTwW":
            continue
        try:
            sym = Symbol(int(parts[0], 16), int(parts[1], 16))
        except ValueError:
            continue
        table.setdefault(parts[3], []).append(sym)
    return {name: tuple(syms) for name, syms in table.items()}


def _pc(table: dict[str, tuple[Symbol, ...]], name: str, offset: int, size: int, rip: bool) -> int | None:
    syms = table.get(name)
    if not syms:
        return None
    # Several static functions may share a name: the size tells them apart.
    sym = next((s for s in syms if s.size == size), syms[0])
    pc = sym.address + offset
    # Call-trace frames hold return addresses: the call is the instruction
    # before. The RIP line holds the faulting instruction itself.
    return pc if rip else pc - 1


#: Top-level directories of a kernel tree: where a path inside one begins
#: when the tree is not on this machine any more.
_TREE_TOP = re.compile(
    r"/(?=(?:arch|block|certs|crypto|drivers|fs|include|init|io_uring|ipc|kernel|lib|mm|net|rust|"
    r"samples|scripts|security|sound|tools|usr|virt)/)"
)


@functools.lru_cache(maxsize=256)
def _tree_top(directory: str) -> str | None:
    """The kernel tree (a directory with MAINTAINERS and Kconfig) holding
    ``directory``, or None."""
    d = Path(directory)
    for cand in (d, *d.parents):
        if (cand / "MAINTAINERS").is_file() and (cand / "Kconfig").is_file():
            return str(cand)
    return None


#: kvmlab's build cache compiles in ``<cache>/slots/<repo-id>-<n>/src`` and
#: ccache (base_dir, no hashed dir) hands out objects compiled in any slot of
#: any cache: their debug info names that slot's tree, which may be another
#: clone's cache or gone. Everything after ``/src/`` is the path in the tree.
_BUILD_SLOT_SRC = re.compile(r"/slots/[^/]+-\d+/src/")


def _clean_path(path: str, roots: tuple[Path, ...]) -> str:
    if path.startswith("./"):
        return path[2:]
    if not os.path.isabs(path):
        return path
    path = os.path.normpath(path)  # O= builds record "obj/../src/..."
    for root in roots:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            continue
    slots = list(_BUILD_SLOT_SRC.finditer(path))
    if slots:
        return path[slots[-1].end():]
    # A vmlinux copied out of its build tree: find the tree the file is in.
    top = _tree_top(os.path.dirname(path))
    if top is not None:
        return os.path.relpath(path, top)
    m = _TREE_TOP.search(path)
    return path[m.end():] if m is not None else path


def _source_roots(vmlinux: Path, source_root: Path | None) -> tuple[Path, ...]:
    """Directories to cut off absolute source paths: the given one, else the
    build directory and, for ``make O=`` builds, the source tree its
    ``source`` link points to."""
    if source_root is not None:
        return (source_root.resolve(),)
    build = vmlinux.resolve().parent
    source = build / "source"
    return (source.resolve(), build) if source.is_symlink() else (build,)


def _addr2line(binary: Path, pcs: list[int], roots: tuple[Path, ...]) -> dict[int, list[tuple[str, str]]]:
    """pc -> [(function, file:line)], innermost inlined function first."""
    argv: list[str | Path] = ["addr2line", "-a", "-i", "-f", "-e", binary, *(f"0x{pc:x}" for pc in pcs)]
    try:
        out = run(argv, timeout=TOOL_TIMEOUT).stdout
    except ProcessError as e:
        raise HostToolError(f"addr2line failed on {binary}: {e}") from e
    result: dict[int, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    lines = out.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("0x"):
            current = result.setdefault(int(line, 16), [])
            i += 1
            continue
        if current is not None and i + 1 < len(lines):
            func, loc = line, lines[i + 1]
            loc = loc.split(" (discriminator")[0]
            if not loc.startswith("??"):
                file, _, lineno = loc.rpartition(":")
                current.append((func, f"{_clean_path(file, roots)}:{lineno}"))
        i += 2
    return result


def symbolize(report_text: str, vmlinux: Path, source_root: Path | None = None) -> str:
    """``report_text`` with file:line added to each kernel frame and inlined frames as ``[inline]`` lines.

    ``source_root`` (default: the directory of ``vmlinux``, the top of a kernel
    build tree, and the source tree of an ``O=`` build) is cut off absolute
    source paths. Frames the binary does not
    know are left unchanged. Raises :class:`MissingFileError` when ``vmlinux``
    cannot be read and :class:`HostToolError` when ``nm``/``addr2line`` fail.
    """
    table = symbols(vmlinux)
    roots = _source_roots(vmlinux, source_root)
    lines = report_text.split("\n")
    frames: list[_Frame] = []
    for i, line in enumerate(lines):
        m = _FRAME.search(line)
        if m is None or m.group(5):  # no frame, or a module's
            continue
        pc = _pc(table, m.group(1), int(m.group(2), 16), int(m.group(3), 16), bool(_RIP.search(line)))
        if pc is not None:
            frames.append(_Frame(i, m, pc))
    if not frames:
        return report_text
    info = _addr2line(vmlinux, sorted({f.pc for f in frames}), roots)
    by_line = {f.line_index: f for f in frames}
    out: list[str] = []
    for i, line in enumerate(lines):
        f = by_line.get(i)
        chain = info.get(f.pc) if f is not None else None
        if f is None or not chain:
            out.append(line)
            continue
        m = f.match
        name_start, size_end = m.start(1), m.end(3)
        for func, loc in chain[:-1]:
            out.append(f"{line[:name_start]}{func} {loc} [inline]{line[size_end:]}")
        out.append(f"{line[:size_end]} {chain[-1][1]}{line[size_end:]}")
    log.debug("symbolized %d frames with %s", len(frames), vmlinux)
    return "\n".join(out)
