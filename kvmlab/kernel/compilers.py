"""Which compiler builds which kernel: a table from version ranges to a
compiler, loaded from ``kernel_configs/compilers.yaml``."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kvmlab import proc
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


@dataclass(frozen=True)
class CompilerRule:
    """Kernels in ``[since, until)`` build with ``cc``; ``None`` bounds are open."""

    cc: str
    since: Version | None = None
    until: Version | None = None

    def matches(self, version: Version) -> bool:
        return (self.since is None or version >= self.since) and (self.until is None or version < self.until)


_RULE_KEYS = {"cc", "since", "until"}


def load_table(path: Path = DEFAULT_TABLE) -> list[CompilerRule]:
    """Load and validate a compiler table; unknown keys name the key and file."""
    try:
        data: Any = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read compiler table {path}: {e.strerror}") from None
    if not isinstance(data, dict) or set(data) != {"compilers"} or not isinstance(data["compilers"], list):
        raise ConfigError(f"{path}: want a mapping with one key 'compilers' holding a list")
    rules = []
    for i, entry in enumerate(data["compilers"]):
        where = f"{path}: compilers[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: want a mapping")
        unknown = set(entry) - _RULE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        if not isinstance(entry.get("cc"), str) or not entry["cc"]:
            raise ConfigError(f"{where}: 'cc' must be a program name")
        rules.append(
            CompilerRule(
                cc=entry["cc"],
                since=parse_version(str(entry["since"]), source=where) if "since" in entry else None,
                until=parse_version(str(entry["until"]), source=where) if "until" in entry else None,
            )
        )
    return rules


def choose(rules: list[CompilerRule], version: Version) -> str:
    """The compiler for kernel ``version``; the host's ``gcc`` when no rule matches."""
    for rule in rules:
        if rule.matches(version):
            return rule.cc
    return "gcc"


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
    """As named in the table (passed to make as ``CC``)."""
    path: str
    version: str
    """First line of ``cc --version``, e.g. ``gcc (Debian 12.2.0-14) 12.2.0``."""


def resolve(cc: str, *, why: str = "") -> Compiler:
    """Find ``cc`` on this host and read its version; HostToolError if absent."""
    path = shutil.which(cc)
    if path is None:
        extra = f" ({why})" if why else ""
        raise HostToolError(f"compiler {cc!r} is not installed on this host{extra}")
    out = proc.run([path, "--version"], timeout=VERSION_TIMEOUT).stdout
    first = out.splitlines()[0].strip() if out.strip() else cc
    return Compiler(cc=cc, path=path, version=first)
