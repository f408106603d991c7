"""``--syzbot`` and ``--patch`` end to end, for real: the demo tree's planted
bug served as a syzbot bug by a local dashboard (its title, commit, the
``.config`` that commit is built with, the syz program, a real console log of
the crash), then ``kvmlab repro --syzbot`` (real builds, real VMs, real
syz-execprog), ``--patch`` with a fix (gone) and with a patch that fixes
nothing (still crashes), ``boot --syzbot`` with the reproducer staged, and
``bisect --syzbot`` naming the planted culprit."""

from __future__ import annotations

import difflib
import http.server
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlab import oops
from kvmlab.cli import main
from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.proc import run
from kvmlab.repro.reproducer import GUEST_DIR
from kvmlab.vmm.resources import SAMPLES_NAME, read_samples
from tests.fixtures_kernel import KERNEL_CACHE, BuildKernel
from tests.test_syz_real import CULPRIT_PROG, PLAIN_TITLE, RUN_TIME
from tests.test_syz_units import HAVE_SYZ, SYZ_DIR

pytestmark = [
    pytest.mark.vm, pytest.mark.kernel, pytest.mark.slow,
    pytest.mark.skipif(not HAVE_SYZ, reason=f"no syzkaller binaries in {SYZ_DIR}"),
]

#: A real console log of the planted bug on a plain demo kernel.
CONSOLE_LOG = Path(__file__).parent / "fixtures" / "report" / "demo-null-deref.log"
EXTID = "de30de30de30de30de30"


def _bug_commit(demo: DemoTree) -> str:
    """Two commits after the planted culprit: a short range for the bisection."""
    i = demo.commits.index(demo.culprit)
    return demo.commits[i + 2]


class _Dashboard:
    """A local syzbot dashboard serving one bug (``/bug?extid=...&json=1``) and its texts."""

    def __init__(self, texts: dict[str, str], bug: dict[str, object]) -> None:
        self.texts = texts
        self.bug = json.dumps(bug, indent="\t")
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                u = urllib.parse.urlsplit(self.path)
                q = {k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()}
                outer.requests.append(self.path)
                status, body = 404, "not found"
                if u.path == "/bug" and q.get("extid") == EXTID and q.get("json") == "1":
                    status, body = 200, outer.bug
                elif u.path == "/text" and q.get("tag") in outer.texts:
                    status, body = 200, outer.texts[q["tag"]]
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Dashboard:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def planted_bug(demo_tree: DemoTree, build_kernel: BuildKernel, monkeypatch: pytest.MonkeyPatch,
                tmp_path: Path) -> Iterator[tuple[_Dashboard, str]]:
    """The planted bug on the dashboard, as syzbot would list it; the CLI's
    cache in ``tmp_path`` with the tests' kernel cache in it."""
    commit = _bug_commit(demo_tree)
    config = Path(build_kernel(commit).artifacts["config"]).read_text()
    texts = {"KernelConfig": config, "ReproSyz": CULPRIT_PROG, "CrashReport": CONSOLE_LOG.read_text()}
    bug = {"version": 1, "title": PLAIN_TITLE, "id": "5e1f" * 10, "status": "upstream: reported syz repro",
           "first-crash": "2026-11-01T00:00:00Z", "last-crash": "2026-11-30T00:00:00Z",
           "crashes": [{"title": PLAIN_TITLE, "syz-reproducer": "/text?tag=ReproSyz\u0026x=1a",
                        "repro-opts": '{"threaded":true,"repeat":true,"procs":1,"sandbox":"none"}',
                        "kernel-config": "/text?tag=KernelConfig\u0026x=2b",
                        "kernel-source-git": str(demo_tree.path), "kernel-source-commit": commit,
                        "crash-report-link": "/text?tag=CrashReport\u0026x=3c"}]}
    cache = tmp_path / "xdg-cache"
    (cache / "kvmlab").mkdir(parents=True)
    (cache / "kvmlab" / "kernel").symlink_to(KERNEL_CACHE / "work")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    for var in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with _Dashboard(texts, bug) as dash:
        yield dash, commit


def _patch(demo: DemoTree, commit: str, old: str, new: str, subject: str) -> str:
    """A git-format patch of kernel/sys.c at ``commit`` replacing ``old`` by ``new``."""
    text = run(["git", "-C", str(demo.path), "show", f"{commit}:kernel/sys.c"], timeout=60).stdout
    assert text.count(old) == 1, old
    diff = "".join(difflib.unified_diff(text.splitlines(True), text.replace(old, new).splitlines(True),
                                        "a/kernel/sys.c", "b/kernel/sys.c"))
    return (f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            f"From: A Developer <dev@example.org>\nDate: Tue, 1 Dec 2026 10:00:00 +0000\n"
            f"Subject: [PATCH] {subject}\n\n---\n kernel/sys.c | 2 +-\n 1 file changed\n\n"
            f"diff --git a/kernel/sys.c b/kernel/sys.c\n{diff}-- \n2.39.5\n\n")


FREE_THEN_READ = "\tcomm_digest_put(d);\n\tdigest = comm_digest_compute(d);\n"
READ_THEN_FREE = "\tdigest = comm_digest_compute(d);\n\tcomm_digest_put(d);\n"


def _show(cap: pytest.CaptureFixture[str], line: str) -> None:
    """A figure for the test's output, past the capture (the run's times)."""
    with cap.disabled():
        print(line)


def _vm(count: int | None = None) -> list[str]:
    return [*(["--count", str(count)] if count else []), "--cpus", "1", "--memory-mb", "1024",
            "--run-time", RUN_TIME, "--accel", "tcg", "--syz-dir", str(SYZ_DIR)]


def test_syzbot_bug_reproduces_and_a_patch_is_tested_like_syz_test(
        planted_bug: tuple[_Dashboard, str], demo_tree: DemoTree, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    dash, commit = planted_bug
    url = f"{dash.url}/bug?extid={EXTID}"
    t0 = time.monotonic()
    rc = main(["repro", "--tree", str(demo_tree.path), "--syzbot", url, *_vm(2), "--workdir",
               str(tmp_path / "unpatched")])
    out = capsys.readouterr().out
    _show(capsys, f"repro --syzbot: {time.monotonic() - t0:.0f} s")
    assert rc == 0, out[-3000:]
    assert f"syzbot bug {EXTID}: {PLAIN_TITLE}" in out
    assert f"the newest crash on your tree, commit {commit[:12]}, syz reproducer" in out
    crashed = re.findall(r"^run #\d: crashed: (.*)$", out, re.M)
    assert len(crashed) == 2 and all(oops.same_bug(t, PLAIN_TITLE) for t in crashed), out[-3000:]
    # Everything the dashboard gave is in the cache: the next commands do not ask again.
    asked = len(dash.requests)

    fix = tmp_path / "fix.patch"
    fix.write_text(_patch(demo_tree, commit, FREE_THEN_READ, READ_THEN_FREE,
                          "prctl: compute the comm digest before freeing it"))
    t0 = time.monotonic()
    rc = main(["repro", "--tree", str(demo_tree.path), "--syzbot", url, "--patch", str(fix), *_vm(),
               "--workdir", str(tmp_path / "fix"), "--json", str(tmp_path / "fix.json")])
    out = capsys.readouterr().out
    _show(capsys, f"repro --syzbot --patch fix.patch: {time.monotonic() - t0:.0f} s")
    # 2/2 unpatched crashes: 3 clean runs say "gone" with 95% confidence.
    testing = re.search(r"^kvmlab: testing .*$", out, re.M)
    assert testing is not None, out[-3000:]
    assert "3 runs (unpatched it crashed 2/2 runs here" in testing.group(0), testing.group(0)
    _show(capsys, testing.group(0))
    assert rc == 0, out[-3000:]
    line = re.search(r"^the crash is gone: 0/3 runs \(confidence 95(\.\d)?%.*$", out, re.M)
    assert line is not None, out[-3000:]
    _show(capsys, line.group(0))
    assert json.loads((tmp_path / "fix.json").read_text())["patch_test"]["status"] == "gone"
    assert len(dash.requests) == asked
    # The user's tree is as it was: no branch, no checkout.
    assert run(["git", "-C", str(demo_tree.path), "status", "--porcelain"], timeout=60).stdout == ""

    nofix = tmp_path / "comment.patch"
    nofix.write_text(_patch(demo_tree, commit, FREE_THEN_READ,
                            "\t/* the digest only needs the name */\n" + FREE_THEN_READ,
                            "prctl: comment prctl_get_comm_digest()"))
    t0 = time.monotonic()
    rc = main(["repro", "--tree", str(demo_tree.path), "--syzbot", url, "--patch", str(nofix), *_vm(),
               "--workdir", str(tmp_path / "nofix")])
    out = capsys.readouterr().out
    _show(capsys, f"repro --syzbot --patch comment.patch: {time.monotonic() - t0:.0f} s")
    assert rc == 1, out[-3000:]
    line = re.search(r"^still crashes: [1-3]/[1-3] runs: (.*)$", out, re.M)
    assert line is not None and oops.same_bug(line.group(1), PLAIN_TITLE), out[-3000:]
    _show(capsys, line.group(0))


def test_boot_stages_the_syzbot_bugs_reproducer(planted_bug: tuple[_Dashboard, str], demo_tree: DemoTree,
                                                tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    dash, commit = planted_bug
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"syzkaller:\n  dir: {SYZ_DIR}\n")
    t0 = time.monotonic()
    rc = main(["boot", "--tree", str(demo_tree.path), "--syzbot", f"{dash.url}/bug?extid={EXTID}",
               "--conf", str(conf), "--accel", "tcg", "--cpus", "1", "--memory", "1G", "--timeout", "120",
               "--", f"ls {GUEST_DIR}; tail -1 {GUEST_DIR}/prog"])
    captured = capfd.readouterr()
    _show(capfd, f"boot --syzbot: {time.monotonic() - t0:.0f} s")
    assert rc == 0, captured.err[-3000:]
    # Staged, not run: the program is there, ready for its command, and nothing crashed.
    assert "syz-execprog" in captured.out and "run-syz.sh" in captured.out, captured.out
    assert "prctl$auto(0x41, 0x0, 0x0, 0x0, 0x0)" in captured.out, captured.out
    assert f"staged: sh {GUEST_DIR}/run-syz.sh" in captured.err, captured.err[-3000:]
    assert f"booting {commit[:12]}" in captured.err, captured.err[-3000:]
    assert "kvmlab: kvmlab:" not in captured.err


def test_bisect_syzbot_names_the_planted_culprit(planted_bug: tuple[_Dashboard, str], demo_tree: DemoTree,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The shortest honest range: the culprit's parent good, two commits after it bad (the bug's
    commit); no revert check. 176 s measured (two incremental builds, syz runs under TCG)."""
    dash, commit = planted_bug
    good = demo_tree.commits[demo_tree.commits.index(demo_tree.culprit) - 1]
    t0 = time.monotonic()
    rc = main(["bisect", "--tree", str(demo_tree.path), "--syzbot", f"{dash.url}/bug?extid={EXTID}",
               "--good", good, "--no-verify", *_vm(2), "--json", str(tmp_path / "result.json"),
               "--workdir", str(tmp_path / "w")])
    out = capsys.readouterr().out
    _show(capsys, f"bisect --syzbot ({good[:12]}..{commit[:12]}): {time.monotonic() - t0:.0f} s")
    assert rc == 0, out[-4000:]
    assert f"{demo_tree.culprit} is the first bad commit" in out, out[-4000:]
    assert json.loads((tmp_path / "result.json").read_text())["culprit"] == demo_tree.culprit
    # Each local QEMU was sampled while it ran; the report draws its CPU under its VM's row.
    samples = list(read_samples(tmp_path / "w" / SAMPLES_NAME))
    assert samples and {s.vm for s in samples} <= {0, 1} and max(s.cpu for s in samples) > 20.0, samples
    assert '<g class="load">' in (tmp_path / "w" / "report.html").read_text()
