"""A libvirt "lab host" on this machine that shares no path with the client.

The lab runs in its own mount, PID, network, UTS and IPC namespaces, on its
own root filesystem: a Debian bookworm image with libvirt, QEMU and sshd
(``build-root.sh``, made once and cached by the script's hash), mounted
read-only under a RAM overlay *inside* the lab's mount namespace only. The
client reaches it over a veth pair, as ``qemu+ssh://root@<lab ip>/system``,
with a key and a known-hosts file the harness makes. The lab's sshd listens on
the veth address only.

:class:`Tripwire` catches a client that cheats: any open of a file inside
the lab's root by a process outside the lab (fanotify permission events on the
lab's root mount and on its image file), and any packet from the client to the
lab other than to its sshd (an iptables counter inside the lab's netns), and,
in strict mode, any socket the client process connects other than the lab's
sshd (a Python audit hook).

Used by tests/test_lab_hosts.py and benchmarks/multi_host.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build-root.sh"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class LabUnavailable(Exception):
    """This machine cannot run the lab (the reason is the message)."""


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "the lab host needs root (namespaces, mounts, veth)"
    for tool in ("unshare", "nsenter", "ip", "iptables", "debootstrap", "mkfs.ext4", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def root_image(cache: Path, mirror: str | None = None) -> Path:
    """The lab's root image, built (3-5 minutes) unless cached under ``cache``."""
    digest = hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest()[:16]
    out = cache / "lab-root" / digest / "root.img"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if mirror is None:
        from kvmlab.images.recipe import host_mirror

        mirror = host_mirror() or DEFAULT_MIRROR
    r = subprocess.run(["bash", str(BUILD_SCRIPT), str(out), mirror], capture_output=True, text=True,
                       timeout=1800, stdin=subprocess.DEVNULL)
    if r.returncode != 0 or not out.is_file():
        raise LabUnavailable(f"building the lab root failed: {(r.stderr or r.stdout).strip()[-800:]}")
    return out


def _ns(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


@dataclass
class Lab:
    """A running lab host; see the module docstring."""

    image: Path
    workdir: Path
    ip: str
    client_ip: str
    iface: str
    proc: subprocess.Popen[bytes]
    pid: int
    """The lab's init, as a pid of this machine."""
    key: Path
    known_hosts: Path
    ssh_command: Path
    mnt_ns: str = ""
    pid_ns: str = ""
    log: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        q = urllib.parse.urlencode({"keyfile": str(self.key), "known_hosts": str(self.known_hosts),
                                    "command": str(self.ssh_command)})
        return f"qemu+ssh://root@{self.ip}/system?{q}"

    def run(self, argv: list[str], *, timeout: float = 60, check: bool = True) -> str:
        """Run a command inside the lab (its namespaces and root); its output."""
        full = ["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "--", *argv]
        r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"lab: {' '.join(argv)}: {r.returncode}: {(r.stderr or r.stdout).strip()}")
        return r.stdout

    def virsh(self, *args: str, check: bool = True) -> str:
        return self.run(["virsh", "-q", "-c", "qemu:///system", *args], check=check)

    def domains(self) -> list[str]:
        return [d for d in self.virsh("list", "--all", "--name").split() if d]

    def volumes(self) -> list[str]:
        """Volumes in the lab's kvmlab pool (refreshed first: files the host
        itself wrote, such as console logs, count too)."""
        self.virsh("pool-refresh", "kvmlab", check=False)
        out = self.virsh("vol-list", "kvmlab", check=False)
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def qemu_processes(self) -> list[str]:
        return [line for line in self.run(["ps", "-eo", "pid,comm"]).splitlines() if "qemu-system" in line]

    def libvirtd_pids(self) -> list[int]:
        out = self.run(["ps", "-eo", "pid,comm"])
        return [int(line.split()[0]) for line in out.splitlines() if line.split()[-1:] == ["libvirtd"]]

    def kill_libvirtd(self) -> None:
        """SIGKILL the lab's libvirtd (its VMs' QEMUs keep running, as on a real host)."""
        for pid in self.libvirtd_pids():
            self.run(["kill", "-9", str(pid)], check=False)

    def start_libvirtd(self) -> None:
        self.run(["sh", "-c", "/usr/sbin/libvirtd -d"], check=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.virsh("version", check=False):
                return
            time.sleep(0.2)
        raise RuntimeError("lab: libvirtd did not come back")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)  # pid 1 of the lab: the whole PID namespace dies
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        subprocess.run(["ip", "link", "del", self.iface + "c"], capture_output=True, stdin=subprocess.DEVNULL)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _keys(d: Path) -> None:
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kvmlab-lab-{name}",
                        "-f", str(d / name)], check=True, stdin=subprocess.DEVNULL)


def start_lab(image: Path, *, timeout: float = 120.0) -> Lab:
    """Start a lab host on ``image``; stop it with :meth:`Lab.stop`."""
    n = os.getpid() % 250 + 1
    iface = f"kvl{os.getpid() % 100000}"
    ip, client_ip = f"10.213.{n}.2", f"10.213.{n}.1"
    work = Path(tempfile.mkdtemp(prefix="kvmlab-lab-"))
    keys = work / "keys"
    keys.mkdir()
    _keys(keys)
    run = work / "mnt"
    run.mkdir()
    known = work / "known_hosts"
    known.write_text(f"{ip} {(keys / 'host_key.pub').read_text().split(' ')[0]} "
                     f"{(keys / 'host_key.pub').read_text().split(' ')[1]}\n")
    ssh_cmd = work / "ssh"
    ssh_cmd.write_text(
        "#!/bin/sh\n# libvirt's ssh transport for the lab: its own known_hosts, nothing from ~/.ssh.\n"
        f"exec ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes "
        f"-o UserKnownHostsFile={known} -o GlobalKnownHostsFile=/dev/null \"$@\"\n"
    )
    ssh_cmd.chmod(0o755)
    argv = ["unshare", "--mount", "--pid", "--net", "--uts", "--ipc", "--fork", "--propagation", "private",
            "bash", str(HERE / "stage1.sh"), str(image), str(run), str(keys), ip, iface + "l"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    lab = Lab(image, work, ip, client_ip, iface, p, 0, keys / "client_key", known, ssh_cmd)
    try:
        deadline = time.monotonic() + timeout
        import psutil

        while not lab.pid:
            kids = psutil.Process(p.pid).children() if p.poll() is None else []
            if kids:
                lab.pid = kids[0].pid
            elif p.poll() is not None or time.monotonic() > deadline:
                raise LabUnavailable(f"lab did not start: {p.stdout.read().decode() if p.stdout else ''}")
            else:
                time.sleep(0.02)
        subprocess.run(["ip", "link", "add", iface + "c", "type", "veth", "peer", "name", iface + "l",
                        "netns", str(lab.pid)], check=True, stdin=subprocess.DEVNULL)
        subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{iface}c.disable_ipv6=1"], stdin=subprocess.DEVNULL)
        subprocess.run(["ip", "addr", "add", f"{client_ip}/30", "dev", iface + "c"], check=True,
                       stdin=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "set", iface + "c", "up"], check=True, stdin=subprocess.DEVNULL)
        assert p.stdout is not None
        buf = b""
        while b"LAB READY" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or p.poll() is not None:
                raise LabUnavailable(f"lab did not come up: {buf.decode(errors='replace')[-2000:]}")
            r, _, _ = select.select([p.stdout], [], [], left)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    continue
                buf += chunk
        lab.log.append(buf.decode(errors="replace"))
        lab.mnt_ns, lab.pid_ns = _ns(lab.pid, "mnt"), _ns(lab.pid, "pid")
    except BaseException:
        lab.stop()
        raise
    return lab


# -- the tripwire ---------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
FAN_CLOEXEC, FAN_CLASS_CONTENT = 0x1, 0x4
FAN_MARK_ADD, FAN_MARK_MOUNT = 0x1, 0x10
FAN_OPEN_PERM, FAN_ALLOW = 0x10000, 0x1
_META = struct.Struct("IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid


@dataclass(frozen=True)
class Trip:
    what: str
    detail: str


class Tripwire:
    """See the module docstring. ``strict``: the client process may connect
    no socket but the lab's sshd (for tests that use no local VM)."""

    _hooked = False
    _active: Tripwire | None = None

    def __init__(self, lab: Lab, *, strict: bool) -> None:
        self.lab = lab
        self.strict = strict
        self.trips: list[Trip] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fd = _libc.fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, os.O_RDONLY | os.O_LARGEFILE)
        if self._fd < 0:
            raise LabUnavailable(f"fanotify: {os.strerror(ctypes.get_errno())}")
        for flags, path in ((FAN_MARK_ADD | FAN_MARK_MOUNT, f"/proc/{lab.pid}/root"),
                            (FAN_MARK_ADD, str(lab.image))):
            if _libc.fanotify_mark(self._fd, flags, FAN_OPEN_PERM, -100, path.encode()) != 0:
                err = os.strerror(ctypes.get_errno())
                os.close(self._fd)
                raise LabUnavailable(f"fanotify mark on {path}: {err}")
        self._thread = threading.Thread(target=self._watch, name="lab-tripwire", daemon=True)
        self._thread.start()
        # The lab's own netns: its INPUT chain holds only the tripwire's rules.
        self._iptables("-F", "INPUT")
        with contextlib.suppress(LabUnavailable):
            self._iptables("-N", "KVMLAB_TRIP")
        self._iptables("-F", "KVMLAB_TRIP")
        self._iptables("-A", "KVMLAB_TRIP", "-j", "DROP")
        self._iptables("-A", "INPUT", "-i", lab.iface + "l", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
        self._iptables("-A", "INPUT", "-i", lab.iface + "l", "-j", "KVMLAB_TRIP")
        if not Tripwire._hooked:
            sys.addaudithook(Tripwire._audit)
            Tripwire._hooked = True
        Tripwire._active = self

    def _iptables(self, *args: str) -> str:
        r = subprocess.run(["nsenter", "-t", str(self.lab.pid), "-n", "iptables", *args], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=30)
        if r.returncode != 0:
            raise LabUnavailable(f"iptables in the lab: {r.stderr.strip()}")
        return r.stdout

    @staticmethod
    def _audit(event: str, args: tuple[object, ...]) -> None:
        tw = Tripwire._active
        if tw is None or event != "socket.connect":
            return
        addr = args[1]
        lab_ssh = (tw.lab.ip, 22)
        if isinstance(addr, tuple) and len(addr) >= 2:
            host, port = addr[0], addr[1]
            if (host, port) == lab_ssh:
                return
            if host == tw.lab.ip or tw.strict:
                tw._trip("socket", f"the client connected to {host}:{port}")
        elif tw.strict:
            tw._trip("socket", f"the client connected to {addr!r}")

    def _trip(self, what: str, detail: str) -> None:
        with self._lock:
            self.trips.append(Trip(what, detail))

    def _outside(self, pid: int) -> bool:
        if pid == os.getpid():
            return True
        try:
            return _ns(pid, "mnt") != self.lab.mnt_ns
        except OSError:
            return True

    def _watch(self) -> None:
        buf_size = 4096
        while not self._stop.is_set():
            r, _, _ = select.select([self._fd], [], [], 0.2)
            if not r:
                continue
            try:
                data = os.read(self._fd, buf_size)
            except OSError:
                return
            off = 0
            while off + _META.size <= len(data):
                event_len, _vers, _res, _mlen, _mask, fd, pid = _META.unpack_from(data, off)
                off += event_len
                if fd < 0:
                    continue
                try:
                    if self._outside(pid):
                        try:
                            path = os.readlink(f"/proc/self/fd/{fd}")
                            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                        except OSError:
                            path, cmd = "?", "?"
                        self._trip("file", f"pid {pid} ({cmd.strip()}) opened {path} inside the lab")
                finally:
                    os.write(self._fd, struct.pack("iI", fd, FAN_ALLOW))
                    os.close(fd)

    def packets_to_lab(self) -> int:
        """Packets from the client to the lab other than to its sshd."""
        out = self._iptables("-L", "KVMLAB_TRIP", "-v", "-x", "-n")
        for line in out.splitlines():
            parts = line.split()
            if parts[2:3] == ["DROP"]:
                return int(parts[0])
        return 0

    def close(self) -> list[Trip]:
        """Disarm (idempotent); every trip seen (empty: the client kept to
        the lab's sshd)."""
        if self._stop.is_set():
            return list(self.trips)
        Tripwire._active = None
        n = self.packets_to_lab()
        if n:
            self._trip("packet", f"{n} packets from the client to the lab went elsewhere than its sshd")
        self._stop.set()
        self._thread.join(5)
        os.close(self._fd)
        return list(self.trips)


@contextlib.contextmanager
def tripwire(lab: Lab, *, strict: bool) -> Iterator[Tripwire]:
    tw = Tripwire(lab, strict=strict)
    try:
        yield tw
    finally:
        tw.close()
