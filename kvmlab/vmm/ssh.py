"""SSH to a guest with paramiko: connect, run a command, copy a file in.

Every call takes a timeout; paramiko's and socket's exceptions become
:class:`kvmlab.errors.SSHError` at this boundary.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from kvmlab.errors import SSHError
from kvmlab.vmm.backend import GuestStream

log = logging.getLogger(__name__)

_TRANSPORT_ERRORS = (paramiko.SSHException, OSError, EOFError, socket.timeout)


@dataclass(frozen=True)
class CommandResult:
    """A command run in the guest. ``exit_status`` is None when it timed out
    or the connection dropped before it finished."""

    exit_status: int | None
    output: str
    timed_out: bool = False
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def describe(self) -> str:
        """How the command ended, in words: ``status 4``, ``killed by SIGKILL``
        (its shell's 128+N), or without a status (paramiko's -1: the process
        sshd started was killed itself)."""
        return describe_status(self.exit_status)


def describe_status(status: int | None) -> str:
    """See :meth:`CommandResult.describe`."""
    if status is None or status < 0:
        return "with no exit status (killed by a signal)"
    if 128 < status < 128 + 65:
        try:
            name = signal.Signals(status - 128).name
        except ValueError:
            return f"with status {status}"
        return f"killed by {name} (status {status})"
    return f"with status {status}"


def keeping_status(command: str) -> str:
    """``command`` for a guest shell such that its exit status always comes
    back: the shell otherwise execs a last simple command in place, and when
    that process is killed (the OOM killer) sshd reports a signal, which
    paramiko drops (status -1); a shell that stays reports 128+N."""
    return f"{command}\nexit $?"


class SSHSession:
    """One SSH connection as ``user`` authenticated by ``key``, over the
    streams ``open_stream(timeout)`` gives (see
    :meth:`kvmlab.vmm.backend.Instance.connect`). ``label`` names the guest
    in messages."""

    def __init__(self, open_stream: Callable[[float], GuestStream], user: str, key: Path, *,
                 label: str) -> None:
        self._open_stream = open_stream
        self.user, self.key, self.label = user, key, label
        self._client: paramiko.SSHClient | None = None

    def connect(self, timeout: float) -> None:
        """One attempt (dropping any earlier connection); raises SSHError when
        the guest does not answer in time."""
        self.close()
        client = paramiko.SSHClient()
        # Guests are fresh every boot; their host keys are ours anyway.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            sock = self._open_stream(timeout)
        except SSHError as e:
            client.close()
            raise SSHError(f"ssh {self.user}@{self.label}: {e}") from e
        try:
            client.connect(
                self.label,
                sock=sock,
                username=self.user,
                key_filename=str(self.key),
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                allow_agent=False,
                look_for_keys=False,
            )
            transport = client.get_transport()
            if transport is not None:
                transport.set_keepalive(5)
        except _TRANSPORT_ERRORS as e:
            client.close()
            sock.close()
            raise SSHError(f"ssh {self.user}@{self.label}: {e or type(e).__name__}") from e
        self._client = client

    @property
    def connected(self) -> bool:
        t = self._client.get_transport() if self._client else None
        return bool(t and t.is_active())

    def _require(self) -> paramiko.SSHClient:
        if self._client is None:
            raise SSHError(f"ssh {self.label}: not connected")
        return self._client

    def run(
        self,
        command: str,
        *,
        timeout: float,
        on_output: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run ``command`` (a shell string) in the guest; stdout and stderr are
        merged and streamed to ``on_output`` as they arrive.

        A command that outlives ``timeout`` seconds is abandoned (its channel
        closed) and reported with ``timed_out=True``. A transport that breaks
        mid-command raises SSHError; the caller decides whether a crash on the
        console explains it.
        """
        client = self._require()
        start = time.monotonic()
        chunks: list[str] = []
        try:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                raise SSHError(f"ssh {self.label}: connection lost")
            chan = transport.open_session(timeout=timeout)
            chan.set_combine_stderr(True)
            chan.settimeout(0.5)
            chan.exec_command(command)
            deadline = start + timeout
            while True:
                if time.monotonic() > deadline:
                    chan.close()
                    return CommandResult(None, "".join(chunks), True, time.monotonic() - start)
                try:
                    data = chan.recv(65536)
                except TimeoutError:
                    if not transport.is_active():
                        raise SSHError(f"ssh {self.label}: connection lost") from None
                    continue
                if not data:
                    break
                text = data.decode(errors="replace")
                chunks.append(text)
                if on_output is not None:
                    on_output(text)
            # EOF on the channel: the exit status follows promptly unless the
            # connection died with the guest.
            while not chan.exit_status_ready():
                if not transport.is_active() or time.monotonic() > deadline:
                    raise SSHError(f"ssh {self.label}: connection lost")
                time.sleep(0.05)
            status = chan.recv_exit_status()
        except _TRANSPORT_ERRORS as e:
            raise SSHError(f"ssh {self.label}: {e or type(e).__name__}") from e
        return CommandResult(status, "".join(chunks), False, time.monotonic() - start)

    def copy_in(self, local: Path, remote: str, *, timeout: float, mode: int | None = None) -> None:
        """Copy a host file into the guest over SFTP."""
        client = self._require()
        try:
            sftp = client.open_sftp()
            try:
                channel = sftp.get_channel()
                if channel is not None:
                    channel.settimeout(timeout)
                sftp.put(str(local), remote)
                if mode is not None:
                    sftp.chmod(remote, mode)
            finally:
                sftp.close()
        except _TRANSPORT_ERRORS as e:
            raise SSHError(f"copy {local} to {self.label}:{remote}: {e or type(e).__name__}") from e

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# -- the OpenSSH client, for a person at a terminal --------------------------

#: Options of every OpenSSH client call to a guest: guests are fresh every
#: boot (a new host key each time) and reached on 127.0.0.1 ports that other
#: guests had before, so their keys are neither checked nor remembered.
OPENSSH_OPTIONS: tuple[str, ...] = (
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "IdentitiesOnly=yes",
    "-o", "ConnectTimeout=10",
)


@dataclass(frozen=True)
class Endpoint:
    """Where a guest's sshd is reached, and as whom."""

    host: str
    port: int
    user: str
    key: Path


def ssh_argv(ep: Endpoint, command: list[str] | tuple[str, ...] = ()) -> list[str]:
    """``ssh`` to the guest: a login shell without ``command``, else the
    command (its words joined by ssh with spaces, as ssh always does). A pty
    is asked for when there is no command, as ssh does by itself."""
    return ["ssh", "-p", str(ep.port), "-i", str(ep.key), *OPENSSH_OPTIONS,
            f"{ep.user}@{ep.host}", *command]


def scp_argv(ep: Endpoint, paths: list[tuple[bool, str]]) -> list[str]:
    """``scp`` between host and guest; ``paths`` are (in the guest?, path),
    the last one the destination."""
    words = [f"{ep.user}@{ep.host}:{p}" if guest else p for guest, p in paths]
    return ["scp", "-r", "-P", str(ep.port), "-i", str(ep.key), *OPENSSH_OPTIONS, *words]
