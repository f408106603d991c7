"""kvmlab.report on a kernel built here: boot the demo kernel that has the
planted bug, crash it with the bug's reproducer, and symbolize the report with
that build's vmlinux. (The demo's ``base`` config has no MAGIC_SYSRQ, so sysrq-c
can't be the crash here.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.outcome import BuildStatus
from kvmlab.report import parse, symbolize
from tests.fixtures_kernel import INIT_PRELUDE, BuildKernel, MakeInitramfs, boot_console

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def test_planted_oops_symbolized_with_vmlinux(
    demo_tree: DemoTree, build_kernel: BuildKernel, reproducers: dict[str, Path],
    busybox_initramfs: MakeInitramfs,
) -> None:
    build = build_kernel(demo_tree.culprit)
    if build.status is not BuildStatus.OK:
        pytest.skip(f"the culprit commit did not build: {build.error}")
    vmlinux = Path(build.artifacts["vmlinux"])
    initramfs = busybox_initramfs(INIT_PRELUDE + "/repro\n", {"/repro": reproducers["culprit"]})
    console = boot_console(Path(build.artifacts["bzImage"]), initramfs)
    rep = parse(console)
    assert rep is not None, console[-3000:]
    assert rep.title == "BUG: unable to handle kernel NULL pointer dereference in comm_digest_compute"
    out = symbolize(rep.report, vmlinux)
    # The guilty frame now names its source line, relative to the tree.
    assert re.search(r"[ :]comm_digest_compute\+0x[0-9a-f]+/0x[0-9a-f]+ kernel/sys\.c:[0-9]+", out), out
    assert " [inline]" in out  # the prctl handler is inlined into __do_sys_prctl
    # Nothing else of the report was changed.
    assert re.sub(
        r" \S+\.[ch]:[0-9]+", "", "\n".join(x for x in out.splitlines() if "[inline]" not in x)
    ) == (rep.report.rstrip("\n"))
