"""Where kvmlab finds its data files and its user's overrides: the one place.

Shipped data is package data, read through :mod:`importlib.resources`, so a
wheel or a non-editable ``pip install`` finds it wherever it is installed:

* ``kernel_configs/``: config fragments (``NAME.config``) and the compiler
  table (``compilers.yaml``);
* ``images/``: disk image recipes (``NAME.yaml``).

In a checkout these are the top-level ``kernel_configs/`` and ``images/``
folders (``kvmlab/data/*`` are symlinks to them), so what is edited there is
what the package ships.

A user directory is searched before the shipped one, so a file there adds a
fragment or recipe, or replaces the shipped one of the same name. The
environment variable wins over the config file key.

Environment variables (the README's table lists the same):

* ``KVMLAB_CONFIG``: the config file read when a command gets no ``--conf``
  (default: ``$XDG_CONFIG_HOME/kvmlab/config.yaml`` when it exists).
* ``KVMLAB_FRAGMENTS_DIR`` (config key ``kernel.fragments_dir``): more config
  fragments, and a ``compilers.yaml`` that replaces the shipped table.
* ``KVMLAB_RECIPES_DIR`` (config key ``images.recipes_dir``): more image recipes.
* ``XDG_CACHE_HOME``: the cache root, ``$XDG_CACHE_HOME/kvmlab`` (builds,
  images, probes, journals; default ``~/.cache/kvmlab``).
* ``CCACHE_DIR``: ccache's own, used by kernel builds as is.
* ``CCACHE_DEPEND``: kernel builds set it to 1 unless it is set (ccache's depend mode;
  sources with ``.incbin`` bypass ccache: see :mod:`kvmlab.kernel.ccache_front`).
* ``http_proxy``, ``https_proxy``, ``no_proxy`` (config key ``syzbot.proxy``):
  the proxy for the syzbot dashboard (``--syzbot``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal

from kvmlab.errors import ConfigError, InfraError

ENV_CONFIG = "KVMLAB_CONFIG"
ENV_FRAGMENTS_DIR = "KVMLAB_FRAGMENTS_DIR"
ENV_RECIPES_DIR = "KVMLAB_RECIPES_DIR"

DataDir = Literal["kernel_configs", "images"]


def shipped_dir(name: DataDir) -> Path:
    """The directory of kvmlab's own ``name`` data files (package data).

    An installation that does not unpack to the file system (a zip) is not
    supported: fragments and recipes are read as ordinary files.
    """
    found = resources.files("kvmlab") / "data" / name
    if not isinstance(found, Path) or not found.is_dir():
        raise InfraError(f"kvmlab's data folder {name!r} is missing from its installation ({found}): "
                         "reinstall kvmlab")
    # In a checkout: the top-level folder the symlink points at, the one to edit.
    return found.resolve()


def user_dir(env_var: str, configured: Path | None) -> Path | None:
    """The user's override directory: ``$env_var`` if set, else ``configured``."""
    value = os.environ.get(env_var)
    if value:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise ConfigError(f"${env_var}: {path} is not a directory")
        return path
    if configured is not None and not configured.is_dir():
        raise ConfigError(f"{configured} (from the config file) is not a directory")
    return configured


def search_path(name: DataDir, env_var: str, configured: Path | None = None) -> tuple[Path, ...]:
    """Directories to look for ``name`` files in, first match wins: the user's
    (see :func:`user_dir`), then kvmlab's own."""
    mine = user_dir(env_var, configured)
    shipped = shipped_dir(name)
    return (mine, shipped) if mine is not None and mine.resolve() != shipped.resolve() else (shipped,)


def default_config_file() -> Path | None:
    """The config file a command without ``--conf`` reads: ``$KVMLAB_CONFIG``
    (which must exist), else ``$XDG_CONFIG_HOME/kvmlab/config.yaml`` when it
    exists, else none (every default)."""
    value = os.environ.get(ENV_CONFIG)
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    candidate = Path(base) / "kvmlab" / "config.yaml"
    return candidate if candidate.is_file() else None
