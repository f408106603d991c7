"""Kernel configuration: fragments from ``kernel_configs/``, merging, and the
check that Kconfig kept what was asked for.

Everything here is pure text processing; running Kconfig itself is the
builder's job. A config is a mapping ``CONFIG_NAME -> value`` where a
disabled option has the value ``"n"`` (``# CONFIG_X is not set`` and
``CONFIG_X=n`` mean the same to Kconfig).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kvmlab import paths
from kvmlab.checks import read_text
from kvmlab.errors import ConfigError, MissingFileError
from kvmlab.text import counted

#: kvmlab's own fragments (package data; the checkout's ``kernel_configs/``).
DEFAULT_FRAGMENTS_DIR = paths.shipped_dir("kernel_configs")

FRAGMENT_SUFFIX = ".config"

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def parse_config(text: str, *, source: str = "config") -> dict[str, str]:
    """Parse ``.config`` / fragment text into ``{name: value}``; later lines win.

    Comments and blank lines are ignored; any other line is a
    :class:`ConfigError` naming ``source`` and the line number.
    """
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        m = _SET.match(line)
        if m:
            out[m.group(1)] = m.group(2)
            continue
        m = _UNSET.match(line)
        if m:
            out[m.group(1)] = "n"
            continue
        if not line or line.startswith("#"):
            continue
        raise ConfigError(f"{source}:{n}: not a kernel config line: {line!r}")
    return out


def read_config(path: Path) -> dict[str, str]:
    """The ``.config`` (or fragment) file at ``path`` as :func:`parse_config` reads it."""
    return parse_config(read_text(path, "kernel config"), source=str(path))


def render_config(options: Mapping[str, str]) -> str:
    """Config text for ``options``, one line each, in the given order."""
    lines = [f"# {k} is not set" if v == "n" else f"{k}={v}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Fragment:
    """One named config fragment file."""

    name: str
    path: Path
    options: Mapping[str, str]


def fragment_dirs(user_dir: Path | None = None) -> tuple[Path, ...]:
    """Where fragments are looked up, first match wins: the user's directory
    (``$KVMLAB_FRAGMENTS_DIR``, else ``user_dir``, the config file's
    ``kernel.fragments_dir``), then kvmlab's own."""
    return paths.search_path("kernel_configs", paths.ENV_FRAGMENTS_DIR, user_dir)


def _dirs(where: Path | Sequence[Path] | None) -> tuple[Path, ...]:
    if where is None:
        return fragment_dirs()
    return (where,) if isinstance(where, Path) else tuple(where)


def fragment_files(where: Path | Sequence[Path] | None = None) -> dict[str, Path]:
    """Fragment name -> the file that provides it, over the search path
    ``where`` (a directory or directories, earlier wins; default
    :func:`fragment_dirs`), sorted by name."""
    found: dict[str, Path] = {}
    for d in reversed(_dirs(where)):
        if d.is_dir():
            found.update((p.name[: -len(FRAGMENT_SUFFIX)], p) for p in d.glob(f"*{FRAGMENT_SUFFIX}"))
    return dict(sorted(found.items()))


def available_fragments(where: Path | Sequence[Path] | None = None) -> list[str]:
    """Names of the fragments on the search path (file names without ``.config``)."""
    return list(fragment_files(where))


def find_data_file(name: str, where: Path | Sequence[Path] | None = None) -> Path:
    """The first ``name`` (e.g. ``compilers.yaml``) on the fragments' search path."""
    dirs = _dirs(where)
    for d in dirs:
        if (d / name).is_file():
            return d / name
    raise MissingFileError(f"{name}: not found in {', '.join(map(str, dirs))}")


def load_fragment(name: str, where: Path | Sequence[Path] | None = None) -> Fragment:
    """Load fragment ``name`` from the search path ``where`` (default
    :func:`fragment_dirs`); an unknown name is a ConfigError that lists the
    known ones."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"bad config fragment name {name!r}")
    files = fragment_files(where)
    path = files.get(name)
    if path is None:
        known = ", ".join(files) or "none"
        where_s = ", ".join(str(d) for d in _dirs(where))
        raise ConfigError(f"unknown config fragment {name!r} (known in {where_s}: {known})")
    return Fragment(name, path, parse_config(read_text(path, "config fragment"), source=str(path)))


def merge(fragments: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Merge fragments in order; a later fragment's value wins."""
    out: dict[str, str] = {}
    for frag in fragments:
        for k, v in frag.items():
            out.pop(k, None)  # keep the winning line in the position of its last mention
            out[k] = v
    return out


@dataclass(frozen=True)
class ConfigRequest:
    """What the user asked for: named fragments (merged on ``allnoconfig``), or
    a complete ``.config`` (e.g. syzbot's) as the base with fragments, if any,
    layered on top; either way adapted to the commit with ``olddefconfig``."""

    fragments: tuple[str, ...] = ()
    full_config: str | None = None
    """Text of a complete .config given by the user."""
    full_config_name: str = ""
    """Where the full config came from (for messages)."""

    def __post_init__(self) -> None:
        if not self.fragments and self.full_config is None:
            raise ConfigError("give config fragments, a full .config, or both")

    @classmethod
    def from_fragments(cls, names: Sequence[str]) -> ConfigRequest:
        return cls(fragments=tuple(names))

    @classmethod
    def from_file(cls, path: Path, fragments: Sequence[str] = ()) -> ConfigRequest:
        """A full .config from ``path``, with ``fragments`` on top."""
        text = read_text(path, "kernel config", empty_ok=False)
        if not any(k.startswith("CONFIG_") for k in parse_config(text, source=str(path))):
            raise ConfigError(f"kernel config {path}: no CONFIG_ option in it: not a kernel .config")
        return cls(fragments=tuple(fragments), full_config=text, full_config_name=str(path))

    def requested(self, where: Path | Sequence[Path] | None = None) -> dict[str, str]:
        """The merged options the final config must contain (fragments from the
        search path ``where``, default :func:`fragment_dirs`; a full config
        first, when there is one, with the fragments on top)."""
        dirs = _dirs(where)
        frags = [load_fragment(n, dirs).options for n in self.fragments]
        if self.full_config is not None:
            return merge([parse_config(self.full_config, source=self.full_config_name or "config"), *frags])
        return merge(frags)

    def describe(self) -> str:
        """Short name of the request (also part of the build cache's request key)."""
        if self.full_config is None:
            return ",".join(self.fragments)
        digest = hashlib.sha256(self.full_config.encode()).hexdigest()[:12]
        base = f"config {Path(self.full_config_name).name or '.config'}@{digest}"
        return f"{base}+{','.join(self.fragments)}" if self.fragments else base


@dataclass(frozen=True)
class Dropped:
    """An option Kconfig did not keep as asked."""

    name: str
    wanted: str
    got: str
    """``"n"`` when the option is off or absent."""

    def __str__(self) -> str:
        return f"{self.name}={self.wanted} (got {self.got})"


def dropped_options(requested: Mapping[str, str], final: Mapping[str, str]) -> list[Dropped]:
    """Options of ``requested`` whose value differs in ``final``.

    An absent option counts as ``n`` (Kconfig omits options whose menu is off).
    """
    out = []
    for name, want in requested.items():
        got = final.get(name, "n")
        if _norm(got) != _norm(want):
            out.append(Dropped(name, want, got))
    return out


def _norm(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return v
    # Kconfig writes hex in lower case with 0x prefix; compare ints as ints.
    try:
        return str(int(v, 0))
    except ValueError:
        return v


#: Options Kconfig computes from the tool chain (scripts/Kconfig.include):
#: a full config made with another compiler always differs in them, and
#: listing them as "changed" would hide the options that matter.
_TOOLCHAIN = re.compile(
    r"^CONFIG_(CC_VERSION_TEXT|CC_IS_\w+|GCC_VERSION|CLANG_VERSION|AS_IS_\w+|AS_VERSION|LD_IS_\w+|LD_VERSION"
    r"|LLD_VERSION|RUSTC_VERSION\w*|RUST_IS_AVAILABLE|BINDGEN_VERSION\w*|PAHOLE_VERSION|CC_CAN_\w+"
    r"|CC_HAS_\w+|AS_HAS_\w+|LD_CAN_\w+|LD_HAS_\w+|TOOLS_SUPPORT_\w+|GCC_ASM_\w+|GCC_PLUGINS"
    r"|CC_HAVE_\w+|CC_NO_ARRAY_BOUNDS|ARCH_USE_BUILTIN_BSWAP|HAVE_\w+_COMPILER\w*)$"
)


def is_toolchain_option(name: str) -> bool:
    """Whether Kconfig derives ``name`` from the compiler, assembler or linker."""
    return _TOOLCHAIN.match(name) is not None


def summarize_changes(changes: Sequence[Dropped], *, limit: int = 40) -> str:
    """One line for the options Kconfig did not keep: the tool-chain derived
    ones counted, the others named (at most ``limit``)."""
    chain = [d for d in changes if is_toolchain_option(d.name)]
    rest = [d for d in changes if not is_toolchain_option(d.name)]
    shown = ", ".join(str(d) for d in rest[:limit])
    more = f", and {len(rest) - limit} more" if len(rest) > limit else ""
    parts = [f"{counted(len(rest), 'option')} changed: {shown}{more}"] if rest else []
    if chain:
        follow = counted(len(chain), "tool-chain option follows", "tool-chain options follow")
        parts.append(f"{follow} this compiler")
    return "; ".join(parts) if parts else "none"


def config_hash(final_text: str) -> str:
    """sha256 of the option lines of a final .config (comments and the
    generator's header are ignored), as hex."""
    canon = render_config(dict(sorted(parse_config(final_text, source="final .config").items())))
    return hashlib.sha256(canon.encode()).hexdigest()
