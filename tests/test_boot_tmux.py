"""``kvmlab boot`` driven as a person drives it: in a terminal (tmux), keys
sent and the screen read back, on both backends. The prompt shows, ``uname
-r`` answers, the monitor answers, a kernel crash (sysrq) gets its
highlighted title line and ends the session, Ctrl-A x quits, ``kvmlab kill``
(SIGTERM) and a closed terminal (SIGHUP) end it too — and each time no qemu,
domain, port or overlay is left and ``stty -a`` is what it was.

The Debian cloud kernel is booted (prebuilt, with sysrq): no kernel build.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.session.store import SessionDir, SessionStore
from tests.fixtures_boot import KVMLAB, assert_nothing_left, wait_for_session
from tests.fixtures_vm import CloudKernel

pytestmark = [pytest.mark.vm, pytest.mark.slow]

#: Seconds for the cloud kernel to reach its prompt under TCG, with margin.
BOOT = 240.0


class Tmux:
    """A private tmux server with one window running a plain bash."""

    def __init__(self, sock: Path, cwd: Path) -> None:
        self.sock = str(sock)
        self._tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "200", "-y", "50",
                   "-c", str(cwd), "bash --norc --noprofile")
        self._tmux("set-option", "-g", "history-limit", "20000")

    def _tmux(self, *args: str) -> str:
        return proc.run(["tmux", "-S", self.sock, *args], timeout=30).stdout

    def type(self, text: str) -> None:
        """Type ``text`` and Enter."""
        self._tmux("send-keys", "-t", "t", "-l", text)
        self._tmux("send-keys", "-t", "t", "Enter")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def screen(self, *, escapes: bool = False) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-S", "-20000", "-t", "t", *(["-e"] if escapes else []))

    def wait(self, pattern: str, *, timeout: float, escapes: bool = False, after: int = 0) -> re.Match[str]:
        """Wait for ``pattern`` on the screen (in the text from ``after`` on)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen(escapes=escapes)[after:]
            m = re.search(pattern, text, re.M)
            if m:
                return m
            if time.monotonic() > deadline:
                pytest.fail(f"not on the screen after {timeout:.0f} s: {pattern!r}\n{text[-3000:]}")
            time.sleep(0.3)

    def kill_window(self) -> None:
        self._tmux("kill-window", "-t", "t")

    def close(self) -> None:
        proc.run(["tmux", "-S", self.sock, "kill-server"], timeout=30, check=False)
        Path(self.sock).unlink(missing_ok=True)


@pytest.fixture
def tmux(tmp_path: Path, shared_caches: None) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/setup.sh installs it)")
    # The server's socket in the test's own dir: nothing left in /tmp/tmux-UID.
    t = Tmux(tmp_path / "tmux.sock", tmp_path)
    try:
        yield t
    finally:
        t.close()


def _boot(tmux: Tmux, k: CloudKernel, name: str, backend: str, tmp: Path) -> SessionDir:
    """Save ``stty -a``, start the session, wait for its shell prompt."""
    tmux.type(f"stty -a > {tmp}/stty.before")
    argv = [*KVMLAB, "boot", "--kernel", str(k.bzimage), "--modules", str(k.modules), "--accel", "tcg",
            "--cpus", "1", "--backend", backend, "--name", name]
    tmux.type(shlex.join(argv))
    tmux.wait(rf"kvmlab: session {name}: booting .*Ctrl-A x quits", timeout=60)
    tmux.wait(rf"kvmlab: ssh ready \(\d+ s\): kvmlab ssh {name}", timeout=BOOT)
    sd = SessionStore().get(name)
    tmux.keys("Enter")
    tmux.wait(r"^/ # $", timeout=30)
    return sd


def _terminal_is_as_before(tmux: Tmux, tmp: Path) -> None:
    tmux.wait(r"^bash-[\d.]+# $", timeout=60)  # the shell has the terminal back
    tmux.type(f"stty -a > {tmp}/stty.after; echo saved")
    tmux.wait(r"^saved$", timeout=30)
    assert (tmp / "stty.after").read_text() == (tmp / "stty.before").read_text()


@pytest.mark.parametrize("backend", ["qemu", pytest.param("libvirt", marks=pytest.mark.libvirt)])
def test_console_prompt_uname_monitor_and_ctrl_a_x(backend: str, tmux: Tmux, cloud_kernel: CloudKernel,
                                                   tmp_path: Path) -> None:
    sd = _boot(tmux, cloud_kernel, f"quit-{backend}", backend, tmp_path)
    port = sd.read().ssh_port
    mark = len(tmux.screen())
    tmux.type("uname -r")
    tmux.wait(rf"^{re.escape(cloud_kernel.release)}\s*$", timeout=60, after=mark)
    tmux.keys("C-a", "c")
    tmux.wait(r"kvmlab: QEMU monitor \(Ctrl-A c returns to the console\)", timeout=10)
    tmux.type("info status")
    tmux.wait(r"^VM status: running", timeout=30)
    tmux.keys("C-a", "c")
    tmux.wait(r"kvmlab: back to the serial console", timeout=10)
    tmux.keys("C-a", "x")
    tmux.wait(rf"kvmlab: session {sd.name} ended \(quit\)", timeout=60)
    _terminal_is_as_before(tmux, tmp_path)
    assert_nothing_left(sd, port)


@pytest.mark.parametrize("backend", ["qemu", pytest.param("libvirt", marks=pytest.mark.libvirt)])
def test_kernel_crash_is_flagged_with_its_title_and_ends_the_session(
    backend: str, tmux: Tmux, cloud_kernel: CloudKernel, tmp_path: Path,
) -> None:
    sd = _boot(tmux, cloud_kernel, f"crash-{backend}", backend, tmp_path)
    port = sd.read().ssh_port
    tmux.type("echo c > /proc/sysrq-trigger")
    title = "kernel panic: sysrq triggered crash"
    # One highlighted (bold red) line after the report; tmux gives the
    # attributes back as SGR sequences at the line's start.
    m = tmux.wait(r"^((?:\x1b\[[\d;]*m)*)kvmlab: crash: ([^\x1b\n]*)", timeout=120, escapes=True)
    attrs = {a for seq in re.findall(r"\x1b\[([\d;]*)m", m.group(1)) for a in seq.split(";")}
    assert {"1", "31"} <= attrs, repr(m.group(0))
    assert m.group(2) == title
    screen = tmux.screen()
    assert screen.index("Kernel panic - not syncing: sysrq triggered crash") < screen.index(
        f"kvmlab: crash: {title}")
    ended = rf"kvmlab: session {sd.name} ended \(the VM stopped: after a kernel crash: {re.escape(title)}\)"
    tmux.wait(ended, timeout=60)
    _terminal_is_as_before(tmux, tmp_path)
    assert_nothing_left(sd, port)
    assert (sd.path / "report-1.txt").read_text().startswith(title + "\n")
    assert sd.read().crashes == (title,)


def test_sigterm_and_sighup_restore_the_terminal_and_stop_the_vm(
    tmux: Tmux, cloud_kernel: CloudKernel, tmp_path: Path,
) -> None:
    sd = _boot(tmux, cloud_kernel, "term", "qemu", tmp_path)
    port = sd.read().ssh_port
    res = proc.run([*KVMLAB, "kill", "term"], timeout=120, check=False)
    assert res.returncode == 0 and res.stdout == "term: stopped\n", res.stderr
    tmux.wait(r"kvmlab: session term ended \(ended by SIGTERM\)", timeout=30)
    _terminal_is_as_before(tmux, tmp_path)
    assert_nothing_left(sd, port)

    # The terminal goes away under a running session: SIGHUP.
    sd = _boot(tmux, cloud_kernel, "hup", "qemu", tmp_path)
    port = sd.read().ssh_port
    tmux.kill_window()
    assert_nothing_left(sd, port, timeout=60)
    assert sd.read().result == "ended by SIGHUP"


def test_a_burst_of_signals_ends_the_session_once_and_fully(tmux: Tmux, cloud_kernel: CloudKernel,
                                                            tmp_path: Path) -> None:
    """SIGHUP, then SIGTERMs and SIGHUPs while the first one unwinds (a closed
    terminal sends two SIGHUPs, the kernel's and the shell's; a supervisor
    repeats its SIGTERM): the teardown still runs to its end and the record
    says what ended the session."""
    sd = _boot(tmux, cloud_kernel, "burst", "qemu", tmp_path)
    rec = sd.read()
    os.kill(rec.pid, signal.SIGHUP)
    end = time.monotonic() + 2
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < end:
            os.kill(rec.pid, signal.SIGTERM)
            os.kill(rec.pid, signal.SIGHUP)
            time.sleep(0.0005)
    _terminal_is_as_before(tmux, tmp_path)
    assert_nothing_left(sd, rec.ssh_port, timeout=60)
    assert sd.read().result == "ended by SIGHUP"


def test_a_second_session_while_one_runs_gets_its_own_port(tmux: Tmux, cloud_kernel: CloudKernel,
                                                          tmp_path: Path) -> None:
    """Same default name twice: the second is NAME-2, both reachable."""
    argv = [*KVMLAB, "boot", "--kernel", str(cloud_kernel.bzimage), "--modules", str(cloud_kernel.modules),
            "--accel", "tcg", "--cpus", "1"]
    tmux.type(shlex.join(argv))
    first = wait_for_session(cloud_kernel.release, timeout=BOOT)
    log = tmp_path / "second.log"
    with log.open("wb") as out:
        second_owner = proc.spawn([*argv, "--", "hostname; sleep 1"], stdout=out, stderr=subprocess.DEVNULL)
    try:
        assert second_owner.wait(timeout=BOOT) == 0, log.read_text()
    finally:
        proc.kill_group(second_owner)
    second = SessionStore().get(f"{cloud_kernel.release}-2").read()
    assert second.ssh_port != first.read().ssh_port
    assert log.read_text() == "kvmlab\n"
    tmux.keys("C-a", "x")
    tmux.wait(r"kvmlab: session .* ended \(quit\)", timeout=60)
