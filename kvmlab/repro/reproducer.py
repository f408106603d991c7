"""Reproducers: what to copy into a guest and which command runs it.

Three kinds: a C program (compiled statically on the host with the flags
syzbot's C reproducers need), a syzkaller program run by the user's own
``syz-execprog``/``syz-executor``, and a plain shell command. Preparing one
happens once, before any VM boots, so a reproducer that does not compile is
one clear error and no VM time is spent.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kvmlab import proc
from kvmlab.errors import HostToolError, MissingFileError, ProcessError, UserError
from kvmlab.repro import syz

#: Where reproducer files go in the guest.
GUEST_DIR = "/tmp/kvmlab-repro"

#: syzbot's C reproducers use threads and must run without the host's libc.
C_FLAGS = ("-O1", "-g", "-static", "-pthread", "-Wno-unused-result")


class ReproCompileError(UserError):
    """The C reproducer does not compile."""


@dataclass(frozen=True)
class StagedRepro:
    """Files to copy into the guest (host path, guest path, mode) and the
    command that runs the reproducer there."""

    files: tuple[tuple[Path, str, int], ...]
    command: str
    description: str
    kind: str = "command"
    """``c``, ``syz`` or ``command``: how the runner reads the reproducer's
    exit (a syz-execprog that fails is ``repro-failed``)."""
    kernel_needs: tuple[syz.Need, ...] = ()
    """Kernel options the reproducer needs, checked against the kernel's
    config before a VM boots when the config is known."""
    diagnose: str = ""
    """A command that says why the reproducer failed when it did not say so
    itself (syz-execprog hides syz-executor's SYZFAIL unless -debug)."""


#: A compiler's or linker's complaint (the words after the file name: a path
#: may itself hold "error").
_COMPLAINT = re.compile(r": (?:fatal )?error: |undefined reference to |: cannot find |: cannot open ")


def _first_error(output: str) -> str:
    """The compiler's or the linker's own first complaint, whole (file name and
    all); collect2's closing "ld returned 1 exit status" says nothing about why."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if _COMPLAINT.search(ln) and not ln.startswith("collect2"):
            return ln
    return lines[0] if lines else "no message"


@dataclass(frozen=True)
class CProgram:
    source: Path
    compiler: str = "gcc"

    def prepare(self, workdir: Path) -> StagedRepro:
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
                f"reproducer {self.source} does not compile: "
                f"{_first_error(e.output_head or e.output_tail)}") from None
        return StagedRepro(((binary, f"{GUEST_DIR}/repro", 0o755),), f"cd {GUEST_DIR} && ./repro",
                        f"C program {self.source.name}", kind="c")


@dataclass(frozen=True)
class SyzProgram:
    """A syzkaller program run by the real syz-execprog and syz-executor.

    The syz-execprog flags come from the program's options line (see
    :mod:`kvmlab.repro.syz`); ``overrides`` (``--syz-opt``) win over them.
    Preparing checks the binaries (exist, executable, x86-64), the program
    (every line a call, every call known to syz-execprog's descriptions) and
    writes the guest script; nothing boots before that passed.
    """

    program: Path
    execprog: Path
    executor: Path
    overrides: dict[str, str] = field(default_factory=dict)

    def flags(self, text: str) -> dict[str, str]:
        opts = syz.find_options(text, where=str(self.program))
        return syz.merge_flags(syz.execprog_flags(opts), self.overrides)

    def prepare(self, workdir: Path) -> StagedRepro:
        bins = syz.check_binaries(self.execprog, self.executor)
        try:
            text = self.program.read_text(errors="replace")
        except FileNotFoundError:
            raise MissingFileError(f"syz program {self.program}: no such file") from None
        except OSError as e:
            raise MissingFileError(f"syz program {self.program}: {e.strerror}") from None
        calls = syz.program_calls(text, where=str(self.program))
        flags = self.flags(text)
        needs = syz.kernel_needs(flags, text)  # also checks -enable/-disable
        syz.host_parse_check(self.execprog, self.program, calls)
        workdir.mkdir(parents=True, exist_ok=True)
        script = workdir / "run-syz.sh"
        script.write_text(syz.guest_script(GUEST_DIR, flags, bins.interpreters))
        return StagedRepro(
            (
                (self.execprog, f"{GUEST_DIR}/syz-execprog", 0o755),
                (self.executor, f"{GUEST_DIR}/syz-executor", 0o755),
                (self.program, f"{GUEST_DIR}/prog", 0o644),
                (script, f"{GUEST_DIR}/run-syz.sh", 0o755),
            ),
            f"sh {GUEST_DIR}/run-syz.sh",
            f"syzkaller program {self.program.name} ({syz.render_flags(flags)})",
            kind="syz",
            kernel_needs=tuple(needs),
            diagnose=f"sh {GUEST_DIR}/run-syz.sh -debug",
        )


@dataclass(frozen=True)
class ShellCommand:
    command: str

    def prepare(self, workdir: Path) -> StagedRepro:
        if not self.command.strip():
            raise UserError("reproducer command is empty")
        return StagedRepro((), f"mkdir -p {GUEST_DIR} && cd {GUEST_DIR} && {self.command}", "command",
                        kind="command")


Reproducer = CProgram | SyzProgram | ShellCommand


def from_path(path: Path) -> Reproducer:
    """A reproducer by file name: ``*.c`` is a C program; anything else is
    read as a syzkaller program only with syz binaries (use SyzProgram)."""
    if path.suffix == ".c":
        return CProgram(path)
    raise UserError(f"reproducer {path}: unknown kind (a .c file, --syz-* options, or --command)")
