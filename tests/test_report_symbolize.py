"""kvmlab.oops.symbolize on a real ELF with DWARF, built here with gcc.

The binary plays vmlinux: frames are written the way the kernel prints them
(``func+0xOFF/0xSIZE``, offsets from ``nm -S``), and symbolize() has to find
file:line and the inlined function exactly as addr2line knows them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kvmlab.errors import MissingFileError
from kvmlab.oops import symbolize
from kvmlab.oops.symbolize import _clean_path
from kvmlab.proc import run

pytestmark = pytest.mark.unit

SOURCE = """\
#include <stdio.h>

static inline __attribute__((always_inline)) int helper(volatile int *p, int n)
{
	int s = 0;
	for (int i = 0; i < n; i++)
		s += p[i] * i;  /* HELPER */
	return s;
}

__attribute__((noinline)) int outer(volatile int *p, int n)
{
	int r = helper(p, n);  /* CALL */
	return r + 1;
}

int main(void)
{
	volatile int a[4] = {1, 2, 3, 4};
	printf("%d\\n", outer(a, 4));
	return 0;
}
"""


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("gcc", "nm", "addr2line"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    d = tmp_path_factory.mktemp("elf")
    (d / "prog.c").write_text(SOURCE)
    run(["gcc", "-g", "-O2", "-o", "prog", "prog.c"], cwd=d, timeout=120)
    return d / "prog"


def _line_of(marker: str) -> int:
    return next(i for i, line in enumerate(SOURCE.splitlines(), 1) if marker in line)


def _outer(elf: Path) -> tuple[int, int]:
    out = run(["nm", "-S", elf], timeout=30).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] == "outer":
            return int(parts[0], 16), int(parts[1], 16)
    raise AssertionError("no symbol outer")


def _inlined_offset(elf: Path) -> int:
    """An offset in outer() whose instruction belongs to the inlined helper()."""
    addr, size = _outer(elf)
    out = run(
        ["addr2line", "-a", "-i", "-f", "-e", elf, *(hex(addr + o) for o in range(size))], timeout=30
    ).stdout
    groups = out.split("0x")[1:]
    for off, group in enumerate(groups):
        if "\nhelper\n" in group and f"prog.c:{_line_of('HELPER')}" in group:
            return off
    pytest.skip("gcc did not inline helper() into outer() here")


def test_symbolize_adds_file_line_and_inline_frames(elf: Path) -> None:
    _addr, size = _outer(elf)
    off = _inlined_offset(elf)
    # A call-trace frame holds the return address: one past the instruction.
    report = f"Call Trace:\n <TASK>\n outer+0x{off + 1:x}/0x{size:x}\n unknown_fn+0x10/0x20\n </TASK>\n"
    got = symbolize(report, elf)
    lines = got.splitlines()
    assert lines[0] == "Call Trace:"
    assert lines[2] == f" helper prog.c:{_line_of('HELPER')} [inline]"
    assert lines[3] == f" outer+0x{off + 1:x}/0x{size:x} prog.c:{_line_of('CALL')}"
    # frames the binary does not know are left alone
    assert lines[4] == " unknown_fn+0x10/0x20"
    assert lines[5] == " </TASK>"


def test_symbolize_rip_line_uses_the_exact_address(elf: Path) -> None:
    _addr, size = _outer(elf)
    off = _inlined_offset(elf)
    got = symbolize(f"RIP: 0010:outer+0x{off:x}/0x{size:x}\n", elf)
    assert f"helper prog.c:{_line_of('HELPER')} [inline]" in got.splitlines()[0]
    assert got.splitlines()[1].startswith(f"RIP: 0010:outer+0x{off:x}/0x{size:x} prog.c:")


def test_symbolize_leaves_module_frames_and_plain_text(elf: Path) -> None:
    text = "no frames here\n demo_fn+0x1/0x2 [demo_mod]\n"
    assert symbolize(text, elf) == text


def test_symbolize_missing_vmlinux(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="vmlinux-nope"):
        symbolize(" outer+0x1/0x2\n", tmp_path / "vmlinux-nope")


@pytest.mark.parametrize("path", [
    # Compiled in another clone's cache whose path holds a "kernel" directory.
    "/elsewhere/.test-cache/kernel/work/slots/ffec64b854a1-0/src/kernel/sys.c",
    "/gone/cache/work/slots/ab12-3/obj/../src/kernel/sys.c",
])
def test_paths_of_any_build_slot_are_cut_to_the_tree(path: str) -> None:
    assert _clean_path(path, (Path("/nowhere/builds/x"),)) == "kernel/sys.c"
