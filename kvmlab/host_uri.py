"""libvirt host URIs as kvmlab needs them, as pure functions.

A URI names a libvirt host: ``qemu:///system`` (this machine),
``qemu+ssh://user@host:port/system`` or ``.../session`` (a remote host over
SSH). kvmlab reaches a remote host's guests through its own SSH connection to
the same host, so it reads the same parts libvirt does: user, host, port, and
the ``keyfile`` and ``known_hosts`` query parameters.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from kvmlab.errors import ConfigError
from kvmlab.owner import Owner

#: Transports that reach the host over SSH (libvirt's ``ssh`` runs the ssh
#: binary; ``libssh``/``libssh2`` are built into libvirt).
SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")
LOCAL_TRANSPORTS = ("", "unix")


@dataclass(frozen=True)
class HostAddress:
    """Where a libvirt host is and how kvmlab logs into it."""

    uri: str
    driver: str
    """``qemu``."""
    transport: str
    """``""`` (local), ``unix``, ``ssh``, ``libssh``, ``libssh2``."""
    path: str
    """``system`` or ``session``."""
    hostname: str | None = None
    """None for this machine."""
    user: str | None = None
    port: int | None = None
    keyfile: str | None = None
    known_hosts: str | None = None

    @property
    def local(self) -> bool:
        return self.hostname is None

    @property
    def label(self) -> str:
        """A short name for log lines: ``local`` or ``[user@]host[:port]``."""
        if self.hostname is None:
            return "local" if self.path == "system" else f"local-{self.path}"
        who = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{who}{self.hostname}{port}"


def parse_host_uri(uri: str, *, where: str = "uri") -> HostAddress:
    """Parse and check a libvirt URI kvmlab can run VMs on; a bad one is a
    ConfigError naming ``where``."""
    u = urllib.parse.urlsplit(uri)
    scheme = u.scheme
    driver, _, transport = scheme.partition("+")
    if driver != "qemu":
        raise ConfigError(f"{where}: {uri!r}: only qemu:// URIs are supported (e.g. qemu+ssh://root@host/system)")
    path = u.path.strip("/")
    if path not in ("system", "session"):
        raise ConfigError(f"{where}: {uri!r}: the path must be /system or /session")
    params = dict(urllib.parse.parse_qsl(u.query))
    hostname = u.hostname or None
    if hostname is None:
        if transport not in LOCAL_TRANSPORTS:
            raise ConfigError(f"{where}: {uri!r}: transport {transport!r} needs a host name")
        return HostAddress(uri, driver, transport, path)
    if transport not in SSH_TRANSPORTS:
        raise ConfigError(
            f"{where}: {uri!r}: remote hosts are reached over SSH: use qemu+ssh://[user@]{hostname}/{path}"
        )
    try:
        port = u.port
    except ValueError:
        raise ConfigError(f"{where}: {uri!r}: bad port") from None
    return HostAddress(
        uri, driver, transport, path, hostname=hostname, user=u.username or None, port=port,
        keyfile=params.get("keyfile"), known_hosts=params.get("known_hosts"),
    )


#: Names of things kvmlab makes on a host (volumes):
#: ``kvmlab-<pid>.<start>.<boot>@<client>_<what>`` (see :class:`kvmlab.owner.Owner`);
#: an older kvmlab's ``kvmlab-<pid>@<host name>_<what>`` still parses.
_OWNED_RE = re.compile(r"^kvmlab-(?P<pid>\d+)(?:\.(?P<started>\d+)\.(?P<boot>[0-9a-f]*))?"
                       r"@(?P<client>[A-Za-z0-9.~-]+)_(?P<what>.+)$")


def owned_name(owner: Owner, what: str) -> str:
    """The name of ``what`` made on a host by ``owner``."""
    return f"kvmlab-{owner.pid}.{owner.started}.{owner.boot}@{owner.client}_{what}"


def parse_owned_name(name: str) -> tuple[Owner, str] | None:
    """``(owner, what)`` of a name made by :func:`owned_name` (None: not one)."""
    m = _OWNED_RE.match(name)
    if m is None:
        return None
    owner = Owner(int(m.group("pid")), int(m.group("started") or 0), m.group("boot") or "", m.group("client"))
    return owner, m.group("what")
