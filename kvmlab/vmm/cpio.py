"""newc cpio archives (the format of a Linux initramfs), written in memory:
no cpio binary needed, and deterministic (fixed mtimes, owners and inode
numbers), so the same inputs always give the same bytes."""

from __future__ import annotations

import io
import stat
from pathlib import Path


class CpioArchive:
    """A newc archive being written; :meth:`finish` returns its bytes.

    Parent directories are added as needed; a name given twice keeps its
    first entry.
    """

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._seen: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        name = name.lstrip("/")
        if name in self._seen:
            return
        self._seen.add(name)
        nameb = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nameb), 0]
        hdr = b"070701" + b"".join(b"%08X" % v for v in fields)
        self._ino += 1
        self._buf.write(hdr + nameb)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def _parent(self, name: str) -> None:
        parent = name.strip("/").rsplit("/", 1)
        if len(parent) == 2:
            self.mkdir(parent[0])

    def mkdir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._parent(name)
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._parent(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def host_file(self, path: Path, mode: int | None = None, *, name: str | None = None) -> None:
        """The host file ``path`` (links followed) at ``name`` (default: the same path)."""
        real = path.resolve()
        m = mode if mode is not None else (real.stat().st_mode & 0o777)
        self.file(name if name is not None else str(path), real.read_bytes(), m)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()
