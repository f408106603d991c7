"""Image recipes: YAML data files in ``images/`` loaded into frozen dataclasses.

All validation happens here, in :func:`parse_recipe`: an unknown key or a bad
value is a :class:`~kvmlab.errors.ConfigError` whose one-line message names the
file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmlab import paths
from kvmlab.checks import load_yaml, read_text
from kvmlab.config import Config
from kvmlab.errors import ConfigError, MissingFileError

#: kvmlab's own recipes (package data; the checkout's ``images/``).
RECIPE_DIR = paths.shipped_dir("images")

#: The recipe ``kvmlab image build`` uses when none is named.
DEFAULT_RECIPE = "bookworm"

#: Bumped whenever the builder changes what it makes from the same recipe, so
#: that cached images built by an older builder are not reused.
BUILDER_VERSION = 1

_MiB = 1024 * 1024
_MIN_SIZE = 256 * _MiB
_MAX_SIZE = 1024 * 1024 * _MiB

_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.\-]+$")
_SUITE_RE = re.compile(r"^[a-z][a-z0-9\-]*$")
_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?$")
_SYSCTL_RE = re.compile(r"^[a-z0-9_\-]+(\.[a-zA-Z0-9_\-]+)+$")
_DEVICE_RE = re.compile(r"^/dev/[a-z0-9]+$")
_TTY_RE = re.compile(r"^tty[A-Za-z]*[0-9]+$")
_SIZE_RE = re.compile(r"^([0-9]+)\s*([KMGT]?)i?B?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": _MiB, "G": 1024 * _MiB, "T": 1024 * 1024 * _MiB}


@dataclass(frozen=True)
class ExtraFile:
    """A file the builder writes into the image."""

    path: str
    """Absolute path inside the guest."""
    content: str
    """Text content, written as UTF-8."""
    mode: int = 0o644
    """Permission bits."""


@dataclass(frozen=True)
class Recipe:
    """What goes into one guest disk image.

    Built by :func:`parse_recipe` (the one place that validates) from a YAML
    file; every field below is also a YAML key of the same name.
    """

    name: str
    """The recipe's name: its file name without ``.yaml``."""
    mirror: str
    """Debian mirror URL. Default: the first ``deb`` mirror of the host's apt sources."""
    suite: str = "bookworm"
    """Debian suite (codename) passed to debootstrap."""
    variant: str = "minbase"
    """debootstrap variant: ``minbase`` or ``buildd`` or ``default``."""
    packages: tuple[str, ...] = ()
    """Packages installed on top of the variant (the builder adds what it needs itself)."""
    size: int = 2048 * _MiB
    """Size of the root filesystem in bytes; YAML takes ``2G``, ``512M`` or a byte count. Default 2 GiB."""
    filesystem: str = "ext4"
    """Root filesystem type; only ``ext4`` is supported."""
    hostname: str = "kvmlab"
    """The guest's host name."""
    root_device: str = "/dev/vda"
    """Block device the kernel sees the disk as (virtio-blk: ``/dev/vda``)."""
    serial_console: str = "ttyS0"
    """Serial port that gets a getty."""
    serial_autologin: bool = False
    """Log root in on the serial getty without a password (off: root logs in by SSH key only)."""
    sysctls: tuple[tuple[str, str], ...] = ()
    """``(key, value)`` pairs written to ``/etc/sysctl.d``, applied at boot."""
    files: tuple[ExtraFile, ...] = ()
    """Extra files written into the image last (they may override the builder's)."""
    cmdline: tuple[str, ...] = ()
    """Kernel command-line words this image needs besides ``root=`` and ``rw``."""

    def kernel_cmdline(self) -> tuple[str, ...]:
        """Every kernel command-line word that booting this image needs."""
        return ("root=" + self.root_device, "rw", "rootfstype=" + self.filesystem, *self.cmdline)

    def canonical(self) -> dict[str, Any]:
        """The recipe as plain JSON data, in a fixed order (for hashing and manifests)."""
        return {
            "name": self.name,
            "mirror": self.mirror,
            "suite": self.suite,
            "variant": self.variant,
            "packages": list(self.packages),
            "size": self.size,
            "filesystem": self.filesystem,
            "hostname": self.hostname,
            "root_device": self.root_device,
            "serial_console": self.serial_console,
            "serial_autologin": self.serial_autologin,
            "sysctls": [list(kv) for kv in self.sysctls],
            "files": [{"path": f.path, "content": f.content, "mode": f.mode} for f in self.files],
            "cmdline": list(self.cmdline),
        }

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical recipe and the builder version: the cache key."""
        data = {"builder": BUILDER_VERSION, "recipe": self.canonical()}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def parse_size(value: object) -> int:
    """Bytes from ``2G``, ``512M``, ``512MiB`` (binary units) or a plain byte count; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 2G or 512M")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value.strip())
        if m:
            return int(m.group(1)) * _UNITS[m.group(2).upper()]
    raise ValueError("expected a size like 2G or 512M")


def host_mirror(sources_dir: Path = Path("/etc/apt")) -> str | None:
    """The first Debian mirror the host's apt uses, from deb822 ``.sources``
    files or one-line ``sources.list`` entries; None when there is none."""
    candidates: list[Path] = []
    main_list = sources_dir / "sources.list"
    if main_list.is_file():
        candidates.append(main_list)
    d = sources_dir / "sources.list.d"
    if d.is_dir():
        candidates.extend(sorted(d.iterdir()))
    for path in candidates:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            found = _mirror_from_deb822(text)
        elif path.suffix == ".list":
            found = _mirror_from_one_line(text)
        else:
            continue
        if found:
            return found
    return None


def _is_debian_archive(uri: str) -> bool:
    # debian-security and ports archives do not carry the main suites.
    tail = uri.rstrip("/").rsplit("/", 1)[-1]
    return uri.startswith(("http://", "https://")) and tail == "debian"


def _mirror_from_deb822(text: str) -> str | None:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, val = line.partition(":")
            fields[key.strip().lower()] = val.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        for uri in fields.get("uris", "").split():
            if _is_debian_archive(uri):
                return uri.rstrip("/")
    return None


def _mirror_from_one_line(text: str) -> str | None:
    for line in text.splitlines():
        words = [w for w in re.sub(r"\[[^]]*\]", "", line).split() if w]
        if len(words) >= 2 and words[0] == "deb" and _is_debian_archive(words[1]):
            return words[1].rstrip("/")
    return None


class _Fields:
    """Takes keys out of one YAML mapping, checking each; what is left is unknown."""

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.data = dict(data)
        self.source = source

    def fail(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{key}': {why}")

    def take(self, key: str, default: Any, check: Callable[[Any], Any]) -> Any:
        if key not in self.data:
            return default
        value = self.data.pop(key)
        try:
            return check(value)
        except ValueError as e:
            raise self.fail(key, f"{e} (got {value!r})") from None

    def leftover(self, known: list[str]) -> None:
        if self.data:
            key = sorted(self.data)[0]
            raise ConfigError(f"{self.source}: unknown key '{key}' (known keys: {', '.join(known)})")


def _string(pattern: re.Pattern[str] | None, what: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str) or (pattern is not None and not pattern.match(v)):
            raise ValueError(f"expected {what}")
        return v

    return check


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError("expected one of " + ", ".join(options))
        return str(v)

    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


def _mirror(v: Any) -> str:
    if not isinstance(v, str) or not re.match(r"^https?://[^\s/]+(/\S*)?$", v):
        raise ValueError("expected an http:// or https:// URL")
    return v.rstrip("/")


def _size(v: Any) -> int:
    size = parse_size(v)
    if not _MIN_SIZE <= size <= _MAX_SIZE:
        raise ValueError("expected a size between 256M and 1T")
    return size


def _word_list(pattern: re.Pattern[str] | None, what: str) -> Callable[[Any], tuple[str, ...]]:
    one = _string(pattern, what)

    def check(v: Any) -> tuple[str, ...]:
        if not isinstance(v, list):
            raise ValueError(f"expected a list of {what}")
        return tuple(one(x) for x in v)

    return check


def _cmdline_words(v: Any) -> tuple[str, ...]:
    words = _word_list(re.compile(r"^\S+$"), "kernel command-line words without spaces")(v)
    for w in words:
        if w.split("=", 1)[0] in ("root", "rootfstype"):
            raise ValueError("root= and rootfstype= come from root_device and filesystem")
    return words


def _sysctls(v: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, dict):
        raise ValueError("expected a mapping of sysctl name to value")
    out = []
    for key, val in v.items():
        if not isinstance(key, str) or not _SYSCTL_RE.match(key):
            raise ValueError(f"bad sysctl name {key!r}")
        if isinstance(val, bool) or not isinstance(val, str | int):
            raise ValueError(f"sysctl {key}: expected a string or integer value")
        text = str(val)
        if "\n" in text:
            raise ValueError(f"sysctl {key}: value spans lines")
        out.append((key, text))
    return tuple(out)


def _mode(v: Any) -> int:
    if isinstance(v, str) and re.match(r"^0?[0-7]{3,4}$", v):
        return int(v, 8)
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0o7777:
        return v
    raise ValueError("expected a permission mode such as 0644")


def _extra_files(source: str) -> Callable[[Any], tuple[ExtraFile, ...]]:
    def check(v: Any) -> tuple[ExtraFile, ...]:
        if not isinstance(v, list):
            raise ValueError("expected a list of {path, content, mode}")
        out = []
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                raise ValueError(f"item {i}: expected a mapping with path and content")
            f = _Fields(item, f"{source}: files[{i}]")
            path = f.take("path", None, _string(re.compile(r"^/[^\0]*$"), "an absolute path"))
            content = f.take("content", None, _string(None, "text"))
            mode = f.take("mode", 0o644, _mode)
            f.leftover(["path", "content", "mode"])
            if path is None or content is None:
                raise ValueError(f"item {i}: path and content are required")
            if ".." in path.split("/") or path.rstrip("/") == "":
                raise ValueError(f"item {i}: path {path!r} leaves the image or is the root")
            out.append(ExtraFile(path=path, content=content, mode=mode))
        return tuple(out)

    return check


_KNOWN_KEYS = [
    "mirror", "suite", "variant", "packages", "size", "filesystem", "hostname", "root_device",
    "serial_console", "serial_autologin", "sysctls", "files", "cmdline",
]  # fmt: skip


def parse_recipe(data: object, *, name: str, source: str, default_mirror: str | None) -> Recipe:
    """Validate YAML data (already loaded) into a :class:`Recipe`.

    ``source`` names the file in messages; ``default_mirror`` is used when the
    recipe has no ``mirror`` (normally :func:`host_mirror`).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    if not _HOSTNAME_RE.match(name):
        raise ConfigError(f"{source}: recipe name {name!r} must be lower-case letters, digits and '-'")
    f = _Fields(data, source)
    mirror = f.take("mirror", default_mirror, _mirror)
    recipe = Recipe(
        name=name,
        mirror=mirror or "",
        suite=f.take("suite", "bookworm", _string(_SUITE_RE, "a Debian codename such as bookworm")),
        variant=f.take("variant", "minbase", _choice("minbase", "buildd", "default")),
        packages=f.take("packages", (), _word_list(_PACKAGE_RE, "Debian package names")),
        size=f.take("size", 2048 * _MiB, _size),
        filesystem=f.take("filesystem", "ext4", _choice("ext4")),
        hostname=f.take("hostname", "kvmlab", _string(_HOSTNAME_RE, "a host name (a-z, 0-9, '-')")),
        root_device=f.take("root_device", "/dev/vda", _string(_DEVICE_RE, "a device such as /dev/vda")),
        serial_console=f.take("serial_console", "ttyS0", _string(_TTY_RE, "a tty such as ttyS0")),
        serial_autologin=f.take("serial_autologin", False, _bool),
        sysctls=f.take("sysctls", (), _sysctls),
        files=f.take("files", (), _extra_files(source)),
        cmdline=f.take("cmdline", (), _cmdline_words),
    )
    f.leftover(_KNOWN_KEYS)
    if not recipe.mirror:
        raise ConfigError(
            f"{source}: key 'mirror' is not set and the host's apt sources name no Debian mirror"
        )
    return recipe


def recipe_dirs(user_dir: Path | None = None) -> tuple[Path, ...]:
    """Where recipes are looked up, first match wins: the user's directory
    (``$KVMLAB_RECIPES_DIR``, else ``user_dir``, the config file's
    ``images.recipes_dir``), then kvmlab's own."""
    return paths.search_path("images", paths.ENV_RECIPES_DIR, user_dir)


def recipe_files(user_dir: Path | None = None) -> dict[str, Path]:
    """Recipe name -> the file that provides it (see :func:`recipe_dirs`), sorted by name."""
    found: dict[str, Path] = {}
    for d in reversed(recipe_dirs(user_dir)):
        if d.is_dir():
            found.update((p.stem, p) for p in d.glob("*.yaml"))
    return dict(sorted(found.items()))


def find_recipe(name_or_path: str, recipe_dir: Path | None = None) -> Path:
    """The recipe file for a name (``bookworm``, looked up in the user's
    ``recipe_dir`` and then kvmlab's own: :func:`recipe_dirs`) or a path
    (``./my.yaml``)."""
    as_path = Path(name_or_path)
    if as_path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if as_path.is_file():
            return as_path
        raise MissingFileError(f"recipe file {name_or_path} does not exist")
    files = recipe_files(recipe_dir)
    if name_or_path in files:
        return files[name_or_path]
    where = ", ".join(str(d) for d in recipe_dirs(recipe_dir))
    raise MissingFileError(
        f"no recipe named {name_or_path!r} in {where} (known: {', '.join(files) or 'none'})"
    )


def load_recipe(
    name_or_path: str, *, recipe_dir: Path | None = None, default_mirror: str | None = None
) -> Recipe:
    """Find (see :func:`find_recipe`), read and validate a recipe; the mirror
    defaults to the host's."""
    path = find_recipe(name_or_path, recipe_dir)
    data = load_yaml(read_text(path, "image recipe"), f"image recipe {path}")
    mirror = default_mirror if default_mirror is not None else host_mirror()
    return parse_recipe(data, name=path.stem, source=str(path), default_mirror=mirror)


def with_recipe_path(cfg: Config) -> Config:
    """``cfg`` with ``repro.root`` turned from a recipe name into the recipe
    file the user's ``images.recipes_dir`` provides (a name is otherwise
    looked up in ``$KVMLAB_RECIPES_DIR`` and kvmlab's own recipes only)."""
    root = cfg.repro.root
    named = root != "initramfs" and "/" not in root and not root.endswith((".yaml", ".yml"))
    if not named or cfg.images.recipes_path is None:
        return cfg
    path = find_recipe(root, cfg.images.recipes_path)
    return dataclasses.replace(cfg, repro=dataclasses.replace(cfg.repro, root=str(path)))
