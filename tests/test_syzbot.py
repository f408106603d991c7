"""syzbot bugs from the dashboard, against a local HTTP server that serves
recorded answers (tests/fixtures/syzbot, written from the dashboard's JSON
format): never the real network. And patches: applied in a private index,
the file and hunk named when one does not apply; the number of runs a patch
test makes."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kvmlab.cli import main
from kvmlab.errors import MissingFileError, UserError
from kvmlab.jobs import inputs
from kvmlab.jobs.boot import build_request
from kvmlab.jobs.model import (
    BisectJob,
    BootJob,
    BuildOptions,
    ReproInput,
    ReproJob,
    VMOptions,
    job_from_mapping,
    job_to_mapping,
)
from kvmlab.outcome import RunOutcome, RunStatus
from kvmlab.proc import run
from kvmlab.repro.patchtest import PatchStatus, p_no_crash, runs_needed, verdict
from kvmlab.repro.runner import ReproResult
from kvmlab.syzbot.client import Dashboard, SyzbotUnreachable
from kvmlab.syzbot.model import (
    Bug,
    FixCommit,
    SyzbotError,
    choose_crash,
    compiler_name,
    config_compiler,
    fix_lines,
    parse_bug,
    parse_ref,
)

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "syzbot"
TITLE = "KASAN: slab-use-after-free Read in hci_conn_drop"
EXTIDS = {"a1b2c3d4e5f6a7b8c9d0": "bug-syz-c.json", "0123456789abcdef0123": "bug-syz-only.json",
          "feedfacefeedfacefeed": "bug-no-repro.json", "fa11edfa11edfa11edfa": "bug-fixed.json"}
TEXTS = {"ReproSyz": "repro.syz", "ReproC": "repro.c", "CrashReport": "report.txt",
         "KernelConfig": "kernel.config"}
HAVE_GCC12 = shutil.which("gcc-12") is not None
NO_GCC12 = "gcc-12 (the recorded bug's compiler) is not installed: apt-get install gcc-12"


# -- a throwaway kernel tree and a local dashboard -------------------------------------------------


@dataclass
class Tree:
    path: Path
    old: str
    fix: str
    head: str


def _git(path: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z", "PATH": "/usr/bin:/bin"}
    return run(["git", "-C", str(path), *args], timeout=60, env=env).stdout.strip()


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    path = tmp_path / "linux"
    path.mkdir()
    _git(path, "init", "-q", "-b", "master")
    (path / "conn.c").write_text("".join(f"line {i}\n" for i in range(1, 21)))
    _git(path, "add", ".")
    _git(path, "commit", "-qm", "Bluetooth: add hci_conn")
    old = _git(path, "rev-parse", "HEAD")
    text = (path / "conn.c").read_text().replace("line 10\n", "line 10 fixed\n")
    (path / "conn.c").write_text(text)
    _git(path, "commit", "-qam", "Bluetooth: fix use-after-free in hci_conn_drop")
    fix = _git(path, "rev-parse", "HEAD")
    (path / "other.c").write_text("other\n")
    _git(path, "add", ".")
    _git(path, "commit", "-qm", "misc: unrelated")
    return Tree(path, old, fix, _git(path, "rev-parse", "HEAD"))


@dataclass
class Server:
    url: str
    requests: list[str] = field(default_factory=list)
    answer: Callable[[str], tuple[int, str]] | None = None
    """Overrides every answer (status, body) when set."""


@pytest.fixture
def dashboard(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A local dashboard serving the recorded bugs, their commits those of ``tree``."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    subst = {"@TREE_COMMIT@": tree.head, "@OLD_COMMIT@": tree.old, "@NOT_IN_TREE@": "f" * 40,
             "@FIX_COMMIT@": tree.fix, "@FIX_TITLE@": "Bluetooth: fix use-after-free in hci_conn_drop"}

    def recorded(name: str) -> str:
        text = (FIXTURES / name).read_text()
        for k, v in subst.items():
            text = text.replace(k, v)
        return text

    state: Server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            # A proxy gets the whole URL in the request line.
            u = urllib.parse.urlsplit(self.path)
            state.requests.append(self.path)
            q = {k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()}
            status, body = 404, "not found"
            if state.answer is not None:
                status, body = state.answer(self.path)
            elif u.path == "/bug" and q.get("json") == "1" and q.get("extid") in EXTIDS:
                status, body = 200, recorded(EXTIDS[q["extid"]])
            elif u.path == "/text" and q.get("tag") in TEXTS and q.get("x"):
                status, body = 200, recorded(TEXTS[q["tag"]])
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if u.path == "/bug" else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Server(f"http://127.0.0.1:{srv.server_address[1]}")
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield state
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


@pytest.fixture
def syz_dir(tmp_path: Path) -> Path:
    """Where syz binaries would be (only their presence matters here)."""
    d = tmp_path / "syz"
    d.mkdir()
    for name in ("syz-execprog", "syz-executor"):
        (d / name).write_text("#!/bin/sh\n")
        (d / name).chmod(0o755)
    return d


def _say() -> tuple[list[str], Callable[[str], None]]:
    lines: list[str] = []
    return lines, lines.append


# -- the recorded bugs ---------------------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_GCC12, reason=NO_GCC12)
def test_bug_with_syz_and_c_reproducers(tree: Tree, dashboard: Server, syz_dir: Path) -> None:
    url = f"{dashboard.url}/bug?extid=a1b2c3d4e5f6a7b8c9d0"
    lines, say = _say()
    job = ReproJob(tree=tree.path, syzbot=url, reproducer=ReproInput(syz_dir=syz_dir))
    got, fetched = inputs.with_syzbot(job, say=say)
    assert fetched is not None and got.bug == fetched.path
    # The newest crash is on a commit the tree does not have: the next one is on it.
    assert fetched.choice.crash.commit == tree.head and fetched.choice.in_tree
    assert fetched.choice.use_syz
    bugdir = fetched.path
    assert (bugdir / "title").read_text() == TITLE + "\n"
    assert (bugdir / "commit").read_text().strip() == tree.head
    assert "torvalds/linux.git" in (bugdir / "tree").read_text()
    assert (bugdir / ".config").read_text() == (FIXTURES / "kernel.config").read_text()
    assert (bugdir / "repro.syz").read_text() == (FIXTURES / "repro.syz").read_text()
    assert (bugdir / "repro.c").read_text() == (FIXTURES / "repro.c").read_text()
    assert (bugdir / "console.log").read_text() == (FIXTURES / "report.txt").read_text()
    assert (bugdir / "compiler").read_text().strip() == "gcc-12 (Debian 12.2.0-14) 12.2.0"
    assert any("newest crash on your tree" in line and "syz reproducer" in line for line in lines), lines
    assert any(f"syzbot bug a1b2c3d4e5f6a7b8c9d0: {TITLE}" in line for line in lines), lines
    # Then exactly as --bug DIR: commit, config, compiler, title, syz program.
    ready = inputs.with_bug(got, say=say)
    assert ready.commit == tree.head and ready.expect == TITLE
    assert ready.build.kernel_config == bugdir / ".config" and ready.build.compiler == "gcc-12"
    assert ready.reproducer.syz_prog == bugdir / "repro.syz"
    # What was asked of the dashboard: the bug page's JSON, then the crash's texts.
    assert dashboard.requests[0] == "/bug?extid=a1b2c3d4e5f6a7b8c9d0&json=1"
    assert all(r.startswith("/text?tag=") for r in dashboard.requests[1:])

    # Without syz binaries: the C program, same crash, from the cache.
    n = len(dashboard.requests)
    lines, say = _say()
    got_c, fetched_c = inputs.with_syzbot(ReproJob(tree=tree.path, syzbot=url), say=say)
    assert fetched_c is not None and fetched_c.path == bugdir and fetched_c.cached
    assert not fetched_c.choice.use_syz and "C (no syz binaries" in fetched_c.choice.why
    assert inputs.with_bug(got_c, say=say).reproducer.c == bugdir / "repro.c"
    assert len(dashboard.requests) == n, "the cached bug was asked for again"


def test_cached_bug_works_offline(tree: Tree, dashboard: Server, tmp_path: Path) -> None:
    url = f"{dashboard.url}/bug?extid=0123456789abcdef0123"
    _, fetched = inputs.with_syzbot(ReproJob(tree=tree.path, syzbot=url), say=lambda _l: None)
    assert fetched is not None and not fetched.cached
    dashboard.answer = lambda _p: (500, "down")
    lines, say = _say()
    _, again = inputs.with_syzbot(ReproJob(tree=tree.path, syzbot=url), say=say)
    assert again is not None and again.cached and again.path == fetched.path
    assert any("(from the cache)" in line for line in lines), lines


def test_bug_with_only_a_syz_reproducer(tree: Tree, dashboard: Server) -> None:
    url = f"{dashboard.url}/bug?extid=0123456789abcdef0123"
    _, say = _say()
    job, fetched = inputs.with_syzbot(ReproJob(tree=tree.path, syzbot=url), say=say)
    assert fetched is not None and fetched.choice.use_syz  # the only kind there is
    assert not (fetched.path / "repro.c").exists()
    ready = inputs.with_bug(job, say=say)
    assert ready.reproducer.syz_prog == fetched.path / "repro.syz"
    # With no syz binaries anywhere, running it is one line saying what to give.
    with pytest.raises(UserError, match=r"--syz-prog needs syz-execprog and syz-executor: give --syz-dir"):
        inputs.reproducer(ready.reproducer, inputs.settings(VMOptions()))


def test_bug_without_a_reproducer_is_one_line(tree: Tree, dashboard: Server,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["repro", "--tree", str(tree.path), "--syzbot",
               f"{dashboard.url}/bug?extid=feedfacefeedfacefeed"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1, err
    assert ("no reproducer on the dashboard (1 crash listed): kvmlab needs a syz or C reproducer" in err), err
    assert "INFO: task hung in hci_dev_close_sync" in err


def test_fixed_bug(tree: Tree, dashboard: Server, tmp_path: Path) -> None:
    url = f"{dashboard.url}/bug?extid=fa11edfa11edfa11edfa"
    lines, say = _say()
    job, fetched = inputs.with_syzbot(BisectJob(tree=tree.path, syzbot=url, fix=True), say=say)
    assert fetched is not None and fetched.bug.fixed
    assert any("fixed on 2026/11/20 09:30; fixed by Bluetooth: fix use-after-free in hci_conn_drop "
               f"({tree.fix[:12]})" in line for line in lines), lines
    # The crash is on the old commit; a fix bisection goes from it to the tree's HEAD.
    ready = inputs.with_bug(job, say=say)
    assert ready.bad == tree.old and ready.good == tree.head
    assert any("fix bisection from the bug's commit" in line for line in lines), lines
    # A found fix is compared with the dashboard's.
    agree = fix_lines(fetched.bug, tree.fix, "Bluetooth: fix use-after-free in hci_conn_drop")
    assert agree[-1].startswith("kvmlab: agrees with the dashboard's fix commit"), agree
    other = fix_lines(fetched.bug, tree.head, "misc: unrelated")
    assert "the dashboard's fix commit is another" in other[-1], other
    unfixed = Bug(TITLE, "x", "open", ())
    assert "#syz fix: misc: unrelated" in fix_lines(unfixed, tree.head, "misc: unrelated")[-1]


@pytest.mark.parametrize(("answer", "rc", "message"), [
    ((404, "no such bug"), 2,
     r"the syzbot dashboard has no http://127\.0\.0\.1:\d+/bug\?extid=abcabcabcabcabcabcab&json=1 "
     r"\(HTTP 404\)"),
    ((500, "oops"), 3,
     r"the syzbot dashboard failed to answer .*: HTTP 500 .*; a bug directory \(--bug DIR\) works offline"),
    ((200, "<html><body>Rate limited</body></html>"), 2,
     r"not the dashboard's JSON \(starts '<html><body>Rate"),
    ((200, '{"version": 2, "title": "x"}'), 2, r"JSON format version 2, kvmlab reads version 1"),
    ((200, '{"version": 1, "title": "x", "crashes": {"a": 1}}'), 2, r"'crashes' is not a list of objects"),
])
def test_dashboard_errors_are_one_line(tree: Tree, dashboard: Server, capsys: pytest.CaptureFixture[str],
                                       answer: tuple[int, str], rc: int, message: str) -> None:
    dashboard.answer = lambda _p: answer
    got = main(["repro", "--tree", str(tree.path), "--syzbot",
                f"{dashboard.url}/bug?extid=abcabcabcabcabcabcab"])
    err = capsys.readouterr().err
    assert got == rc, err
    assert err.count("\n") == 1, err
    assert re.search(message, err), err


def test_no_network_says_what_and_that_bug_dirs_work_offline(tree: Tree, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "conf.yaml"
    # A port nothing listens on (bound, then closed).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf.write_text(f"syzbot:\n  url: http://127.0.0.1:{port}\n  timeout: 5\n")
    got = main(["repro", "--tree", str(tree.path), "--conf", str(conf), "--syzbot", "a1b2c3d4e5f6a7b8c9d0"])
    err = capsys.readouterr().err
    assert got == 3, err
    assert err.count("\n") == 1, err
    assert f"cannot reach the syzbot dashboard at http://127.0.0.1:{port} (" in err
    assert "a bug directory (--bug DIR) works offline" in err


def test_proxy_from_the_config(tree: Tree, dashboard: Server, tmp_path: Path) -> None:
    """A dashboard only the proxy can reach: the request goes to the proxy, whole URL in it."""
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"syzbot:\n  url: http://syzbot.invalid\n  proxy: {dashboard.url}\n")
    job = ReproJob(tree=tree.path, syzbot="0123456789abcdef0123", vms=VMOptions(conf=conf))
    _, fetched = inputs.with_syzbot(job, say=lambda _l: None)
    assert fetched is not None and fetched.ref.base == "http://syzbot.invalid"
    assert dashboard.requests[0] == "http://syzbot.invalid/bug?extid=0123456789abcdef0123&json=1"


def test_missing_compiler_names_the_debian_package(tree: Tree, dashboard: Server,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = (FIXTURES / "kernel.config").read_text().replace(
        'CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14) 12.2.0"',
        'CONFIG_CC_VERSION_TEXT="Debian clang version 99.1.0 (++20260101)"')

    def answer(path: str) -> tuple[int, str]:
        if "KernelConfig" in path:
            return 200, config
        if path.startswith("/bug"):
            return 200, (FIXTURES / "bug-syz-only.json").read_text().replace("@TREE_COMMIT@", tree.head)
        return 200, (FIXTURES / TEXTS[re.search(r"tag=(\w+)", path).group(1)]).read_text()  # type: ignore[union-attr]

    dashboard.answer = answer
    got = main(["repro", "--tree", str(tree.path), "--syzbot",
                f"{dashboard.url}/bug?extid=0123456789abcdef0123"])
    err = capsys.readouterr().err
    assert got == 3, err
    assert err.count("\n") == 1, err
    assert "compiler 'clang-99' is not installed on this host" in err
    assert "Debian clang version 99.1.0" in err and "apt-get install clang-99 lld-99 llvm-99" in err


@pytest.mark.skipif(not HAVE_GCC12, reason=NO_GCC12)
def test_boot_job_from_a_syzbot_bug(tree: Tree, dashboard: Server, syz_dir: Path, tmp_path: Path) -> None:
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"syzkaller:\n  dir: {syz_dir}\n")
    job = BootJob(tree=tree.path, syzbot=f"{dashboard.url}/bug?extid=a1b2c3d4e5f6a7b8c9d0",
                  vms=VMOptions(conf=conf))
    job, fetched = inputs.with_syzbot(job, say=lambda _l: None)
    ready = inputs.with_bug(job, say=lambda _l: None)
    assert fetched is not None
    assert ready.commit == tree.head and ready.build.kernel_config == fetched.path / ".config"
    assert ready.repro == fetched.path / "repro.syz"
    assert ready.syz_execprog == syz_dir / "syz-execprog" and ready.syz_executor == syz_dir / "syz-executor"


# -- pure parts ------------------------------------------------------------------------------------------


def test_bug_references() -> None:
    assert parse_ref("https://syzkaller.appspot.com/bug?extid=0267d1c87b9ed4eb5def").page == \
        "https://syzkaller.appspot.com/bug?extid=0267d1c87b9ed4eb5def&json=1"
    r = parse_ref("http://127.0.0.1:8080/bug?id=CB1DBE55DC6DAA7E739A0D09A0AE4D5E3E5A10C8")
    assert (r.base, r.key, r.value) == ("http://127.0.0.1:8080", "id",
                                        "cb1dbe55dc6daa7e739a0d09a0ae4d5e3e5a10c8")
    r = parse_ref("Reported-by: syzbot+0267d1c87b9ed4eb5def@syzkaller.appspotmail.com", "https://x.test/")
    assert (r.base, r.key, r.value) == ("https://x.test", "extid", "0267d1c87b9ed4eb5def")
    assert parse_ref("0267d1c87b9ed4eb5def").key == "extid"
    assert parse_ref("cb1dbe55dc6daa7e739a0d09a0ae4d5e3e5a10c8").key == "id"
    for bad in ("https://syzkaller.appspot.com/upstream", "not an id", ""):
        with pytest.raises(SyzbotError):
            parse_ref(bad)


def test_dashboards_own_sample_parses() -> None:
    """The sample of syzkaller's dashboard/app/public_json_api_test.go (its shape, our values)."""
    text = json.dumps({"version": 1, "title": "title2", "id": "fc00fbc0cddd9a4ef2ae33e40cd21636081466ce",
                       "status": "reporting1: reported C repro on 2000/01/01 00:01",
                       "first-crash": "2000-01-01T00:01:00Z", "last-crash": "2000-01-01T00:01:00Z",
                       "crashes": [{"title": "title2",
                                    "syz-reproducer": "/text?tag=ReproSyz&amp;x=13000000000000",
                                    "c-reproducer": "/text?tag=ReproC\u0026x=17000000000000",
                                    "repro-opts": "repro opts 2",
                                    "kernel-config": "/text?tag=KernelConfig\u0026x=a989f27ebc47e2dc",
                                    "kernel-source-git": "repo1",
                                    "kernel-source-commit": "1111111111111111111111111111111111111111",
                                    "syzkaller-commit": "syzkaller_commit1",
                                    "crash-report-link": "/text?tag=CrashReport\u0026x=15000000000000"}]})
    bug = parse_bug(text, where="sample")
    (c,) = bug.crashes
    assert c.syz_link == "/text?tag=ReproSyz&x=13000000000000"  # HTML escaping undone
    assert not bug.fixed and c.has_repro
    assert Dashboard("http://d.test").url(c.c_link) == "http://d.test/text?tag=ReproC&x=17000000000000"


def test_crash_choice_prefers_the_runnable_kind_then_the_users_tree() -> None:
    bug = parse_bug((FIXTURES / "bug-syz-c.json").read_text().replace("@NOT_IN_TREE@", "a" * 40)
                    .replace("@TREE_COMMIT@", "b" * 40).replace("@OLD_COMMIT@", "c" * 40), where="t")
    newest = choose_crash(bug, have_syz=True, in_tree=lambda _c: False)
    assert newest.crash.commit == "a" * 40 and not newest.in_tree and "not in your tree" in newest.why
    mine = choose_crash(bug, have_syz=False, in_tree=lambda c: c == "b" * 40)
    assert mine.crash.commit == "b" * 40 and mine.in_tree and not mine.use_syz


@pytest.mark.parametrize(("text", "name"), [
    ("gcc-12 (Debian 12.2.0-14) 12.2.0", "gcc-12"),
    ("gcc (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40", "gcc-12"),
    ("gcc (GCC) 10.2.1 20210110", "gcc-10"),
    ("Debian clang version 15.0.6, GNU ld (GNU Binutils for Debian) 2.40", "clang-15"),
    ("Debian clang version 20.1.7 (++20250616065708+6146a88f6049-1~exp1~20250616065826.132), "
     "Debian LLD 20.1.7", "clang-20"),
    ("icc 2021", None),
])
def test_compiler_names(text: str, name: str | None) -> None:
    assert compiler_name(text) == name


def test_config_names_its_compiler() -> None:
    assert config_compiler((FIXTURES / "kernel.config").read_text()) == "gcc-12 (Debian 12.2.0-14) 12.2.0"
    assert config_compiler("CONFIG_X=y\n") == ""


def test_fix_commit_line() -> None:
    bug = Bug(TITLE, "x", "fixed", (), (FixCommit("a: fix b", "0123456789abcdef"),), fixed=True)
    assert bug.fix_line() == "fixed by a: fix b (0123456789ab)"


# -- patch tests -------------------------------------------------------------------------------------------


def test_runs_needed_follows_the_unpatched_rate() -> None:
    assert runs_needed(2, 2) == 3  # 2/2: 3 clean runs say gone at 95%
    assert p_no_crash(2, 2, 3) == pytest.approx(6 / 120)
    assert runs_needed(4, 4) == 2
    assert runs_needed(1, 3) == 12
    assert runs_needed(1, 20) is None  # a rare crash: no reasonable number
    assert runs_needed(2, 2, confidence=0.99) == 7


def _result(*runs: tuple[RunStatus, str | None]) -> ReproResult:
    outs = [RunOutcome(status=s, index=i, title=t) for i, (s, t) in enumerate(runs)]
    expected = [None if t is None else t == TITLE for _, t in runs]
    return ReproResult(outs, expected, 1.0)


def test_patch_verdicts() -> None:
    ok = (RunStatus.OK, None)
    gone = verdict(_result(ok, ok, ok), base_crashed=2, base_runs=2)
    assert gone.status is PatchStatus.GONE
    assert gone.line.startswith("the crash is gone: 0/3 runs (confidence 95%: unpatched it crashed 2/2 "
                                "runs here")
    still = verdict(_result(ok, (RunStatus.CRASHED, TITLE)), base_crashed=2, base_runs=2)
    assert still.status is PatchStatus.STILL_CRASHES and still.line == f"still crashes: 1/2 runs: {TITLE}"
    # A boot failure answers nothing: two clean runs are too few for 95%.
    few = verdict(_result(ok, ok, (RunStatus.BOOT_FAILED, None)), base_crashed=2, base_runs=2)
    assert few.status is PatchStatus.UNDECIDED and "too few to say it is gone" in few.line
    other = verdict(_result(ok, ok, ok, (RunStatus.CRASHED, "WARNING in foo")), base_crashed=2, base_runs=2)
    assert other.status is PatchStatus.GONE and other.line.endswith("; other crashes: WARNING in foo")


def _diff(tree: Tree, edit: Callable[[str], str], *, fmt: bool) -> str:
    """A patch of conn.c at HEAD (made in a scratch clone: the tree stays as it is)."""
    scratch = Path(tempfile.mkdtemp(dir=tree.path.parent)) / "clone"
    run(["git", "clone", "-q", str(tree.path), str(scratch)], timeout=60)
    conn = scratch / "conn.c"
    conn.write_text(edit(conn.read_text()))
    if not fmt:
        return _git(scratch, "diff") + "\n"
    _git(scratch, "commit", "-qam", "Bluetooth: hold a reference in hci_conn_drop")
    return _git(scratch, "format-patch", "-1", "--stdout") + "\n"


def test_patches_apply_in_a_private_index(tree: Tree, tmp_path: Path) -> None:
    status = _git(tree.path, "status", "--porcelain")
    fix = tmp_path / "fix.patch"
    fix.write_text(_diff(tree, lambda t: t.replace("line 15\n", "line 15 patched\n"), fmt=True))
    plain = tmp_path / "more.diff"
    plain.write_text(_diff(tree, lambda t: t.replace("line 3\n", "line 3 too\n"), fmt=False))
    done = inputs.patched_commit(tree.path, tree.head, [fix, plain])
    assert done.commit is not None, done
    again = inputs.patched_commit(tree.path, tree.head, [fix, plain])
    assert again.commit == done.commit  # deterministic: the same build cache entry
    text = _git(tree.path, "show", f"{done.commit}:conn.c")
    assert "line 15 patched" in text and "line 3 too" in text
    assert _git(tree.path, "rev-parse", f"{done.commit}^") == tree.head
    # The user's tree: same HEAD, same branch, nothing changed, no new branch.
    assert _git(tree.path, "rev-parse", "HEAD") == tree.head
    assert _git(tree.path, "status", "--porcelain") == status
    assert _git(tree.path, "branch", "--format=%(refname:short)") == "master"
    # A plain diff without a/ b/ prefixes (diff -u conn.c.orig conn.c) applies with -p0.
    p0 = tmp_path / "p0.diff"
    p0.write_text(_diff(tree, lambda t: t.replace("line 7\n", "line 7 p0\n"), fmt=False)
                  .replace("a/conn.c", "conn.c").replace("b/conn.c", "conn.c"))
    done = inputs.patched_commit(tree.path, tree.head, [p0])
    assert done.commit is not None and "line 7 p0" in _git(tree.path, "show", f"{done.commit}:conn.c")


def test_patch_that_does_not_apply_names_the_file_and_hunk(tree: Tree, tmp_path: Path) -> None:
    # Made against HEAD (with the fix), applied on the old commit: its second hunk is on line 10.
    patch = tmp_path / "fix.patch"
    patch.write_text(_diff(tree, lambda t: t.replace("line 2\n", "line 2 x\n")
                           .replace("line 10 fixed\n", "line 10 fixed twice\n"), fmt=True))
    done = inputs.patched_commit(tree.path, tree.old, [patch])
    assert done.commit is None and done.failed == patch
    assert re.fullmatch(r"conn\.c hunk #2 \(@@ -7,7 \+7,7 @@\)", done.failure), done.failure
    missing = tmp_path / "missing.patch"
    missing.write_text(_diff(tree, lambda t: t, fmt=False) + (
        "--- a/net/bluetooth/hci_conn.c\n+++ b/net/bluetooth/hci_conn.c\n@@ -1,1 +1,1 @@\n-a\n+b\n"))
    gone = inputs.patched_commit(tree.path, tree.head, [missing])
    assert gone.commit is None and gone.failure == "net/bluetooth/hci_conn.c does not exist in the tree"
    with pytest.raises(MissingFileError, match=r"--patch .*nothing\.patch: no such file"):
        inputs.patched_commit(tree.path, tree.head, [tmp_path / "nothing.patch"])


def test_patch_that_does_not_apply_is_the_repro_result(tree: Tree, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    patch = tmp_path / "stale.patch"
    patch.write_text(_diff(tree, lambda t: t.replace("line 10 fixed\n", "line 10 again\n"), fmt=True))
    rc = main(["repro", "--tree", str(tree.path), "--commit", tree.old, "--command", "true",
               "--expect", TITLE, "--patch", str(patch), "--workdir", str(tmp_path / "w")])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"patch does not apply: {patch}: conn.c hunk #1 (@@ -7,7 +7,7 @@) (on {tree.old[:12]})" in out, out
    assert json.loads((tmp_path / "w" / "patch-test.json").read_text())["status"] == "patch does not apply"


def test_repro_job_round_trips_syzbot_and_patches(tmp_path: Path) -> None:
    job = job_from_mapping({"kind": "repro", "syzbot": "0267d1c87b9ed4eb5def",
                            "build": {"patches": ["fix.patch", "/abs/two.diff"]}}, where="t", base=tmp_path)
    assert isinstance(job, ReproJob)
    assert job.build.patches == (tmp_path / "fix.patch", Path("/abs/two.diff"))
    assert job_from_mapping(job_to_mapping(job), where="t", base=tmp_path) == job
    boot = job_from_mapping({"kind": "boot", "bug": "bug", "syzbot": "x"}, where="t", base=tmp_path)
    assert isinstance(boot, BootJob) and boot.bug == tmp_path / "bug"


def test_unreachable_is_infra(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SyzbotUnreachable, match="cannot reach the syzbot dashboard"):
        Dashboard(f"http://127.0.0.1:{port}", timeout=5).get("/bug?extid=x&json=1")


def test_boot_builds_a_bugs_config_with_only_what_it_needs_on_top(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text((FIXTURES / "kernel.config").read_text())
    job = BootJob(tree=tmp_path, commit="HEAD", build=BuildOptions(kernel_config=config), gdb=True)
    request = build_request(job)
    assert request.full_config == config.read_text() and request.fragments == ("gdb",)
    # Without a full config: fragments as before (base by default).
    assert build_request(BootJob(tree=tmp_path, commit="HEAD")).fragments == ("base",)


def test_patch_test_needs_the_bugs_title(tree: Tree, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    patch = tmp_path / "p.patch"
    patch.write_text(_diff(tree, lambda t: t.replace("line 3\n", "line 3 x\n"), fmt=True))
    rc = main(["repro", "--tree", str(tree.path), "--commit", tree.head, "--command", "true", "--patch",
               str(patch), "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert rc == 2 and "--patch needs the bug's title" in err and err.count("\n") == 1, err
