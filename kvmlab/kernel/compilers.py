"""Which compiler builds which kernel: a table from version ranges to a
compiler installed from a Debian package, loaded from
``kernel_configs/compilers.yaml``; ``--compiler`` overrides it.

A clang entry builds with ``LLVM=1`` (clang, ld.lld and the LLVM binutils of
that version: its ``/usr/lib/llvm-N/bin`` goes first on PATH, which works for
any kernel version, unlike the ``LLVM=-N`` suffix of kernels >= 5.18).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from kvmlab import checks, proc
from kvmlab.errors import ConfigError, HostToolError
from kvmlab.kernel.config import DEFAULT_FRAGMENTS_DIR

DEFAULT_TABLE = DEFAULT_FRAGMENTS_DIR / "compilers.yaml"

#: Seconds to wait for ``cc --version``.
VERSION_TIMEOUT = 30.0

Version = tuple[int, int]


def parse_version(text: str, *, source: str = "version") -> Version:
    """``"5.10"`` -> ``(5, 10)``."""
    m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", text)
    if not m:
        raise ConfigError(f"{source}: bad kernel version {text!r} (want MAJOR.MINOR)")
    return int(m.group(1)), int(m.group(2))


def is_clang(cc: str) -> bool:
    return re.fullmatch(r"clang(-\d+)?", Path(cc).name) is not None


def default_package(cc: str) -> str:
    """The Debian package(s) that provide ``cc`` (for the missing-compiler message)."""
    name = Path(cc).name
    m = re.fullmatch(r"clang-(\d+)", name)
    if m:
        n = m.group(1)
        return f"clang-{n} lld-{n} llvm-{n}"
    if name == "clang":
        return "clang lld llvm"
    if re.fullmatch(r"gcc(-\d+)?", name):
        return name
    return name


@dataclass(frozen=True)
class CompilerRule:
    """Kernels in ``[since, until)`` build with ``cc``; ``None`` bounds are open."""

    cc: str
    since: Version | None = None
    until: Version | None = None
    llvm: bool = False
    """Build with ``LLVM=1`` (clang and the LLVM tools of the same version)."""
    package: str = ""
    """Debian package(s) to install when ``cc`` is missing."""

    def matches(self, version: Version) -> bool:
        return (self.since is None or version >= self.since) and (self.until is None or version < self.until)


_RULE_KEYS = {"cc", "since", "until", "llvm", "package"}


def load_table(path: Path = DEFAULT_TABLE) -> list[CompilerRule]:
    """Load and validate a compiler table; unknown keys name the key and file."""
    rules = []
    for where, entry in checks.load_table(path, "compiler table", "compilers", _RULE_KEYS):
        if not isinstance(entry.get("cc"), str) or not entry["cc"]:
            raise ConfigError(f"{where}: 'cc' must be a program name")
        if not isinstance(entry.get("llvm", False), bool):
            raise ConfigError(f"{where}: 'llvm' must be true or false")
        if not isinstance(entry.get("package", ""), str):
            raise ConfigError(f"{where}: 'package' must be a package name")
        rules.append(
            CompilerRule(
                cc=entry["cc"],
                since=parse_version(str(entry["since"]), source=where) if "since" in entry else None,
                until=parse_version(str(entry["until"]), source=where) if "until" in entry else None,
                llvm=entry.get("llvm", is_clang(entry["cc"])),
                package=entry.get("package") or default_package(entry["cc"]),
            )
        )
    return rules


def choose(rules: list[CompilerRule], version: Version) -> CompilerRule:
    """The rule for kernel ``version``; the host's ``gcc`` when none matches."""
    for rule in rules:
        if rule.matches(version):
            return rule
    return CompilerRule("gcc", package="gcc")


def rule_for(cc: str) -> CompilerRule:
    """The rule for a compiler named on the command line (``--compiler``):
    clang builds with LLVM=1."""
    return CompilerRule(cc, llvm=is_clang(cc), package=default_package(cc))


def kernel_version(makefile_text: str) -> Version:
    """VERSION and PATCHLEVEL from a kernel's top-level Makefile."""
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL)\s*=\s*(\d+)\s*$", makefile_text, re.M))
    if "VERSION" not in fields or "PATCHLEVEL" not in fields:
        raise ConfigError("top-level Makefile has no VERSION/PATCHLEVEL")
    return int(fields["VERSION"]), int(fields["PATCHLEVEL"])


@dataclass(frozen=True)
class Compiler:
    """A compiler found on this host."""

    cc: str
    """As named in the table (passed to make as ``CC``, or ``clang`` with LLVM=1)."""
    path: str
    version: str
    """What built the kernel, as syzbot writes it: the compiler's and the
    linker's ``--version`` first lines, e.g. ``gcc-12 (Debian 12.2.0-14) 12.2.0,
    GNU ld (GNU Binutils for Debian) 2.40``; with ``, LLVM=1`` for clang builds.
    Part of the build cache key."""
    llvm: bool = False
    bin_dir: str = ""
    """For LLVM=1: the directory with this version's clang, ld.lld, llvm-ar...
    (put first on PATH)."""


def _first_line(argv: list[str]) -> str:
    out = proc.run(argv, timeout=VERSION_TIMEOUT).stdout
    return out.splitlines()[0].strip() if out.strip() else argv[0]


def resolve_rule(rule: CompilerRule, *, why: str = "") -> Compiler:
    """Find the rule's compiler (and, for LLVM=1, its linker and tools) on this
    host; a missing one is a HostToolError naming the package to install."""
    extra = f" ({why})" if why else ""
    path = shutil.which(rule.cc)
    if path is None:
        raise HostToolError(f"compiler {rule.cc!r} is not installed on this host{extra}: "
                            f"apt-get install {rule.package or default_package(rule.cc)}")
    cc_line = _first_line([path, "--version"])
    if not rule.llvm:
        ld = shutil.which("ld")
        ld_line = _first_line([ld, "--version"]) if ld else ""
        return Compiler(rule.cc, path, f"{cc_line}, {ld_line}" if ld_line else cc_line)
    bin_dir = Path(os.path.realpath(path)).parent
    for tool in ("ld.lld", "llvm-ar", "llvm-nm", "llvm-objcopy", "llvm-strip"):
        if not (bin_dir / tool).exists():
            raise HostToolError(f"compiler {rule.cc!r} builds with LLVM=1 but {bin_dir / tool} is missing"
                                f"{extra}: apt-get install {rule.package or default_package(rule.cc)}")
    ld_line = _first_line([str(bin_dir / "ld.lld"), "--version"])
    return Compiler(rule.cc, path, f"{cc_line}, {ld_line}, LLVM=1", llvm=True, bin_dir=str(bin_dir))


def resolve(cc: str, *, why: str = "") -> Compiler:
    """Find ``cc`` (named as on the command line) on this host."""
    return resolve_rule(rule_for(cc), why=why)
