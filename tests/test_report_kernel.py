"""kvmlab.oops on a kernel built here: the demo's head (which has the planted
use-after-free) built with KASAN and base's reduced DWARF, crashed by the bug's
reproducer, and the report symbolized with that build's vmlinux. (The boot is
the ``kasan_culprit`` session fixture, shared with the KASAN report test: the
suite's other kernels have no debug info to symbolize with.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.oops import parse, symbolize
from kvmlab.outcome import BuildOutcome, BuildStatus

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def test_planted_kasan_report_symbolized_with_vmlinux(kasan_culprit: tuple[BuildOutcome, str],
                                                       demo_tree: DemoTree) -> None:
    build, console = kasan_culprit
    if build.status is not BuildStatus.OK:
        pytest.skip(f"the KASAN build of the demo's head failed: {build.error}")
    vmlinux = Path(build.artifacts["vmlinux"])
    rep = parse(console)
    assert rep is not None, console[-3000:]
    assert rep.title == demo_tree.titles["culprit"]["kasan"]
    out = symbolize(rep.report, vmlinux)
    # The guilty frame now names its source line, relative to the tree.
    assert re.search(r"[ :]comm_digest_compute\+0x[0-9a-f]+/0x[0-9a-f]+ kernel/sys\.c:[0-9]+", out), out
    assert " [inline]" in out  # e.g. the prctl handler, inlined into __do_sys_prctl
    # Nothing else of the report was changed.
    assert re.sub(
        r" \S+\.[ch]:[0-9]+", "", "\n".join(x for x in out.splitlines() if "[inline]" not in x)
    ) == (rep.report.rstrip("\n"))
