"""kvmlab's configuration: frozen dataclasses loaded from YAML and validated
in one place. An unknown key or a value of the wrong type is an error that
names the key and the file.

Example (every key optional)::

    vm:
      backend: qemu          # qemu | libvirt
      uri: qemu:///system    # libvirt only
      count: 2               # VMs per pool; auto: as many as the free cores and memory take
      cpus: 2
      memory_mb: 1024
      accel: auto            # auto | kvm | tcg
      cmdline: []            # extra kernel command-line words
      hosts:                 # libvirt hosts to spread VMs over (libvirt backend)
        - {uri: "qemu:///system", capacity: 2}
        - {uri: "qemu+ssh://root@lab1/system", capacity: 8}   # or capacity: auto; cache_max_gb: 20
        - {uri: "qemu+ssh://root@lab2/system", capacity: 4, accel: tcg}   # default: vm.accel
      quarantine_after: 3    # infra failures before a host is dropped for the job
      snapshot: auto         # auto: a bisection's runs restore a booted template | off
    timeouts:                # seconds, before the TCG scale factor
      boot: 60
    repro:
      run_time: 120          # seconds a reproducer runs before the run is OK
      root: initramfs        # initramfs, or an image recipe name
    kernel:
      fragments_dir: ~/my-fragments   # your config fragments, before kvmlab's own
    images:
      recipes_dir: recipes   # your image recipes (relative: to this file)
    syzkaller:
      dir: /opt/syzkaller    # syz-execprog + syz-executor (or its bin/linux_amd64/)
    syzbot:
      url: https://syzkaller.appspot.com   # the dashboard --syzbot ID reads
      proxy: ""              # http://HOST:PORT; default: http_proxy/https_proxy
    cache:
      max_size_gb: 50        # GiB for builds, images, runs, bisections; 0: no limit

A command without ``--conf`` reads ``$KVMLAB_CONFIG``, else
``$XDG_CONFIG_HOME/kvmlab/config.yaml`` when it exists (:mod:`kvmlab.paths`
lists every file and environment variable kvmlab reads).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kvmlab import paths
from kvmlab.checks import load_yaml, read_text
from kvmlab.errors import ConfigError
from kvmlab.host_uri import parse_host_uri
from kvmlab.timeouts import Timeouts

BACKENDS = ("qemu", "libvirt")
ACCELS = ("auto", "kvm", "tcg")
SNAPSHOT_MODES = ("auto", "off")
#: ``vm.count`` or a host's ``capacity`` given as ``auto`` in a config file:
#: resolved from the free cores and memory before a job starts
#: (:func:`kvmlab.vmm.sizing.resolve_auto`).
AUTO = 0


@dataclass(frozen=True)
class HostConfig:
    """One libvirt host of ``vm.hosts``."""

    uri: str = ""
    """libvirt URI: ``qemu:///system`` (this machine) or ``qemu+ssh://[user@]host[:port]/system``
    (or ``/session``); ``keyfile=`` and ``known_hosts=`` query parameters are honoured."""
    capacity: int = 1
    """VMs this host may run at once for a job; ``auto`` (:data:`AUTO`): as
    many as its free cores and memory take (libvirt's host info)."""
    accel: str = ""
    """``auto`` (probe KVM by booting on this host), ``kvm`` or ``tcg``;
    default: ``vm.accel``."""
    cache_max_gb: float = 20.0
    """GiB the host's cache of uploaded kernels and images may hold: after a
    job that uploaded there, the volumes no running job uses go, used
    longest ago first, until it fits (as ``kvmlab host gc``); 0: only
    ``kvmlab host gc`` collects it."""

    def __post_init__(self) -> None:
        if not self.uri:
            raise ConfigError("uri: required")
        if not (self.cache_max_gb >= 0 and math.isfinite(self.cache_max_gb)):
            raise ConfigError(f"cache_max_gb: must be 0 (no automatic collection) or more, "
                              f"got {self.cache_max_gb}")
        parse_host_uri(self.uri, where="uri")
        if self.capacity < 0:
            raise ConfigError(f"capacity: must be positive or auto, got {self.capacity}")
        if self.accel and self.accel not in ACCELS:
            raise ConfigError(f"accel: {self.accel!r} is not one of {', '.join(ACCELS)}")


@dataclass(frozen=True)
class VMConfig:
    backend: str = "qemu"
    """``qemu`` (kvmlab starts QEMU) or ``libvirt``."""
    uri: str = "qemu:///system"
    """libvirt connection URI (libvirt backend only)."""
    count: int = 2
    """VMs in a pool; ``auto`` (:data:`AUTO`): as many as fit the free cores
    and memory (this machine: psutil; ``hosts``: the sum of their capacities)."""
    cpus: int = 2
    """vCPUs per VM."""
    memory_mb: int = 1024
    """RAM per VM, MiB."""
    accel: str = "auto"
    """``auto`` (probe KVM by booting, else TCG), ``kvm`` or ``tcg``. With
    the libvirt backend on lab hosts (``hosts``, or a remote ``uri``),
    ``auto`` is probed on each host, by booting there (see :attr:`per_host_accel`)."""
    cmdline: tuple[str, ...] = ()
    """Extra kernel command-line words."""
    qemu: str = "qemu-system-x86_64"
    hosts: tuple[HostConfig, ...] = ()
    """libvirt hosts to spread VMs over, each ``{uri, capacity}`` (libvirt backend
    only; the local host is one more entry). Empty: ``uri`` alone, all VMs at once."""
    quarantine_after: int = 3
    """Infra failures after which a host of ``hosts`` takes no more VMs for the job."""
    snapshot: str = "auto"
    """``auto``: a bisection boots one template VM per kernel, saves it, and
    starts each run as a clone of it (clock and RNG refreshed from the host);
    runs boot where a VM cannot be saved (a 9p share), and a log line says so.
    ``off``: every run boots."""

    @property
    def per_host_accel(self) -> bool:
        """Whether each libvirt host chooses its own accelerator (lab hosts
        with ``accel: auto``, or a host with its own ``accel``), rather than
        this machine choosing one for all."""
        if self.backend != "libvirt":
            return False
        if self.hosts:
            return self.accel == "auto" or any(h.accel for h in self.hosts)
        return self.accel == "auto" and not parse_host_uri(self.uri).local

    def __post_init__(self) -> None:
        if self.hosts and self.backend != "libvirt":
            raise ConfigError("vm.hosts: needs vm.backend: libvirt")
        labels = [h.uri for h in self.hosts]
        if len(set(labels)) != len(labels):
            raise ConfigError("vm.hosts: the same uri twice")
        if self.quarantine_after < 1:
            raise ConfigError(f"vm.quarantine_after: must be positive, got {self.quarantine_after}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"vm.backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.accel not in ACCELS:
            raise ConfigError(f"vm.accel: {self.accel!r} is not one of {', '.join(ACCELS)}")
        if self.snapshot not in SNAPSHOT_MODES:
            raise ConfigError(f"vm.snapshot: {self.snapshot!r} is not one of {', '.join(SNAPSHOT_MODES)}")
        if self.count < 0:
            raise ConfigError(f"vm.count: must be positive or auto, got {self.count}")
        for name in ("cpus", "memory_mb"):
            if getattr(self, name) < 1:
                raise ConfigError(f"vm.{name}: must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class ReproConfig:
    run_time: float = 120.0
    """Seconds a reproducer runs without a crash before the run counts as OK."""
    root: str = "initramfs"
    """Guest root: ``initramfs`` or the name of an image recipe."""

    def __post_init__(self) -> None:
        if not (self.run_time > 0 and math.isfinite(self.run_time)):
            raise ConfigError(f"repro.run_time: must be a positive number of seconds, got {self.run_time}")


@dataclass(frozen=True)
class KernelConfig:
    fragments_dir: str = ""
    """Directory of your own config fragments (``NAME.config``, and a
    ``compilers.yaml`` replacing kvmlab's), searched before kvmlab's own; a
    relative path is relative to the config file. Default: none.
    ``$KVMLAB_FRAGMENTS_DIR`` wins over it."""

    distcc_hosts: tuple[str, ...] = ()
    """Compile hosts running distccd, ``HOST[:PORT][/SLOTS]`` (SLOTS: compiles
    at once, its cores; default 4): ccache's misses are compiled there and
    ``make -j`` is their slots plus this machine's cores. Empty: this machine
    only. Parsed (and a bad entry named) by :func:`kvmlab.kernel.distcc.parse_hosts`."""

    @property
    def fragments_path(self) -> Path | None:
        return Path(self.fragments_dir).expanduser() if self.fragments_dir else None


@dataclass(frozen=True)
class ImagesConfig:
    recipes_dir: str = ""
    """Directory of your own image recipes (``NAME.yaml``), searched before
    kvmlab's own; relative to the config file. Default: none.
    ``$KVMLAB_RECIPES_DIR`` wins over it."""

    @property
    def recipes_path(self) -> Path | None:
        return Path(self.recipes_dir).expanduser() if self.recipes_dir else None


@dataclass(frozen=True)
class SyzkallerConfig:
    dir: str = ""
    """Directory with syz-execprog and syz-executor (or syzkaller's
    ``bin/linux_amd64/`` under it), for ``--syz-prog``; ``--syz-dir`` wins."""


@dataclass(frozen=True)
class SyzbotConfig:
    url: str = "https://syzkaller.appspot.com"
    """The dashboard ``--syzbot ID`` reads (a bug page URL names its own)."""
    proxy: str = ""
    """``http://HOST:PORT`` for the dashboard; default: the ``http_proxy``,
    ``https_proxy`` and ``no_proxy`` environment variables."""
    timeout: float = 30.0
    """Seconds one request to the dashboard may take."""


@dataclass(frozen=True)
class CacheConfig:
    max_size_gb: float = 50.0
    """GiB the cache (``$XDG_CACHE_HOME/kvmlab``: builds, images, runs,
    bisections) may take; the entries used longest ago go first
    (``kvmlab cache prune``, and after commands). 0: no limit."""

    def __post_init__(self) -> None:
        if not (self.max_size_gb >= 0 and math.isfinite(self.max_size_gb)):
            raise ConfigError(f"cache.max_size_gb: must be 0 (no limit) or more, got {self.max_size_gb}")


@dataclass(frozen=True)
class Config:
    vm: VMConfig = field(default_factory=VMConfig)
    timeouts: Timeouts = field(default_factory=Timeouts)
    repro: ReproConfig = field(default_factory=ReproConfig)
    kernel: KernelConfig = field(default_factory=KernelConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    syzkaller: SyzkallerConfig = field(default_factory=SyzkallerConfig)
    syzbot: SyzbotConfig = field(default_factory=SyzbotConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


def cache_dir() -> Path:
    """Where kvmlab keeps what it may reuse (probe results, builds, images)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kvmlab"


T = TypeVar("T")


def _convert(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(typ)
        if len(args) == 2 and type(None) in args:  # X | None
            if value is None:
                return None
            return _convert(value, next(a for a in args if a is not type(None)), where)
        raise ConfigError(f"{where}: unsupported type")
    if typ is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if typ is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value).expanduser()
    if typ in (int, str, bool):
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            # YAML reads a bare 1234567 (a short commit id) as a number, off as false.
            hint = " (YAML read it as a number or a boolean: quote it)" if typ is str and isinstance(
                value, int | float) else ""
            raise ConfigError(f"{where}: expected {_TYPE_WORDS[typ]}, got {value!r}{hint}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(typ)[:1]
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_mapping(typ, value, where)  # type: ignore[arg-type]
    raise ConfigError(f"{where}: unsupported type {typ!r}")


#: The fields a config file may give as ``auto`` (:data:`AUTO`).
_AUTO_FIELDS: set[tuple[type, str]] = {(VMConfig, "count"), (HostConfig, "capacity")}
#: String fields with an ``off`` value: YAML reads a bare ``off`` (or ``no``,
#: ``false``) as false, which means ``off`` there.
_OFF_FIELDS: set[tuple[type, str]] = {(VMConfig, "snapshot")}

_TYPE_WORDS = {int: "a whole number", str: "a string", bool: "true or false"}


def from_mapping(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from ``data``; ``where`` prefixes error messages
    (an unknown key or a value of the wrong type names itself: ``where.key``)."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        auto_ok = (cls, key) in _AUTO_FIELDS
        if auto_ok and value == "auto":
            kwargs[key] = AUTO
            continue
        if auto_ok and value == AUTO and not isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: must be positive or auto, got {value}")
        if (cls, key) in _OFF_FIELDS and value is False:
            kwargs[key] = "off"
            continue
        kwargs[key] = _convert(value, hints[key], f"{where}.{key}")
    try:
        obj = cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    if isinstance(obj, Timeouts) and obj.scale != 1.0:
        raise ConfigError(f"{where}.scale: set by kvmlab from the accelerator, not in a config file")
    return obj


def to_mapping(obj: Any) -> Any:
    """The plain data (YAML/JSON) :func:`from_mapping` reads back: dataclasses
    as mappings (fields left at None out), paths as strings, tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.init and getattr(obj, f.name) is not None}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | list):
        return [to_mapping(v) for v in obj]
    return obj


def load_config(path: Path | None) -> Config:
    """Read a YAML config; ``None`` reads :func:`kvmlab.paths.default_config_file`,
    or gives the defaults when there is none."""
    if path is None:
        path = paths.default_config_file()
        if path is None:
            return Config()
    text = read_text(path, "config")
    data = load_yaml(text, f"config {path}") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: top level must be a mapping")
    return _relative_to(from_mapping(Config, data, str(path)), path.parent)


def _relative_to(cfg: Config, base: Path) -> Config:
    """Directories named relative in a config file are relative to that file."""
    def fix(value: str) -> str:
        if not value:
            return value
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())

    return dataclasses.replace(
        cfg,
        kernel=dataclasses.replace(cfg.kernel, fragments_dir=fix(cfg.kernel.fragments_dir)),
        images=dataclasses.replace(cfg.images, recipes_dir=fix(cfg.images.recipes_dir)),
    )
