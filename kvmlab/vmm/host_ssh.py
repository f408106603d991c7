"""kvmlab's own SSH connection to a remote libvirt host: the way to its
guests.

A guest's SSH port is forwarded to the host's 127.0.0.1 only; kvmlab reaches
it through a ``direct-tcpip`` channel of one SSH connection to the host (the
same host, user, port and key libvirt's ``qemu+ssh`` URI uses). Nothing
listens on a public address. The host key must be known: the URI's
``known_hosts`` file, the user's ``~/.ssh/known_hosts`` or the system's; an
unknown host is refused, as ``ssh`` in batch mode would.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

import paramiko

from kvmlab.errors import InfraError, SSHError
from kvmlab.host_uri import HostAddress

log = logging.getLogger(__name__)

_ERRORS = (paramiko.SSHException, OSError, EOFError, socket.timeout)

#: SSH_MSG_CHANNEL_OPEN_FAILURE reason code of a refused forwarding (RFC 4254).
_ADMIN_PROHIBITED = 1

#: Seconds between SSH keepalives to the host.
KEEPALIVE = 5


class HostKeyError(InfraError):
    """The host's SSH key is not known (or does not match)."""


class HostSSH:
    """One SSH connection to a host, opened on first use and again after it
    dropped."""

    def __init__(self, address: HostAddress, *, connect_timeout: float) -> None:
        if address.hostname is None:
            raise ValueError("HostSSH is for remote hosts")
        self.address = address
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None

    def _settings(self) -> tuple[str, int, str | None, list[str], list[str]]:
        """(hostname, port, user, key files, known-hosts files), from the URI
        first, then ``~/.ssh/config``."""
        a = self.address
        assert a.hostname is not None
        cfg_path = Path(os.path.expanduser("~/.ssh/config"))
        entry: dict[str, object] = {}
        if cfg_path.is_file():
            entry = dict(paramiko.SSHConfig.from_path(str(cfg_path)).lookup(a.hostname))
        hostname = str(entry.get("hostname", a.hostname))
        port = a.port or int(str(entry.get("port", 22)))
        user = a.user or (str(entry["user"]) if "user" in entry else None)
        keys = [a.keyfile] if a.keyfile else [str(k) for k in entry.get("identityfile", []) or []]  # type: ignore[attr-defined]
        known = [a.known_hosts] if a.known_hosts else []
        extra = entry.get("userknownhostsfile")
        if extra and not a.known_hosts:
            known += [os.path.expanduser(k) for k in str(extra).split()]
        return hostname, port, user, [os.path.expanduser(k) for k in keys], known

    def _connect(self) -> paramiko.SSHClient:
        hostname, port, user, keys, known = self._settings()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if known:
            for k in known:
                if os.path.isfile(k):
                    client.get_host_keys().load(k)
        else:
            client.load_system_host_keys()
        t = self.connect_timeout
        # paramiko takes a list of key files too (its stubs say str only).
        key_files: Any = keys or None
        try:
            client.connect(
                hostname, port=port, username=user, key_filename=key_files, timeout=t, banner_timeout=t,
                auth_timeout=t, look_for_keys=not keys, allow_agent=not keys,
            )
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyError(f"{self.address.label}: host key does not match known_hosts: {e}") from e
        except paramiko.SSHException as e:
            client.close()
            if "not found in known_hosts" in str(e):
                where = known[0] if known else "~/.ssh/known_hosts"
                raise HostKeyError(
                    f"{self.address.label}: host key unknown (not in {where}): ssh to it once, "
                    "or name a file with known_hosts= in the URI"
                ) from e
            raise SSHError(f"ssh to host {self.address.label}: {e}") from e
        except _ERRORS as e:
            client.close()
            raise SSHError(f"ssh to host {self.address.label}: {e or type(e).__name__}") from e
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE)
        log.debug("ssh connection to host %s open", self.address.label)
        return client

    def transport(self) -> paramiko.Transport:
        """The live transport, connecting (again) when there is none."""
        with self._lock:
            t = self._client.get_transport() if self._client else None
            if t is None or not t.is_active():
                if self._client is not None:
                    self._client.close()
                    self._client = None
                self._client = self._connect()
                t = self._client.get_transport()
            assert t is not None
            return t

    def open_tcp(self, port: int, timeout: float) -> paramiko.Channel:
        """A channel to the host's 127.0.0.1:``port`` (``direct-tcpip``)."""
        try:
            t = self.transport()
            return t.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=timeout)
        except paramiko.ChannelException as e:
            raise SSHError(f"{self.address.label}: forward to 127.0.0.1:{port} refused: {e.text}") from e
        except _ERRORS as e:
            why = e or type(e).__name__
            raise SSHError(f"{self.address.label}: forward to 127.0.0.1:{port}: {why}") from e

    def forwarding_allowed(self, timeout: float) -> tuple[bool, str]:
        """Whether the host's sshd allows TCP forwarding: a channel to a port
        on its 127.0.0.1 is either opened or refused with "connect failed"
        (allowed) or "administratively prohibited" (not allowed)."""
        t = self.transport()
        try:
            chan = t.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0), timeout=timeout)
        except paramiko.ChannelException as e:
            if e.code == _ADMIN_PROHIBITED:
                return False, f"sshd refuses TCP forwarding ({e.text})"
            return True, f"forwarding allowed (test port: {e.text})"
        chan.close()
        return True, "forwarding allowed"

    def run(self, command: str, timeout: float) -> str:
        """Run a short command on the host; its stdout."""
        try:
            t = self.transport()
            chan = t.open_session(timeout=timeout)
            chan.settimeout(timeout)
            chan.exec_command(command)
            out = b""
            while data := chan.recv(65536):
                out += data
            chan.close()
        except _ERRORS as e:
            raise SSHError(f"{self.address.label}: {command!r}: {e or type(e).__name__}") from e
        return out.decode(errors="replace")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
