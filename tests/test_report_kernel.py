"""kvmlab.report on a kernel built here: boot the demo base kernel, panic it
with sysrq-c, and symbolize the report with that build's vmlinux."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvmlab.outcome import BuildOutcome, BuildStatus
from kvmlab.report import parse, symbolize
from tests.fixtures_kernel import INIT_PRELUDE, MakeInitramfs, boot_console

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def test_sysrq_crash_symbolized_with_vmlinux(
    base_kernel: BuildOutcome, busybox_initramfs: MakeInitramfs
) -> None:
    if base_kernel.status is not BuildStatus.OK:
        pytest.skip(f"base kernel did not build: {base_kernel.error}")
    vmlinux = Path(base_kernel.artifacts["vmlinux"])
    initramfs = busybox_initramfs(INIT_PRELUDE + "echo c > /proc/sysrq-trigger\n")
    console = boot_console(Path(base_kernel.artifacts["bzImage"]), initramfs)
    rep = parse(console)
    assert rep is not None, console[-3000:]
    assert rep.title == "kernel panic: sysrq triggered crash"
    out = symbolize(rep.report, vmlinux)
    # the sysrq handler's frame now names its source line
    assert re.search(r" sysrq_handle_crash\+0x[0-9a-f]+/0x[0-9a-f]+ drivers/tty/sysrq\.c:[0-9]+", out), out
    # and nothing else of the report was changed
    assert re.sub(
        r" \S+\.[ch]:[0-9]+", "", "\n".join(x for x in out.splitlines() if "[inline]" not in x)
    ) == (rep.report.rstrip("\n"))
