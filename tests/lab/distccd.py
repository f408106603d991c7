"""A distccd "compile host" on this machine, in a network namespace of its
own, reached over a veth pair (used by tests/test_distcc.py and
benchmarks/distcc_build.py). Needs root, ``ip``, ``distccd``."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kvmlab.kernel import distcc
from kvmlab.kernel.distcc import CompileHost


@dataclass
class Distccd:
    host: CompileHost
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a network namespace)"
    for tool in ("distcc", "distccd", "ip", "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install distcc)"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def distccd(workdir: Path, *, slots: int = 2, index: int = 0) -> Iterator[Distccd]:
    """distccd taking ``slots`` compiles at once, in its own netns; killed on exit."""
    n = (os.getpid() + index) % 250 + 1
    tag = f"{os.getpid() % 100000}{index}"
    ns, veth = f"kvmlab-dcc-{tag}", f"kdc{tag}"
    client, server = f"10.214.{n}.1", f"10.214.{n}.2"
    _ip("netns", "add", ns)
    log = workdir / f"distccd-{index}.log"
    d: Distccd | None = None
    try:
        _ip("link", "add", veth + "a", "type", "veth", "peer", "name", veth + "b", "netns", ns)
        _ip("addr", "add", f"{client}/30", "dev", veth + "a")
        _ip("link", "set", veth + "a", "up")
        _ip("-n", ns, "addr", "add", f"{server}/30", "dev", veth + "b")
        _ip("-n", ns, "link", "set", veth + "b", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        with log.open("wb") as out:
            p = subprocess.Popen(["ip", "netns", "exec", ns, "distccd", "--daemon", "--no-detach",
                                  "--log-stderr", "--log-level", "info", "--listen", server,
                                  "--allow", f"{client}/32", "--jobs", str(slots), "--user", "nobody"],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        d = Distccd(CompileHost(server, distcc.DEFAULT_PORT, slots), p, log)
        deadline = time.monotonic() + 20
        while distcc.reachable(d.host, timeout=1) is not None:
            if time.monotonic() > deadline or p.poll() is not None:
                raise RuntimeError(f"distccd did not start: {log.read_text(errors='replace')[-1000:]}")
            time.sleep(0.2)
        yield d
    finally:
        if d is not None:
            d.kill()
        subprocess.run(["ip", "link", "del", veth + "a"], capture_output=True, stdin=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, stdin=subprocess.DEVNULL)
