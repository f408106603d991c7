"""A kernel's modules as a guest needs them: the release a bzImage names,
and which module files (dependencies first, from the kernel's own
``modules.dep``) provide a set of modules that are not built in."""

from __future__ import annotations

import gzip
import lzma
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kvmlab import owner, proc
from kvmlab.errors import MissingFileError

#: Compressed module suffixes kvmlab reads (Debian ships .ko.xz today).
COMPRESSED = (".xz", ".gz", ".zst")

_KO = re.compile(r"\.ko(\.xz|\.zst|\.gz)?$")


@dataclass(frozen=True)
class ModuleSet:
    """Kernel modules to load, in order, as paths relative to the modules dir."""

    paths: tuple[str, ...]

    def plain_names(self) -> tuple[str, ...]:
        """The paths without their compression suffix (as written into a guest)."""
        return tuple(plain_name(p) for p in self.paths)


def kernel_release(bzimage: Path) -> str | None:
    """The kernel release (``uname -r``) stored in a bzImage's setup header.

    Returns None when the file is not a bzImage.
    """
    try:
        with bzimage.open("rb") as f:
            head = f.read(0x10000)
    except FileNotFoundError:
        raise MissingFileError(f"kernel {bzimage}: no such file") from None
    except OSError as e:
        raise MissingFileError(f"kernel {bzimage}: {e.strerror}") from e
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    ptr = int.from_bytes(head[0x20E:0x210], "little")
    if ptr == 0:
        return None
    start = ptr + 0x200
    end = head.find(b"\0", start)
    if start >= len(head) or end < 0:
        return None
    return head[start:end].decode(errors="replace").split(" ")[0]


def module_name(relpath: str) -> str:
    """``kernel/drivers/net/virtio_net.ko.xz`` -> ``virtio_net`` (``-`` read as ``_``)."""
    return _KO.sub("", relpath.rsplit("/", 1)[-1]).replace("-", "_")


def plain_name(relpath: str) -> str:
    """A module path without its compression suffix."""
    for suffix in COMPRESSED:
        if relpath.endswith(suffix):
            return relpath[: -len(suffix)]
    return relpath


def builtin_modules(modules_dir: Path) -> set[str]:
    """Names of the modules the kernel of ``modules_dir`` has built in."""
    path = modules_dir / "modules.builtin"
    if not path.is_file():
        return set()
    return {module_name(line.strip()) for line in path.read_text().splitlines() if line.strip()}


def module_closure(modules_dep: str, wanted: Iterable[str], *, skip: Iterable[str] = (),
                   strict: bool = False) -> tuple[str, ...]:
    """Module paths (as in ``modules.dep``) providing ``wanted``, dependencies
    first and each once. A wanted name in ``skip`` (built in) needs nothing;
    one the kernel does not have is left out, or with ``strict`` a
    ``KeyError`` naming it."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        by_name[module_name(mod)] = mod
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        # modules.dep lists the full transitive closure: load deps first.
        for d in reversed(deps.get(mod, [])):
            visit(d)
        order.append(mod)

    builtin = set(skip)
    for name in wanted:
        if name in builtin:
            continue
        if name not in by_name:
            if strict:
                raise KeyError(name)
            continue
        visit(by_name[name])
    return tuple(order)


def resolve_modules(modules_dir: Path, wanted: Iterable[str], *, strict: bool = False) -> ModuleSet:
    """The modules of ``modules_dir`` (dependencies first) that provide
    ``wanted`` and are not built into its kernel. Without a ``modules.dep``
    there are none (or, with ``strict``, a :class:`MissingFileError`); with
    ``strict`` a wanted module the kernel lacks is a MissingFileError too."""
    dep_file = modules_dir / "modules.dep"
    if not dep_file.is_file():
        if strict:
            raise MissingFileError(f"{dep_file}: no such file (modules of kernel {modules_dir.name} "
                                   "are not installed)")
        return ModuleSet(())
    try:
        order = module_closure(dep_file.read_text(), wanted, skip=builtin_modules(modules_dir), strict=strict)
    except KeyError as e:
        raise MissingFileError(f"kernel {modules_dir.name} has no module {e.args[0]}") from None
    return ModuleSet(order)


def module_bytes(path: Path) -> bytes:
    """A module file's ELF bytes (decompressed: busybox insmod reads plain ELF)."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        # No zstd in the standard library: the zstd tool, into a file (proc
        # reads a program's output as text).
        with owner.tempdir("ko") as tmp:
            out = Path(tmp) / path.stem
            proc.run(["zstd", "-q", "-d", "-o", str(out), str(path)], timeout=60)
            return out.read_bytes()
    return data
