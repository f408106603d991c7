"""Builds spread with distcc (kvmlab.kernel.distcc): host entries, the job
count, the build's environment, and a real distccd in a network namespace of
its own: compiles go there, and when it drops, distcc compiles here and the
build log's fallback lines are counted."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from kvmlab.commands.doctor import _check_compile_hosts
from kvmlab.errors import ConfigError
from kvmlab.kernel import distcc
from kvmlab.kernel.builder import KernelBuilder
from kvmlab.kernel.distcc import CompileHost
from tests.lab.distccd import Distccd, distccd, unavailable_reason


def test_host_entries_and_the_job_count() -> None:
    hosts = distcc.parse_hosts(["lab1/32", "10.0.0.2:4000/16", "lab3"])
    assert hosts == (CompileHost("lab1", 3632, 32), CompileHost("10.0.0.2", 4000, 16),
                     CompileHost("lab3", 3632, distcc.DEFAULT_SLOTS))
    assert distcc.job_count(hosts, 2) == 32 + 16 + distcc.DEFAULT_SLOTS + 2
    assert distcc.hosts_env(hosts[:1], 2) == "lab1:3632/32 localhost/2"
    with pytest.raises(ConfigError, match=r"distcc_hosts\[1\]: 'lab 2': expected HOST\[:PORT\]\[/SLOTS\]"):
        distcc.parse_hosts(["lab1", "lab 2"])
    with pytest.raises(ConfigError, match=r"\[0\]: 'lab1/0': slots must be positive"):
        distcc.parse_hosts(["lab1/0"])


def test_fallback_lines_are_counted_once_per_compile() -> None:
    log = ("distcc[6870] ERROR: nonblocking connect to 10.0.0.2:3632 failed: Connection refused\n"
           "  CC      mm/slub.o\n"
           "distcc[6871] ERROR: nonblocking connect to 10.0.0.2:3632 failed: Connection refused\n"
           "distcc[6871] (dcc_build_somewhere) Warning: failed to distribute, running locally instead\n"
           "distcc[6999] ERROR: compile x.c on 10.0.0.2 failed with exit code 1\n")
    assert distcc.fallbacks(log) == 2


def test_the_builds_environment_sends_ccache_misses_to_the_hosts(tmp_path: Path) -> None:
    if shutil.which("distcc") is None:
        pytest.skip("distcc is not installed (apt-get install distcc)")
    hosts = distcc.parse_hosts(["lab1/32"])
    b = KernelBuilder(tmp_path, jobs=2, distcc_hosts=hosts)
    assert b.jobs == 34
    env = b._make_env(tmp_path, SimpleNamespace(llvm=False))  # type: ignore[arg-type]
    assert env["DISTCC_HOSTS"] == "lab1:3632/32 localhost/2" and env["DISTCC_FALLBACK"] == "1"
    if b.ccache:
        assert env["CCACHE_PREFIX"] == b.distcc
    plain = KernelBuilder(tmp_path, jobs=2)
    assert "DISTCC_HOSTS" not in plain._make_env(tmp_path, SimpleNamespace(llvm=False))  # type: ignore[arg-type]


# -- a real distccd -------------------------------------------------------------------------------


@pytest.fixture
def compile_host(tmp_path: Path) -> Iterator[Distccd]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with distccd(tmp_path) as d:
        yield d


def test_compiles_go_to_a_distccd_and_fall_back_here_when_it_drops(
        compile_host: Distccd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host, log = compile_host.host, compile_host.log
    assert _check_compile_hosts((f"{host.host}/2",))
    assert f"OK      compile host {host.host}:3632: distccd answers (2 slots)" in capsys.readouterr().out
    (tmp_path / ".distcc").mkdir()
    src = tmp_path / "x.c"
    src.write_text("int answer(void) { return 42; }\n")
    env = {**os.environ, "DISTCC_HOSTS": distcc.hosts_env((host,), 1), "DISTCC_FALLBACK": "1",
           "DISTCC_DIR": str(tmp_path / ".distcc"), "DISTCC_SKIP_LOCAL_RETRY": "1"}
    r = subprocess.run(["distcc", "gcc", "-c", str(src), "-o", str(tmp_path / "x.o")], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and (tmp_path / "x.o").is_file(), r.stderr
    deadline = time.monotonic() + 10
    while "COMPILE_OK" not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "COMPILE_OK" in log.read_text(errors="replace"), r.stderr[-3000:]
    assert distcc.fallbacks(r.stderr) == 0

    # The host drops: the object is still made, here, and the log says so.
    compile_host.kill()
    (tmp_path / "x.o").unlink()
    r = subprocess.run(["distcc", "gcc", "-c", str(src), "-o", str(tmp_path / "x.o")], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and (tmp_path / "x.o").is_file(), r.stderr
    assert distcc.fallbacks(r.stderr) == 1, r.stderr
    assert not _check_compile_hosts((f"{host.host}/2",))
    assert f"MISSING compile host {host.host}:3632: no distccd" in capsys.readouterr().out
