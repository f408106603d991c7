"""The one exception tree of kvmlab.

Kernel behaviour (a crash, a boot failure, a build failure) is never an
exception: those are results. Exceptions are for kvmlab's own failures and the
host's (:class:`InfraError`) and for bad input from the user (:class:`UserError`).
Every message is one line that names the thing at fault.
"""

from __future__ import annotations


class KvmlabError(Exception):
    """Root of every error kvmlab raises on purpose."""


class UserError(KvmlabError):
    """The user asked for something that cannot be done as asked."""


class ConfigError(UserError):
    """A configuration file or value is invalid (unknown key, bad value)."""


class MissingFileError(UserError):
    """A file the user named does not exist or cannot be read."""


class UnknownCommitError(UserError):
    """A revision does not resolve in the given tree."""


class InfraError(KvmlabError):
    """The host or kvmlab's own machinery failed (not the kernel under test)."""


class HostToolError(InfraError):
    """A required host program is missing or failed."""


class LibvirtError(InfraError):
    """libvirtd is unreachable or refused an operation."""


class SSHError(InfraError):
    """The SSH transport to a guest failed."""


class DiskFullError(InfraError):
    """The host ran out of disk space."""


class ProcessError(InfraError):
    """A host process exited non-zero or timed out.

    Carries the argv, exit code and the tail of its output so that the message
    alone is enough to see what went wrong.
    """

    def __init__(
        self,
        argv: list[str],
        returncode: int | None,
        output_tail: str,
        *,
        timed_out: bool = False,
        output_head: str = "",
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output_tail = output_tail
        self.output_head = output_head
        """The start of the output (whole lines): where a compiler's first error is."""
        self.timed_out = timed_out
        what = "timed out" if timed_out else f"exited with {returncode}"
        last = output_tail.strip().splitlines()[-1:] if output_tail.strip() else []
        detail = f": {last[0]}" if last else ""
        super().__init__(f"{argv[0]} {what}{detail}")
