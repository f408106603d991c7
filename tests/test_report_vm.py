"""kvmlab.oops against a live kernel console: boot this host's Debian kernel
under TCG with a busybox /init that panics it (sysrq-c), watch the serial
console chunk by chunk with crash_start(), then parse the whole output."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kvmlab.oops import crash_start, parse
from kvmlab.proc import kill_group, run, spawn

pytestmark = pytest.mark.vm

KERNELS = sorted(Path("/boot").glob("vmlinuz-*"))
BOOT_TIMEOUT = 120.0


def _initramfs(root: Path, init_body: str) -> Path:
    for sub in ("bin", "proc", "sys", "dev"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "mount", "echo"):
        (root / "bin" / applet).symlink_to("busybox")
    init = root / "init"
    init.write_text(f"#!/bin/sh\nmount -t proc proc /proc\n{init_body}\n")
    init.chmod(0o755)
    files = run(["find", "."], cwd=root, timeout=30).stdout
    cpio = root.parent / "initrd.cpio"
    run(["cpio", "-o", "-H", "newc", "--quiet", "-O", cpio], cwd=root, timeout=60, input_text=files)
    return cpio


def test_live_sysrq_crash_is_seen_on_the_stream(tmp_path: Path) -> None:
    if not KERNELS or not os.access(KERNELS[0], os.R_OK):
        pytest.skip("no readable /boot/vmlinuz-* on this host")
    for tool in ("qemu-system-x86_64", "cpio"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox is not installed")
    initrd = _initramfs(tmp_path / "root", "echo c > /proc/sysrq-trigger")
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
        "-kernel", str(KERNELS[0]), "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 loglevel=7",
    ]  # fmt: skip
    proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    console = ""
    first_seen_at = None
    deadline = time.monotonic() + BOOT_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            console += chunk.decode(errors="replace")
            if first_seen_at is None:
                first_seen_at = crash_start(console)
            # keep reading until the trace is complete
            if first_seen_at is not None and "Kernel Offset:" in console[first_seen_at:]:
                break
    finally:
        kill_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    assert first_seen_at is not None, f"no crash seen; console tail:\n{console[-2000:]}"
    rep = parse(console)
    assert rep is not None
    assert rep.start == first_seen_at
    assert rep.title == "kernel panic: sysrq triggered crash"
    assert not rep.corrupted
    assert "sysrq_handle_crash" in rep.report
