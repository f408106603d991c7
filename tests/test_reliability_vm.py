"""Issue 24 with real VMs (the Debian cloud kernel under TCG, one VM at a
time): a reproducer that powers the guest off, one that reboots it, one that
exhausts its memory, and a host disk that fills during a run each give a
result a user would call true — in ``kvmlab repro`` (its lines, its exit
status, result.json) and in a bisection (the engine fed the outcomes those
real runs gave: never the target, never a crash, never ours when it is the
guest's, and ours when it is the host's). Ctrl-C in the middle of runs prints
no verdict for them. ``boot -- poweroff -f`` exits with the reserved status
of a guest that stopped itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kvmlab import exitcodes, proc
from kvmlab.bisect import bisect
from kvmlab.bisect.state import BisectInfraError, ReproFailedError
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome
from tests.conftest import REPO, TEST_CACHE
from tests.test_bisect import make_history

pytestmark = [pytest.mark.vm, pytest.mark.slow]

KVMLAB = (sys.executable, "-m", "kvmlab.cli")


def _installed_kernel() -> Path | None:
    """A kernel of /boot whose modules are installed (repro's initramfs takes them from /lib/modules)."""
    for k in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        if Path("/lib/modules", k.name.removeprefix("vmlinuz-")).is_dir():
            return k
    return None


@dataclass
class Run:
    rc: int
    out: str
    err: str
    result: dict[str, Any] | None

    @property
    def statuses(self) -> list[str]:
        assert self.result is not None
        return [r["status"] for r in self.result["runs"]]


class Lab:
    """kvmlab in its own process with an isolated HOME (the initramfs cache
    shared with the rest of the suite)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
                    "XDG_CONFIG_HOME": str(home / ".config"), "XDG_STATE_HOME": str(home / ".state")}
        cache = home / ".cache" / "kvmlab"
        cache.mkdir(parents=True)
        shared = TEST_CACHE / "initramfs-boot"
        shared.mkdir(parents=True, exist_ok=True)
        (cache / "initramfs").symlink_to(shared)

    def run(self, *args: str | Path, json_out: Path | None = None) -> Run:
        res = subprocess.run([*KVMLAB, *map(str, args)], capture_output=True, text=True, timeout=600,
                             env=self.env, cwd=REPO, stdin=subprocess.DEVNULL)
        result = json.loads(json_out.read_text()) if json_out is not None and json_out.is_file() else None
        return Run(res.returncode, res.stdout, res.stderr, result)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    if _installed_kernel() is None:
        pytest.skip("no kernel in /boot with its modules in /lib/modules (bash scripts/setup.sh installs the "
                    "cloud kernel)")
    return Lab(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def tiny_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("tiny")
    if os.geteuid() != 0 or proc.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], timeout=30,
                                     check=False).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield d
    finally:
        proc.run(["umount", "-l", str(d)], timeout=30, check=False)


def _repro(lab: Lab, tmp: Path, name: str, *what: str | Path, count: int = 1, memory: str = "512M") -> Run:
    kernel = _installed_kernel()
    assert kernel is not None
    out = tmp / f"{name}.json"
    return lab.run("repro", "--kernel", kernel, *what, "--count", str(count), "--run-time", "30",
                   "--memory", memory, "--accel", "tcg", "--workdir", tmp / name, "--json", out, json_out=out)


@pytest.fixture(scope="module")
def runs(lab: Lab, tiny_disk: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The four reproducers, each run for real once (one VM at a time)."""
    tmp = tmp_path_factory.mktemp("runs")
    oom = tmp / "oom.c"
    oom.write_text("#include <stdlib.h>\n#include <string.h>\nint main(void) {\n"
                   "  for (;;) { char *p = malloc(1 << 20); if (p) memset(p, 1, 1 << 20); }\n}\n")
    fill = ("for i in $(seq 3000); do echo \"fill $i ...................................\" > /dev/kmsg; "
            "done; sleep 2")
    kernel = _installed_kernel()
    assert kernel is not None
    full_json = tmp / "full.json"  # on a disk with room: the results must not be lost
    return {
        "poweroff": _repro(lab, tmp, "poweroff", "--command", "poweroff -f", count=2),
        "reboot": _repro(lab, tmp, "reboot", "--command", "reboot -f"),
        "oom": _repro(lab, tmp, "oom", oom, memory="256M"),
        "full": lab.run("repro", "--kernel", kernel, "--command", fill, "--count", "1", "--run-time", "30",
                        "--accel", "tcg", "--workdir", tiny_disk / "w", "--json", full_json,
                        json_out=full_json),
    }


def test_a_reproducer_that_powers_the_guest_off(runs: dict[str, Run]) -> None:
    r = runs["poweroff"]
    assert r.rc == 1, r.err  # no run tested the kernel
    assert r.statuses == ["guest-stopped", "guest-stopped"]
    for i in (0, 1):
        assert f"run #{i}: guest stopped: the guest powered itself off (reboot: Power down)" in r.out
    assert "no run tested the kernel: 2 x the guest stopped itself" in r.out
    for wrong in ("crashed", "lost connection", "infra error", "boot failed"):
        assert wrong not in r.out, r.out


def test_a_reproducer_that_reboots_the_guest(runs: dict[str, Run]) -> None:
    r = runs["reboot"]
    assert r.rc == 1, r.err
    assert r.statuses == ["guest-stopped"]
    assert "run #0: guest stopped: the guest rebooted itself (reboot: Restarting system)" in r.out
    for wrong in ("crashed", "infra error", "boot failed"):
        assert wrong not in r.out, r.out


def test_a_reproducer_that_exhausts_the_guests_memory(runs: dict[str, Run]) -> None:
    r = runs["oom"]
    assert r.rc == 0, r.err
    assert r.statuses == ["ok"]  # the kernel did not crash: its OOM killer did its job
    detail = r.result["runs"][0]["detail"] if r.result else ""
    assert "killed by SIGKILL (status 137): the guest's OOM killer (Out of memory: Killed process" in detail
    assert "(repro)" in detail and "status -1" not in r.out


def test_a_host_disk_that_fills_during_a_run_is_ours(runs: dict[str, Run], tiny_disk: Path) -> None:
    r = runs["full"]
    assert r.rc == exitcodes.OURS, r.err
    assert r.statuses == ["infra"]  # and the results are in --json, on a disk with room
    assert "run #0: infra error: host: cannot write the console log" in r.out
    assert "No space left on device" in r.out
    assert "boot failed" not in r.out and "crashed" not in r.out
    err = [ln for ln in r.err.splitlines() if ln.startswith("kvmlab:")]
    assert err == [f"kvmlab: infrastructure error: cannot write {tiny_disk / 'w' / 'result.json'}: disk full "
                   "(No space left on device)"], r.err
    assert "Traceback" not in r.err


@dataclass
class Replay:
    """A tester whose builds always work and whose runs are the outcomes a real
    run gave (in a loop): the engine's part, fed real outcomes."""

    outcomes: list[RunOutcome]
    given: int = 0

    def build(self, commit: str) -> BuildOutcome:
        return BuildOutcome(commit, BuildStatus.OK, compiler="gcc", artifacts={"bzImage": "/dev/null"})

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        out = []
        for k in range(runs):
            o = self.outcomes[self.given % len(self.outcomes)]
            self.given += 1
            out.append(RunOutcome.from_json({**o.to_json(), "index": k}))
        return out


def _replay(run: Run) -> Replay:
    assert run.result is not None
    return Replay([RunOutcome.from_json(r) for r in run.result["runs"]])


@pytest.mark.parametrize("name", ["poweroff", "reboot"])
def test_a_bisection_never_counts_a_guest_that_stopped_itself(runs: dict[str, Run], tmp_path: Path,
                                                              name: str) -> None:
    hist = make_history(tmp_path / "repo", 4)
    tester = _replay(runs[name])
    with pytest.raises(ReproFailedError, match="the guest stopped itself in 3 runs in a row with no crash"):
        bisect(hist.repo, tester, bad=hist.h["4"], good=hist.h["0"])


def test_a_bisection_of_a_reproducer_the_oom_killer_stops_finds_no_crash(runs: dict[str, Run],
                                                                        tmp_path: Path) -> None:
    hist = make_history(tmp_path / "repo", 4)
    res = bisect(hist.repo, _replay(runs["oom"]), bad=hist.h["4"], good=hist.h["0"])
    assert res.outcome.value == "no-repro" and res.culprit is None


def test_a_bisection_on_a_full_host_disk_stops_as_ours(runs: dict[str, Run], tmp_path: Path) -> None:
    hist = make_history(tmp_path / "repo", 4)
    with pytest.raises(BisectInfraError, match="runs in a row failed on kvmlab's side: host: cannot write"):
        bisect(hist.repo, _replay(runs["full"]), bad=hist.h["4"], good=hist.h["0"])


def test_ctrl_c_in_the_middle_of_runs_gives_them_no_verdict(lab: Lab, tmp_path: Path) -> None:
    kernel = _installed_kernel()
    assert kernel is not None
    argv = [*KVMLAB, "repro", "--kernel", str(kernel), "--command", "sleep 100", "--count", "2",
            "--run-time", "60", "--memory", "512M", "--accel", "tcg", "--workdir", str(tmp_path / "w")]
    p = subprocess.Popen(argv,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=lab.env, cwd=REPO,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    assert p.stdout is not None
    before = []
    deadline = time.monotonic() + 300
    for line in p.stdout:
        before.append(line)
        if "ready for SSH" in line or time.monotonic() > deadline:
            break
    assert "ready for SSH" in before[-1], "".join(before)
    p.send_signal(signal.SIGINT)  # the other VM may still be booting: neither gets a verdict
    after, _ = p.communicate(timeout=120)
    assert p.returncode == exitcodes.INTERRUPTED
    assert after.strip().splitlines()[-1] == "kvmlab: interrupted", after
    for wrong in ("run #", "boot failed", "infra error", "Traceback"):
        assert wrong not in after, after


def test_boot_command_that_powers_the_guest_off(lab: Lab) -> None:
    kernel = _installed_kernel()
    assert kernel is not None
    r = lab.run("boot", "--kernel", kernel, "--accel", "tcg", "--name", "off", "--", "poweroff -f")
    assert r.rc == exitcodes.PASS_GUEST_STOPPED, r.err
    assert "the guest shut itself down before the command ended" in r.err and "reboot: Power down" in r.err
    assert "boot failed" not in r.err and "Traceback" not in r.err


def test_vm_run_keeps_the_quoting_and_passes_the_status_on(lab: Lab) -> None:
    kernel = _installed_kernel()
    assert kernel is not None
    r = lab.run("vm", "run", "--kernel", kernel, "--accel", "tcg", "--count", "1", "--memory", "512M", "--",
                "sh", "-c", 'echo "a  b"; exit 3')
    assert r.rc == 3, r.err  # the command's 3, not kvmlab's "ours" (that is 243 here)
    assert r.out.splitlines() == ["vm 0: a  b"], r.out


def test_vm_run_of_a_kernel_that_resets_at_once_is_a_boot_failure_with_its_console(lab: Lab) -> None:
    # Debian's cloud kernel does not decompress into 64 MiB (kvmlab's smallest
    # RAM): the guest resets before the kernel prints, QEMU (-no-reboot) exits
    # 0 within the first half second. That is the kernel's boot failing, not
    # "qemu exited at start" (an infra error), and the temp console log goes
    # with the pool: its last lines are shown instead of a path.
    kernel = _installed_kernel()
    assert kernel is not None
    r = lab.run("vm", "run", "--kernel", kernel, "--accel", "tcg", "--count", "1", "--memory", "64M",
                "--", "true")
    if r.rc == 0:
        pytest.skip(f"{kernel} boots in 64 MiB here: no early reset to test with")
    assert r.rc == exitcodes.PASS_BOOT_FAILED, r.out + r.err
    assert "vm 0: boot failed: vm stopped" in r.out, r.out
    assert "vm 0: | " in r.out and "console:" not in r.out, r.out
    assert "infrastructure error" not in r.err and "Traceback" not in r.err, r.err
