"""The builder's ccache front (kvmlab.kernel.ccache_front) with the real ccache
and gcc: depend mode for plain sources, and a source that ``.incbin``s a
file is never answered from the cache when the file changes (the patched
kernel whose bzImage was the unpatched one: arch/x86/boot/compressed/piggy.S)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from kvmlab.kernel import ccache_front
from kvmlab.kernel.builder import KernelBuilder, ccache_counts

CCACHE = shutil.which("ccache")
pytestmark = pytest.mark.skipif(CCACHE is None or shutil.which("gcc") is None,
                                reason="ccache or gcc is not installed (scripts/setup.sh installs both)")


def _compile(front: Path, cwd: Path, source: str, cache: Path, stats: Path) -> bytes:
    """Kbuild's way: CC="front gcc", -Wp,-MMD, the object's bytes back."""
    env = {**os.environ, "CCACHE_DIR": str(cache), "CCACHE_DEPEND": "1", "KVMLAB_CCACHE": str(CCACHE),
           "CCACHE_STATSLOG": str(stats)}
    env.pop("CCACHE_DISABLE", None)
    subprocess.run([str(front), "gcc", "-Wp,-MMD,.x.o.d", "-c", source, "-o", "x.o"], cwd=cwd, env=env,
                   check=True, timeout=60)
    return (cwd / "x.o").read_bytes()


def test_an_incbin_source_is_compiled_again_when_its_file_changes(tmp_path: Path) -> None:
    front = ccache_front.install(tmp_path / "work")
    cache, stats, src = tmp_path / "cache", tmp_path / "stats.log", tmp_path / "src"
    src.mkdir()
    (src / "piggy.S").write_text('.section .rodata\n.incbin "blob.gz"\n')
    (src / "blob.gz").write_bytes(b"unpatched kernel")
    before = _compile(front, src, "piggy.S", cache, stats)
    (src / "blob.gz").write_bytes(b"patched kernel!!")  # same size, other bytes
    after = _compile(front, src, "piggy.S", cache, stats)
    assert b"unpatched kernel" in before and b"patched kernel!!" in after
    # A plain source still goes through ccache in depend mode: the second compile is a hit.
    (src / "sys.c").write_text('#include "sys.h"\nint f(void) { return VALUE; }\n')
    (src / "sys.h").write_text("#define VALUE 1\n")
    stats.unlink(missing_ok=True)
    first = _compile(front, src, "sys.c", cache, stats)
    assert _compile(front, src, "sys.c", cache, stats) == first
    assert ccache_counts(stats.read_text()) == (1, 1)
    # ...and a changed header is a miss.
    (src / "sys.h").write_text("#define VALUE 2\n")
    assert _compile(front, src, "sys.c", cache, stats) != first


def test_the_builder_puts_the_front_in_make_s_cc(tmp_path: Path) -> None:
    b = KernelBuilder(tmp_path)
    if b.ccache is None:
        pytest.skip("ccache is not installed")
    argv = b._make_base(tmp_path / "src", tmp_path / "obj", SimpleNamespace(llvm=False, cc="gcc"))  # type: ignore[arg-type]
    front = tmp_path / ccache_front.NAME
    assert f"CC={front} gcc" in argv
    assert os.access(front, os.X_OK) and front.read_text() == ccache_front.SCRIPT
    env = b._make_env(tmp_path, SimpleNamespace(llvm=False))  # type: ignore[arg-type]
    assert env["KVMLAB_CCACHE"] == b.ccache and env["CCACHE_DEPEND"] == "1"
    # Written again (atomically) when it differs, e.g. from an older kvmlab.
    front.write_text("#!/bin/sh\nexec ccache \"$@\"\n")
    assert ccache_front.install(tmp_path).read_text() == ccache_front.SCRIPT
