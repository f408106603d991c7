"""Checks of what the user hands kvmlab, made before any work starts.

Each check raises one :class:`~kvmlab.errors.UserError` (a one-line message
naming the thing at fault and what is wrong with it) or returns what it read:

* input files and directories: they exist, are of the right kind, readable;
* text inputs (configs, job files, recipes, ``.config`` files): text, not
  binary, not absurdly large (:func:`read_text`);
* YAML: valid, and without a key given twice (:func:`load_yaml`: PyYAML keeps
  the last one silently);
* outputs: the file or directory can be written *now*, by writing to it, so
  that a long run never ends with its result unwritable (:func:`output_file`,
  :func:`output_dir`);
* sizes: what a pool of VMs asks for fits this host's memory
  (:func:`check_vm_memory`).

The jobs layer (:mod:`kvmlab.jobs.validate`) applies them to a whole job.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import psutil
import yaml

from kvmlab.errors import ConfigError, DiskFullError, InfraError, MissingFileError, UserError

#: A text input larger than this is not what the user meant (a kernel .config
#: is ~200 KiB, a console log a few MiB), bytes.
MAX_TEXT_BYTES = 64 << 20


class NotTextError(ConfigError):
    """A file that must be text is binary (or not UTF-8)."""


def input_file(path: Path, what: str) -> Path:
    """``path`` is a readable file (a UserError naming ``what`` otherwise)."""
    try:
        path.stat()
    except FileNotFoundError:
        raise MissingFileError(f"{what} {path}: no such file") from None
    except OSError as e:
        raise MissingFileError(f"{what} {path}: {e.strerror}") from None
    if path.is_dir():
        raise UserError(f"{what} {path}: a directory, not a file")
    if not path.is_file():
        raise UserError(f"{what} {path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise MissingFileError(f"{what} {path}: not readable")
    return path


def input_dir(path: Path, what: str) -> Path:
    """``path`` is a readable directory."""
    if not path.exists():
        raise MissingFileError(f"{what} {path}: no such directory")
    if not path.is_dir():
        raise UserError(f"{what} {path}: not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise MissingFileError(f"{what} {path}: not readable")
    return path


def text_problem(data: bytes) -> str | None:
    """Why ``data`` is not text (None: it is): a NUL byte or bytes that are not
    UTF-8, with the offset of the first."""
    nul = data.find(b"\0")
    if nul >= 0:
        return f"binary data (a NUL byte at offset {nul})"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})"
    return None


def read_text(path: Path, what: str, *, max_bytes: int = MAX_TEXT_BYTES, empty_ok: bool = True) -> str:
    """The text of ``path``, a file that must hold text (a config, a job, a
    recipe, a ``.config``): a missing, unreadable, binary, huge (over
    ``max_bytes``) or, unless ``empty_ok``, empty file is one UserError naming
    ``what`` and the path."""
    input_file(path, what)
    size = path.stat().st_size
    if size > max_bytes:
        raise ConfigError(f"{what} {path}: {size / 2**20:.0f} MiB is too big for a {what} "
                          f"(at most {max_bytes / 2**20:.0f} MiB)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MissingFileError(f"{what} {path}: {e.strerror}") from None
    problem = text_problem(data)
    if problem is not None:
        raise NotTextError(f"{what} {path}: not a text file: {problem}")
    text = data.decode("utf-8")
    if not empty_ok and not text.strip():
        raise ConfigError(f"{what} {path}: empty")
    return text


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with the same key twice."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode,
                       deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _value in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base``: overriding its keys is the point
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the base constructor says so
            break
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (first on line {first + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, where: str) -> Any:
    """``text`` as YAML (safe types only); invalid YAML or a duplicate key is a
    ConfigError ``where: line N: ...``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {line}{problem}") from None


def load_table(path: Path, what: str, key: str, keys: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """A data table in YAML: a mapping whose one key ``key`` holds a list of
    mappings with keys among ``keys``. Returns (where, entry) per entry, where
    ``where`` names the file and the entry for the caller's own checks; any
    other shape is one ConfigError naming the file (and the entry, the key)."""
    data = load_yaml(read_text(path, what), f"{what} {path}")
    if not isinstance(data, dict) or set(data) != {key} or not isinstance(data[key], list):
        raise ConfigError(f"{path}: want a mapping with one key '{key}' holding a list")
    out = []
    for i, entry in enumerate(data[key]):
        where = f"{path}: {key}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: want a mapping")
        unknown = set(entry) - keys
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        out.append((where, entry))
    return out


def _write_probe(directory: Path, what: str, shown: Path) -> None:
    """Write (and remove) a small file in ``directory``: the one sure test that
    it can be written (permissions, a read-only mount, a full disk; ``access``
    is not, e.g. for root)."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".kvmlab-probe-")
    except OSError as e:
        raise _unwritable(what, shown, e) from None
    try:
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        except OSError as e:
            raise _unwritable(what, shown, e) from None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)


def _unwritable(what: str, path: Path, e: OSError) -> UserError | DiskFullError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{what} {path}: disk full ({e.strerror})")
    return UserError(f"{what} {path}: cannot write there ({e.strerror})")


def _existing_parent(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def output_dir(path: Path, what: str, *, shown: Path | None = None) -> Path:
    """``path`` is (or can be made as) a directory kvmlab can write in. Nothing
    is created: only the nearest existing ancestor is probed when ``path``
    does not exist yet. ``shown`` is the path messages name (default ``path``)."""
    shown = shown or path
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{what} {shown}: {path} exists and is not a directory")
        _write_probe(path, what, shown)
        return path
    parent = _existing_parent(path)
    if not parent.is_dir():
        raise UserError(f"{what} {shown}: {parent} is not a directory")
    _write_probe(parent, what, shown)
    return path


def output_file(path: Path, what: str) -> Path:
    """``path`` can be written as a file: not a directory, its directory
    exists (or can be made) and can be written in, and an existing file can be
    replaced."""
    if path.is_dir():
        raise UserError(f"{what} {path}: a directory, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{what} {path}: cannot write it (permission denied)")
    output_dir(path.parent, what, shown=path)
    return path


def check_vm_memory(count: int, memory_mb: int, *, where: str = "") -> None:
    """A pool of ``count`` VMs of ``memory_mb`` MiB each, started at once on this
    host, must fit its physical memory (QEMU allocates lazily, so asking for
    more starts fine and ends with the host's OOM killer, mid-run)."""
    total_mb = psutil.virtual_memory().total // 2**20
    asked = count * memory_mb
    if memory_mb > total_mb:
        raise UserError(f"{where}memory {memory_mb} MiB per VM: this host has {total_mb} MiB")
    if asked > total_mb:
        raise UserError(f"{where}{count} VMs x {memory_mb} MiB = {asked} MiB: more than this host's "
                        f"{total_mb} MiB (fewer VMs, or less memory each)")


def write_result(path: Path, text: str) -> None:
    """Write a result file whole or not at all (a temp file renamed over it:
    an earlier version survives a failure); a host failure (a full disk) is an
    InfraError naming the file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"cannot write {path}: disk full ({e.strerror})") from None
        raise InfraError(f"cannot write {path}: {e.strerror}") from None
