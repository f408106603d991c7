"""The compiler word kernel builds put in front of the compiler: ccache in
depend mode, except for the sources that pull a file in with ``.incbin``.

Depend mode keys a cached object on the source and the headers the compiler's
own ``-MMD`` output names; a file an assembler ``.incbin`` reads is not among
them. The kernel has several (``arch/x86/boot/compressed/piggy.S`` takes the
compressed vmlinux, ``kernel/configs.c`` the config, ``certs/``, ``usr/``,
the realmode blob): in depend mode ccache would hand back the old object, and
a patched kernel's bzImage would be the unpatched one. ccache's default mode
sees ``.incbin`` in the preprocessed text and does not cache the object, but
a depend-mode entry already in the cache would still be found by its direct
lookup, so those sources bypass ccache altogether (``CCACHE_DISABLE``).

The script is tiny (one ``grep`` of each C or assembler source, ~1 ms) and is
written into the build work directory; ``KVMLAB_CCACHE`` names ccache.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

NAME = "kvmlab-ccache"

SCRIPT = """#!/bin/sh
# Written by kvmlab (kvmlab/kernel/ccache_front.py): ccache for a kernel
# build; a source with .incbin is compiled without it (depend mode would
# not see the file it includes).
for arg do
    case $arg in
        *.c|*.S|*.s)
            if [ -f "$arg" ] && grep -q '[.]incbin' "$arg"; then
                CCACHE_DISABLE=1
                export CCACHE_DISABLE
            fi ;;
    esac
done
exec "${KVMLAB_CCACHE:-ccache}" "$@"
"""


def install(directory: Path) -> Path:
    """The script in ``directory`` (written when missing or different, by an
    atomic rename: builds in other slots may be running it)."""
    path = directory / NAME
    try:
        if path.read_text() == SCRIPT and os.access(path, os.X_OK):
            return path
    except OSError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    # A background build's thread may install it at the same moment as the
    # foreground's: one temporary file per thread.
    tmp = directory / f".{NAME}.tmp{os.getpid()}.{threading.get_ident()}"
    tmp.write_text(SCRIPT)
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return path
