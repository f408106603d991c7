"""``kvmlab boot`` and its sessions, pure parts and logic over fakes: the
Ctrl-A escape, the monitor's line editor, option parsing, session names and
the ps table, the QMP client against a fake QEMU socket, the argv/XML of
shares and paused starts, and a session's boot-failure / crash / quit logic
driven by a fake backend (no QEMU)."""

from __future__ import annotations

import json
import os
import pty
import socket
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kvmlab import exitcodes
from kvmlab.cli import main
from kvmlab.commands.options import parse_memory
from kvmlab.errors import MissingFileError, UserError
from kvmlab.jobs.boot import (
    cpu_warning,
    find_vmlinux,
    fragments_for,
    gdb_argv,
    parse_shares,
)
from kvmlab.owner import Owner
from kvmlab.session.foreground import (
    EXIT_BOOT_FAILED,
    EXIT_CRASH,
    Ending,
    Foreground,
    GuestSetup,
    Screen,
    run_command,
)
from kvmlab.session.store import (
    PS_COLUMNS,
    SessionDir,
    SessionRecord,
    SessionStore,
    default_name,
    format_table,
    ps_rows,
    uptime,
)
from kvmlab.session.terminal import Action, EscapeParser, Key, LineEditor, RawTerminal
from kvmlab.session.vm import Crash, MountPoint, SessionVM, mount_command
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.domain_xml import domain_xml
from kvmlab.vmm.ports import connect_local
from kvmlab.vmm.qemu_argv import qemu_argv
from kvmlab.vmm.qmp import QMPClient, QMPError
from kvmlab.vmm.root import GuestRoot, RootKind
from kvmlab.vmm.spec import Accel, Share, VMSpec

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "report"


# -- the escape and the line editor ------------------------------------------------


@pytest.mark.parametrize(("chunks", "want"), [
    ([b"ls\r"], [Key(Action.SEND, b"ls\r")]),
    ([b"ab\x01xcd"], [Key(Action.SEND, b"ab"), Key(Action.QUIT)]),  # nothing after quit matters
    ([b"\x01c"], [Key(Action.MONITOR)]),
    ([b"\x01h"], [Key(Action.HELP)]),
    ([b"\x01\x01"], [Key(Action.SEND, b"\x01")]),
    ([b"\x01e"], [Key(Action.SEND, b"\x01e")]),  # readline's Ctrl-A... passes through with its key
    ([b"echo\x01", b"x"], [Key(Action.SEND, b"echo"), Key(Action.QUIT)]),  # split across reads
    ([b"\x03\x1a"], [Key(Action.SEND, b"\x03\x1a")]),  # Ctrl-C and Ctrl-Z go to the guest
])
def test_escape_parser(chunks: list[bytes], want: list[Key]) -> None:
    p = EscapeParser()
    got = [k for c in chunks for k in p.feed(c)]
    if Key(Action.QUIT) in want:
        got = got[: got.index(Key(Action.QUIT)) + 1]
    assert got == want


def test_line_editor_echoes_edits_and_swallows_arrow_keys() -> None:
    ed = LineEditor()
    echo, lines = ed.feed(b"info regz\x7f\x7fs")
    assert lines == [] and echo == b"info regz\b \b\b \bs"
    echo, lines = ed.feed(b"\x1b[A\x1b[D\r")  # up, left, Enter
    assert lines == ["info res"] and echo == b"\r\n"
    _, lines = ed.feed(b"junk\x15info cpus\n")
    assert lines == ["info cpus"]
    _, lines = ed.feed(b"stop\x03")
    assert lines == [""]


# -- options ----------------------------------------------------------------------------


def test_parse_memory() -> None:
    assert parse_memory("2G") == 2048
    assert parse_memory("512M") == 512
    assert parse_memory("768") == 768
    assert parse_memory("1GiB") == 1024
    for bad in ("lots", "32M", "1T"):
        with pytest.raises(UserError, match="--memory"):
            parse_memory(bad)


def test_parse_shares(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    shares, mounts = parse_shares([str(tmp_path / "src"), f"{tmp_path}:/mnt/x"])
    assert shares == (Share("kvmlab0", tmp_path / "src"), Share("kvmlab1", tmp_path))
    assert mounts == (MountPoint("kvmlab0", str(tmp_path / "src")), MountPoint("kvmlab1", "/mnt/x"))
    assert mount_command(mounts[1]) == ("mkdir -p /mnt/x && mount -t 9p -o trans=virtio,version=9p2000.L,"
                                        "msize=262144 kvmlab1 /mnt/x")
    with pytest.raises(MissingFileError, match="no-such"):
        parse_shares([str(tmp_path / "no-such")])
    with pytest.raises(UserError, match="absolute"):
        parse_shares([f"{tmp_path}:rel"])


def test_fragments_for_adds_what_share_and_gdb_need_in_a_fixed_order() -> None:
    assert fragments_for((), share=False, gdb=False) == ("base",)
    assert fragments_for(("base", "kasan"), share=True, gdb=True) == ("base", "kasan", "share", "gdb")
    assert fragments_for(("base", "gdb"), share=True, gdb=True) == ("base", "gdb", "share")


def test_gdb_command_loads_the_kernels_scripts_when_built_with_them(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"")
    assert gdb_argv(vmlinux, 1234) == ["gdb", str(vmlinux), "-ex", "target remote 127.0.0.1:1234"]
    (tmp_path / "vmlinux-gdb.py").write_text("")
    assert gdb_argv(vmlinux, 1234) == [
        "gdb", "-iex", f"add-auto-load-safe-path {tmp_path}", str(vmlinux),
        "-ex", "target remote 127.0.0.1:1234", "-ex", "lx-symbols"]


def test_cpu_warning_for_kernels_that_would_boot_on_one_cpu() -> None:
    smp = "CONFIG_SMP=y\nCONFIG_ACPI=y\nCONFIG_NR_CPUS=8\n"
    assert cpu_warning(smp, 4) is None
    assert cpu_warning("# CONFIG_SMP is not set\n", 1) is None
    assert "without SMP: the guest will use 1 of its 2 CPUs" in (cpu_warning("CONFIG_ACPI=y\n", 2) or "")
    assert "neither ACPI nor MPPARSE" in (cpu_warning("CONFIG_SMP=y\n", 2) or "")
    assert cpu_warning("CONFIG_SMP=y\nCONFIG_X86_MPPARSE=y\n", 2) is None
    assert "at most 8 CPUs" in (cpu_warning(smp, 12) or "")


def test_find_vmlinux(tmp_path: Path) -> None:
    boot = tmp_path / "arch" / "x86" / "boot"
    boot.mkdir(parents=True)
    (boot / "bzImage").write_bytes(b"")
    assert find_vmlinux(boot / "bzImage") is None
    (tmp_path / "vmlinux").write_bytes(b"")
    assert find_vmlinux(boot / "bzImage") == tmp_path / "vmlinux"


@pytest.mark.parametrize(("argv", "message"), [
    (["boot"], "give --tree T COMMIT or --kernel bzImage"),
    (["boot", "--tree", "/t"], "--tree needs a COMMIT"),
    (["boot", "--tree", "/t", "a", "b"], "give a tree and one COMMIT"),
    (["boot", "--tree", "/t", "a", "--kernel", "/k"], "not both"),
    (["boot", "--kernel", "/k", "--gdb-run"], "--gdb-run needs --gdb"),
    (["boot", "--kernel", "/k", "--timeout", "5"], "--timeout is for -- CMD"),
    (["boot", "--kernel", "/k", "--name", "a b"], "session name 'a b'"),
    (["boot", "--kernel", "/no/such/bzImage"], "kernel /no/such/bzImage: no such file"),
    (["boot", "--resume", "nothing-here"], "no session named 'nothing-here'"),
])
def test_bad_boot_arguments_are_one_line_errors(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # boot passes a guest command's status on: its own bad-input status is the reserved one.
    assert main(argv) == exitcodes.PASS_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


# -- the session store and ps -----------------------------------------------------------------


def _record(name: str, **kw: object) -> SessionRecord:
    base: dict[str, object] = dict(name=name, pid=os.getpid(), started=1000.0, backend="qemu",
                                   kernel="/k/bzImage", release="6.1.0")
    base.update(kw)
    return SessionRecord(**base)  # type: ignore[arg-type]


def test_names_are_unique_and_an_explicit_name_takes_only_an_ended_sessions_name(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    a = store.create("4c4d0aaa74e0", explicit=False)
    a.write(_record(a.name))
    b = store.create("4c4d0aaa74e0", explicit=False)
    b.write(_record(b.name))
    assert (a.name, b.name) == ("4c4d0aaa74e0", "4c4d0aaa74e0-2")
    # Running (its owner holds the lock): an explicit name can't take it.
    with pytest.raises(UserError, match="is running"):
        store.create("4c4d0aaa74e0", explicit=True)
    assert SessionDir(a.path).running()  # a second open file sees the lock
    a.release()
    assert not SessionDir(a.path).running()
    (a.path / "report-1.txt").write_text("old")
    (a.path / "console.log").write_text("old console")
    again = store.create("4c4d0aaa74e0", explicit=True)
    assert not (again.path / "report-1.txt").exists()
    # The ended session's files are kept, under the next free name (kill --help: files stay unless --rm).
    assert again.kept_as == "4c4d0aaa74e0-3"
    kept = store.get("4c4d0aaa74e0-3")
    assert (kept.path / "report-1.txt").read_text() == "old"
    assert (kept.path / "console.log").read_text() == "old console"
    assert kept.read().name == "4c4d0aaa74e0-3"
    again.release()
    (again.path / "disk.qcow2").write_bytes(b"")
    again.write(_record(again.name, keep=True))
    with pytest.raises(UserError, match="kept disk"):
        store.create("4c4d0aaa74e0", explicit=True)
    b.release()
    assert [d.name for d in store.all()] == ["4c4d0aaa74e0", "4c4d0aaa74e0-2", "4c4d0aaa74e0-3"]
    with pytest.raises(UserError, match="none is running"):
        store.only_running()


def test_record_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    d = SessionDir(tmp_path / "s")
    d.path.mkdir()
    d.write(_record("s", crashes=("KASAN: x",), vm={"cpus": 2}))
    assert d.read() == _record("s", crashes=("KASAN: x",), vm={"cpus": 2})
    data = json.loads((d.path / "session.json").read_text())
    data["colour"] = "blue"
    (d.path / "session.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="unknown keys \\['colour'\\]"):
        d.read()


def test_concurrent_updates_keep_every_field(tmp_path: Path) -> None:
    # The crash flagger's thread records the titles while the owner's thread
    # records its ports or state: neither may write back a stale record.
    d = SessionDir(tmp_path / "s")
    d.path.mkdir()
    d.write(_record("s"))
    fields: list[dict[str, Any]] = [dict(ssh_port=2222), dict(gdb_port=1234), dict(crashes=("KASAN: x",)),
                                    dict(state="running"), dict(qemu_pid=99), dict(domain="kvmlab-s")]
    errors: list[BaseException] = []

    def change(go: threading.Barrier, kw: dict[str, Any]) -> None:
        go.wait()
        try:
            d.update(**kw)
        except BaseException as e:
            errors.append(e)

    for _ in range(30):
        d.write(_record("s"))
        go = threading.Barrier(len(fields))
        threads = [threading.Thread(target=change, args=(go, kw)) for kw in fields]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        want: dict[str, Any] = {}
        for kw in fields:
            want.update(kw)
        assert d.read() == _record("s", **want)
    assert sorted(p.name for p in d.path.iterdir()) == ["record.lock", "session.json"]


def test_default_name() -> None:
    assert default_name("4c4d0aaa74e0bdec317574690a59bbfb8cd113b7", "6.1.0", Path("/k")) == "4c4d0aaa74e0"
    assert default_name(None, "6.1.0-56-cloud-amd64", Path("/k")) == "6.1.0-56-cloud-amd64"
    assert default_name(None, None, Path("/k/my bzImage")) == "my-bzImage"


def test_ps_table() -> None:
    rows = ps_rows([
        (_record("a", commit="4c4d0aaa74e0bdec", ssh_port=40001, state="running", gdb_port=40002), True,
         Path("/s/a")),
        (_record("b", crashes=("BUG: x",), state="ended"), False, Path("/s/b")),
    ], now=1000.0 + 3725)
    text = format_table(PS_COLUMNS, rows)
    lines = text.splitlines()
    assert [ln.split() for ln in lines] == [
        list(PS_COLUMNS),
        ["a", "running", "4c4d0aaa74e0", "6.1.0", "qemu", "127.0.0.1:40001", ":40002", "1h02m",
         str(os.getpid()), "/s/a"],
        ["b", "ended+crash", "-", "6.1.0", "qemu", "-", "-", "-", "-", "/s/b"],
    ]
    # Columns line up: every row's DIR starts where the header's does.
    assert {ln.index("/s/") for ln in lines[1:]} == {lines[0].index("DIR")}
    assert [uptime(s) for s in (5, 65, 7300, 90000)] == ["5s", "1m05s", "2h01m", "1d01h"]


# -- argv, XML, QMP -------------------------------------------------------------------------------

INITRAMFS = GuestRoot("initramfs", RootKind.INITRAMFS, Path("/k/initramfs.cpio.gz"), Path("/k/id"))


def test_qemu_argv_share_paused_monitor() -> None:
    spec = VMSpec(kernel=Path("/k/bzImage"), root=INITRAMFS, accel=Accel.TCG, name="s",
                  shares=(Share("kvmlab0", Path("/src")),), paused=True)
    argv = qemu_argv(spec, ssh_port=2222, disk=None, qmp=Path("/s/qmp.sock"))
    assert argv[argv.index("-virtfs") + 1] == "local,path=/src,mount_tag=kvmlab0,security_model=none,id=fs0"
    assert "-S" in argv
    assert argv[argv.index("-qmp") + 1] == "unix:/s/qmp.sock,server=on,wait=off"


def test_domain_xml_share() -> None:
    spec = VMSpec(kernel=Path("/k/bzImage"), root=INITRAMFS, accel=Accel.TCG, name="s",
                  shares=(Share("kvmlab0", Path("/src")),))
    xml = domain_xml(spec, name="kvmlab-1-s-0", kernel="/k/bzImage", initrd=str(INITRAMFS.path), disk=None,
                     console_log=None, owner=Owner(1, 100, "b00f", "client~0a0b0c0d"))
    assert ('<filesystem type="mount" accessmode="passthrough">\n      <source dir="/src" />\n'
            '      <target dir="kvmlab0" />') in xml


def _fake_qmp(path: Path, replies: list[bytes]) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        f = conn.makefile("rb")
        for reply in replies:
            f.readline()
            conn.sendall(reply)
        conn.close()
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_qmp_human_monitor_command_skips_events(tmp_path: Path) -> None:
    sock = tmp_path / "q.sock"
    t = _fake_qmp(sock, [
        b'{"return": {}}\n',
        b'{"event": "STOP", "timestamp": {}}\n{"return": "VM status: paused\\r\\n"}\n',
        b'{"error": {"class": "GenericError", "desc": "no such command"}}\n',
    ])
    c = QMPClient(sock)
    assert c.hmp("info status", timeout=5) == "VM status: paused\r\n"
    with pytest.raises(QMPError, match="no such command"):
        c.hmp("bogus", timeout=5)
    c.close()
    t.join(5)
    with pytest.raises(QMPError, match=r"q\.sock"):
        QMPClient(sock).hmp("info status", timeout=1)


# -- a session's logic over a fake backend ----------------------------------------------------------


def fake_bzimage(path: Path, release: str = "6.1.0-fake") -> Path:
    """A file with a bzImage setup header naming ``release`` (never booted)."""
    head = bytearray(0x1000)
    head[0x202:0x206] = b"HdrS"
    head[0x20E:0x210] = (0x300).to_bytes(2, "little")
    text = f"{release} (kvmlab@test) #1".encode() + b"\0"
    head[0x500:0x500 + len(text)] = text
    path.write_bytes(bytes(head))
    return path


class FakeInstance:
    """A VM whose console prints ``console`` and then ends (``stop``) or stays
    silent; keys typed into it are kept."""

    def __init__(self, console: bytes, stop: bool) -> None:
        self.read_fd, self._w = os.pipe()
        self.typed = bytearray()
        self._alive = True
        os.write(self._w, console)
        if stop:
            self._end()

    def _end(self) -> None:
        self._alive = False
        if self._w >= 0:
            os.close(self._w)
            self._w = -1

    @property
    def name(self) -> str:
        return "fake-0"

    @property
    def local_ssh_port(self) -> int:
        return 9  # discard: refused, the guest never answers SSH

    def connect(self, timeout: float) -> socket.socket:
        return connect_local(9, timeout)  # raises SSHError, as a backend's connect does

    def console_fd(self) -> int:
        return self.read_fd

    def alive(self) -> bool:
        return self._alive

    def console_write(self, data: bytes) -> None:
        self.typed += data

    def close(self, timeout: float) -> None:
        self._end()
        os.close(self.read_fd)


class FakeBackend:
    name = "fake"

    def __init__(self, console: bytes = b"", stop: bool = False) -> None:
        self.console, self.stop = console, stop
        self.instances: list[FakeInstance] = []

    def create(self, spec: VMSpec, *, workdir: Path, index: int) -> FakeInstance:
        inst = FakeInstance(self.console, self.stop)
        self.instances.append(inst)
        return inst


def _session(tmp_path: Path, backend: FakeBackend | RemoteBackend,
             crashes: list[Crash] | None = None) -> SessionVM:
    key = tmp_path / "id"
    key.write_text("")
    root = GuestRoot("initramfs", RootKind.INITRAMFS, key, key)
    spec = VMSpec(kernel=fake_bzimage(tmp_path / "bzImage"), root=root, accel=Accel.TCG, name="t")
    store = SessionStore(tmp_path / "sessions")
    d = store.create("t", explicit=True)
    d.write(_record("t"))
    timeouts = Timeouts(boot=1.5, ssh_connect=0.3, no_output=60.0)
    return SessionVM(d, spec, backend, timeouts, ready_marker="kvmlab-guest-ready", vmlinux=None,
                     on_crash=(crashes.append if crashes is not None else None))


def _screen() -> Screen:
    fd = os.open(os.devnull, os.O_WRONLY)
    return Screen(fd, fd, raw=False, color=False)


def test_silent_vm_is_boot_failed_no_output(tmp_path: Path) -> None:
    svm = _session(tmp_path, FakeBackend())
    svm.start()
    try:
        out = run_command(svm, "true", GuestSetup(), _screen(), timeout=5)
    finally:
        svm.close()
    assert (out.ending, out.status, out.detail) == (Ending.BOOT_FAILED, EXIT_BOOT_FAILED, "no output")


def test_interactive_silent_vm_ends_as_boot_failed(tmp_path: Path) -> None:
    svm = _session(tmp_path, FakeBackend())
    svm.start()
    r, w = os.pipe()
    try:
        out = Foreground(svm, _screen(), r, GuestSetup()).run()
    finally:
        svm.close()
        os.close(r)
        os.close(w)
    assert (out.ending, out.status, out.detail) == (Ending.BOOT_FAILED, EXIT_BOOT_FAILED, "no output")


def test_crash_is_flagged_once_titled_and_saved(tmp_path: Path) -> None:
    log = (FIXTURES / "demo-null-deref.log").read_bytes()
    crashes: list[Crash] = []
    svm = _session(tmp_path, FakeBackend(log, stop=True), crashes)
    svm.start()
    try:
        out = run_command(svm, "true", GuestSetup(), _screen(), timeout=5)
    finally:
        svm.close()
    title = "BUG: unable to handle kernel NULL pointer dereference in comm_digest_compute"
    assert (out.status, out.detail) == (EXIT_CRASH, title)
    assert [c.title for c in crashes] == [title]  # the oops and its "Kernel panic" line: one crash
    saved = crashes[0].report.read_text()
    assert saved.startswith(title + "\n\n") and "RIP: 0010:comm_digest_compute" in saved
    assert svm.sdir.read().crashes == (title,)


def test_keys_go_to_the_console_and_ctrl_a_x_quits(tmp_path: Path) -> None:
    backend = FakeBackend(b"[    0.000000] Linux version 6.1.0\r\n/ # ")
    svm = _session(tmp_path, backend)
    svm.start()
    r, w = os.pipe()
    os.write(w, b"uname -r\r\x01\x01\x01x")
    try:
        t0 = time.monotonic()
        out = Foreground(svm, _screen(), r, GuestSetup()).run()
    finally:
        svm.close()
        os.close(r)
        os.close(w)
    assert (out.ending, out.status) == (Ending.QUIT, 0)
    assert time.monotonic() - t0 < 5
    assert bytes(backend.instances[0].typed) == b"uname -r\r\x01"


class RemoteInstance:
    """A fake VM on another host: a monitor, but no SSH forward on this machine."""

    def __init__(self) -> None:
        self._inner = FakeInstance(b"", stop=False)
        self.monitored: list[str] = []

    @property
    def name(self) -> str:
        return "remote-0"

    def connect(self, timeout: float) -> socket.socket:
        return self._inner.connect(timeout)

    def console_fd(self) -> int:
        return self._inner.console_fd()

    def alive(self) -> bool:
        return self._inner.alive()

    def monitor(self, command: str, *, timeout: float) -> str:
        self.monitored.append(command)
        return "Waiting for gdb connection on device 'tcp:127.0.0.1:1'"

    def close(self, timeout: float) -> None:
        self._inner.close(timeout)


class RemoteBackend:
    name = "fake"

    def __init__(self) -> None:
        self.remote = RemoteInstance()

    def create(self, spec: VMSpec, *, workdir: Path, index: int) -> RemoteInstance:
        return self.remote


def test_gdb_on_a_vm_on_another_host_is_a_clear_error(tmp_path: Path) -> None:
    backend = RemoteBackend()
    svm = _session(tmp_path, backend)
    svm.start()
    try:
        assert svm.endpoint() is None and svm.sdir.read().ssh_port == 0
        with pytest.raises(UserError, match=r"--gdb needs a VM on this machine"):
            svm.open_gdbstub()
    finally:
        svm.close()
    assert backend.remote.monitored == []  # no gdbstub opened on that host


def test_a_vm_that_stops_without_a_crash_after_output_is_not_a_crash(tmp_path: Path) -> None:
    svm = _session(tmp_path, FakeBackend(b"Linux version 6.1.0\r\nreboot: Power down\r\n", stop=True))
    svm.start()
    r, w = os.pipe()
    try:
        out = Foreground(svm, _screen(), r, GuestSetup()).run()
    finally:
        svm.close()
        os.close(r)
        os.close(w)
    assert (out.ending, out.status, out.detail) == (Ending.BOOT_FAILED, EXIT_BOOT_FAILED, "vm stopped")


def test_screen_puts_kvmlab_lines_on_their_own_line_in_raw_mode() -> None:
    r, w = os.pipe()
    s = Screen(w, w, raw=True, color=True)
    s.console(b"/ # ")
    s.note("crash: BUG: x", alert=True)
    s.console(b"more\r\n")
    s.note("bye")
    s.raw_off()
    s.console(b"not shown")
    s.note("plain")
    os.close(w)
    got = os.read(r, 4096)
    os.close(r)
    assert got == (b"/ # \r\n\x1b[1;31mkvmlab: crash: BUG: x\x1b[0m\r\nmore\r\nkvmlab: bye\r\n"
                   b"kvmlab: plain\n")


def test_a_terminal_answer_arriving_as_the_session_ends_never_reaches_the_shell() -> None:
    """The guest's shell asks for the cursor position (ESC [6n) just before
    the session ends; the terminal's answer comes a few ms later. The
    console is off before the terminal is restored, and the restore waits
    for the answer and drops it: the person's shell reads nothing."""
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        screen = Screen(slave, slave, raw=True, color=False)
        with RawTerminal(slave), screen.showing():
            screen.console(b"/ # \x1b[6n")
            assert os.read(master, 100).endswith(b"\x1b[6n")
            threading.Timer(0.02, os.write, (master, b"\x1b[50;5R")).start()
        screen.console(b"/ # \x1b[6n")  # after the end: not shown, so not answered
        assert termios.tcgetattr(slave) == before
        time.sleep(0.1)
        os.write(master, b"ls\n")  # the person's next line is all the shell reads
        assert os.read(slave, 100) == b"ls\n"
    finally:
        os.close(master)
        os.close(slave)


def test_repro_kinds(tmp_path: Path) -> None:
    from kvmlab.jobs.boot import staged_reproducer as _reproducer
    from kvmlab.jobs.model import BootJob

    def ns(**kw: Any) -> BootJob:
        return BootJob(**kw)

    script = tmp_path / "try it.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    p = _reproducer(ns(repro=script), tmp_path)
    assert p is not None
    assert p.files == ((script.resolve(), "/tmp/kvmlab-repro/try_it.sh", 0o755),)
    assert p.command == "cd /tmp/kvmlab-repro && ./try_it.sh"
    assert _reproducer(ns(), tmp_path) is None
    with pytest.raises(UserError, match="both --syz-execprog and --syz-executor"):
        _reproducer(ns(repro=script, syz_execprog=script), tmp_path)
    with pytest.raises(UserError, match="go with --repro"):
        _reproducer(ns(syz_executor=script), tmp_path)
    with pytest.raises(MissingFileError, match=r"--repro .*nothing\.c: no such file"):
        _reproducer(ns(repro=tmp_path / "nothing.c"), tmp_path)
