"""Reproducers: what to copy into a guest and which command runs it.

Three kinds: a C program (compiled statically on the host with the flags
syzbot's C reproducers need), a syzkaller program run by the user's own
``syz-execprog``/``syz-executor``, and a plain shell command. Preparing one
happens once, before any VM boots, so a reproducer that does not compile is
one clear error and no VM time is spent.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kvmlab import proc
from kvmlab.errors import HostToolError, MissingFileError, ProcessError, UserError

#: Where reproducer files go in the guest.
GUEST_DIR = "/tmp/kvmlab-repro"

#: syzbot's C reproducers use threads and must run without the host's libc.
C_FLAGS = ("-O1", "-g", "-static", "-pthread", "-Wno-unused-result")


class ReproCompileError(UserError):
    """The C reproducer does not compile."""


@dataclass(frozen=True)
class Prepared:
    """Files to copy into the guest (host path, guest path, mode) and the
    command that runs the reproducer there."""

    files: tuple[tuple[Path, str, int], ...]
    command: str
    description: str


def _first_error(output: str) -> str:
    """The compiler's or the linker's own first complaint; collect2's closing
    "ld returned 1 exit status" says nothing about why."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if ("error" in ln or "undefined reference" in ln or "cannot" in ln) and not ln.startswith("collect2"):
            return ln
    return lines[0] if lines else "no message"


@dataclass(frozen=True)
class CProgram:
    source: Path
    compiler: str = "gcc"

    def prepare(self, workdir: Path) -> Prepared:
        if not self.source.is_file():
            raise MissingFileError(f"reproducer {self.source}: no such file")
        if shutil.which(self.compiler) is None:
            raise HostToolError(f"{self.compiler}: not found (needed to compile {self.source})")
        workdir.mkdir(parents=True, exist_ok=True)
        binary = workdir / "repro"
        try:
            proc.run([self.compiler, *C_FLAGS, "-o", str(binary), str(self.source)], timeout=300)
        except ProcessError as e:
            raise ReproCompileError(
                f"reproducer {self.source} does not compile: {_first_error(e.output_tail)}") from None
        return Prepared(((binary, f"{GUEST_DIR}/repro", 0o755),), f"cd {GUEST_DIR} && ./repro",
                        f"C program {self.source.name}")


@dataclass(frozen=True)
class SyzProgram:
    """A syzkaller program run by the user's syz-execprog and syz-executor.

    ``options`` are syz-execprog flags as syzkaller passes them, e.g.
    ``{"repeat": "0", "procs": "6", "sandbox": "none", "threaded": "true"}``.
    """

    program: Path
    execprog: Path
    executor: Path
    options: dict[str, str] = field(default_factory=dict)

    def prepare(self, workdir: Path) -> Prepared:
        for what, path in (("syz program", self.program), ("syz-execprog", self.execprog),
                           ("syz-executor", self.executor)):
            if not path.is_file():
                raise MissingFileError(f"{what} {path}: no such file")
        flags = {"executor": f"{GUEST_DIR}/syz-executor", **self.options}
        args = " ".join(f"-{k}={shlex.quote(v)}" for k, v in sorted(flags.items()))
        return Prepared(
            (
                (self.execprog, f"{GUEST_DIR}/syz-execprog", 0o755),
                (self.executor, f"{GUEST_DIR}/syz-executor", 0o755),
                (self.program, f"{GUEST_DIR}/prog", 0o644),
            ),
            f"cd {GUEST_DIR} && ./syz-execprog {args} prog",
            f"syzkaller program {self.program.name}",
        )


@dataclass(frozen=True)
class ShellCommand:
    command: str

    def prepare(self, workdir: Path) -> Prepared:
        if not self.command.strip():
            raise UserError("reproducer command is empty")
        return Prepared((), f"mkdir -p {GUEST_DIR} && cd {GUEST_DIR} && {self.command}", "command")


Reproducer = CProgram | SyzProgram | ShellCommand


def from_path(path: Path) -> Reproducer:
    """A reproducer by file name: ``*.c`` is a C program; anything else is
    read as a syzkaller program only with syz binaries (use SyzProgram)."""
    if path.suffix == ".c":
        return CProgram(path)
    raise UserError(f"reproducer {path}: unknown kind (a .c file, --syz-* options, or --command)")
