"""Owner identity (kvmlab.owner): pid + start time + boot id + client id, and
the reaping that relies on it, including a real pid reused by an unrelated
process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kvmlab import owner
from kvmlab.owner import Owner
from tests.conftest import REPO


def test_client_id_is_host_name_and_a_random_id_kept_in_the_state_dir(tmp_path: Path) -> None:
    a = owner.client_id(tmp_path / "a")
    assert a == owner.client_id(tmp_path / "a"), "kept, not made again"
    b = owner.client_id(tmp_path / "b")
    host, _, rand = a.partition("~")
    assert b.partition("~")[0] == host and b != a, "the same host name, another client"
    assert len(rand) == 8 and (tmp_path / "a" / owner.CLIENT_ID_FILE).read_text().strip() == rand


def test_me_is_this_process_on_this_boot_and_client() -> None:
    me = owner.me()
    assert me.pid == os.getpid() and me.started > 0
    assert me.boot == owner.boot_id() and len(me.boot) == 8
    assert me.client == owner.client_id()
    assert owner.alive(me) and owner.is_ours(me)


def test_a_start_time_or_boot_that_differs_is_another_process() -> None:
    me = owner.me()
    assert not owner.alive(Owner(me.pid, me.started - 500, me.boot, me.client))
    assert not owner.alive(Owner(me.pid, me.started, "00000000" if me.boot != "00000000" else "1", me.client))
    # No start time recorded (an older kvmlab's name): the pid decides.
    assert owner.alive(Owner(me.pid, 0, "", ""))


def test_only_this_clients_owners_are_judged() -> None:
    me = owner.me()
    host = me.client.split("~")[0]
    assert not owner.is_ours(Owner(me.pid, me.started, me.boot, f"{host}~deadbeef"))
    # An older kvmlab recorded the host name alone, and no start time.
    assert owner.is_ours(Owner(1234, 0, "", host))
    assert not owner.is_ours(Owner(1234, 5, "", host))


# -- a real reused pid --------------------------------------------------------------------------


_REUSE = textwrap.dedent("""
    import json, os, subprocess, sys
    from pathlib import Path
    from kvmlab import owner, proc

    tmp = Path(sys.argv[1])
    a = subprocess.Popen(["sleep", "600"])
    first = owner.of_pid(a.pid)
    left = tmp / f"kvmlab-pool-{first.token}-x1y2"
    left.mkdir()
    a.kill()
    a.wait()
    # The next process gets the pid the dead owner had (this pid namespace
    # is ours alone: nothing else takes it in between).
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(a.pid - 1))
    b = subprocess.Popen(["sleep", "600"])
    try:
        second = owner.of_pid(b.pid)
        out = {
            "same_pid": b.pid == a.pid,
            "pid_exists": proc.pid_alive(a.pid),
            "first_alive": owner.alive(first),
            "second_alive": owner.alive(second),
            "reaped": [p.name for p in owner.reap_tempdirs(tmp)],
            "started": [first.started, second.started],
        }
    finally:
        b.kill()
        b.wait()
    print(json.dumps(out))
""")


def test_a_pid_reused_by_an_unrelated_process_is_seen_as_dead(tmp_path: Path) -> None:
    """In a pid namespace of its own, a kvmlab owner (a real process) leaves
    a temp dir and dies; the next process is given the same pid
    (``ns_last_pid``). The pid exists again, yet the owner is dead and its
    leftover is reaped."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a pid namespace of its own)")
    # A start time a whole clock tick apart from the first: the reuse is
    # told by the start time, which the kernel counts in ticks.
    script = tmp_path / "reuse.py"
    script.write_text(_REUSE.replace("a.wait()\n", "a.wait()\nimport time; time.sleep(0.05)\n", 1))
    work = tmp_path / "tmp"
    work.mkdir()
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(script), str(work)],
                       capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["same_pid"] and out["pid_exists"], out
    assert out["started"][0] != out["started"][1], out
    assert not out["first_alive"] and out["second_alive"], out
    assert len(out["reaped"]) == 1 and out["reaped"][0].endswith("-x1y2"), out
    assert not list(work.iterdir())
