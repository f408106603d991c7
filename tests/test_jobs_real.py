"""Each job kind run for real from a YAML job file and from the equivalent
command line, with the same result: a kernel build, a reproduction (a crash
with its title) and a boot session's command. (The bisection's is in
tests/test_demo_e2e.py: the job file's run finds the command line's journal.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kvmlab.kernel.builder import KernelBuilder
from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.outcome import BuildOutcome
from tests.fixtures_boot import RunKvmlab
from tests.fixtures_kernel import TEST_CONFIG, BuildKernel

pytestmark = [pytest.mark.kernel, pytest.mark.vm]


def _job(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_build_job_from_a_file_and_the_command_line(base_kernel: BuildOutcome, demo_tree: DemoTree,
                                                      kernel_builder: KernelBuilder, kvmlab_cli: RunKvmlab,
                                                      tmp_path: Path) -> None:
    argv = ["kernel", "build", "--tree", demo_tree.path, "--commit", "v6.1",
            "--config", ",".join(TEST_CONFIG), "--work-dir", kernel_builder.work_dir]
    cli = kvmlab_cli(*argv)
    job = _job(tmp_path / "build.yaml", {"kind": "build", "tree": str(demo_tree.path), "commit": "v6.1",
                                        "build": {"config": list(TEST_CONFIG)},
                                        "work_dir": str(kernel_builder.work_dir)})
    from_file = kvmlab_cli("kernel", "build", "--job", job)
    assert cli.returncode == from_file.returncode == 0, cli.stderr + from_file.stderr
    assert cli.stdout == from_file.stdout and "ok (cached)" in cli.stdout
    assert base_kernel.artifacts["bzImage"] in cli.stdout


def test_repro_job_from_a_file_and_the_command_line(demo_tree: DemoTree, build_kernel: BuildKernel,
                                                      kvmlab_cli: RunKvmlab, tmp_path: Path) -> None:
    """The demo's planted bug (a crash on every run): the same runs, titles and rate."""
    kernel = build_kernel(demo_tree.culprit).artifacts["bzImage"]
    repro = demo_tree.reproducers["culprit"]
    cli = kvmlab_cli("repro", "--kernel", kernel, repro, "--count", "1", "--run-time", "10",
                     "--accel", "tcg", "--cpus", "1", "--memory-mb", "512", "--workdir", tmp_path / "a",
                     "--json", tmp_path / "a.json")
    job = _job(tmp_path / "repro.yaml", {
        "kind": "repro", "kernel": kernel, "reproducer": {"c": repro},
        "vms": {"count": 1, "run_time": 10, "accel": "tcg", "cpus": 1, "memory_mb": 512},
        "workdir": str(tmp_path / "b"), "json": str(tmp_path / "b.json")})
    from_file = kvmlab_cli("repro", "--job", job)
    assert cli.returncode == from_file.returncode == 0, cli.stderr + from_file.stderr
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert [(r["status"], r["title"]) for r in a["runs"]] == [(r["status"], r["title"]) for r in b["runs"]]
    assert a["runs"][0]["status"] == "crashed", a["runs"]
    assert "comm_digest_compute" in a["runs"][0]["title"], a["runs"]
    assert a["crash_rate"] == b["crash_rate"] == 1.0


def test_boot_job_from_a_file_and_the_command_line(base_kernel: BuildOutcome, kvmlab_cli: RunKvmlab,
                                                     tmp_path: Path) -> None:
    """The guest command's output and status, its words' quoting kept."""
    kernel = base_kernel.artifacts["bzImage"]
    words = ["sh", "-c", 'echo "a  b"; uname -r; exit 4']
    cli = kvmlab_cli("boot", "--kernel", kernel, "--accel", "tcg", "--name", "cli", "--", *words)
    job = _job(tmp_path / "boot.yaml", {"kind": "boot", "kernel": kernel, "vms": {"accel": "tcg"},
                                       "name": "file", "command": words})
    from_file = kvmlab_cli("boot", "--job", job)
    assert cli.returncode == from_file.returncode == 4, cli.stderr + from_file.stderr
    assert cli.stdout == from_file.stdout
    assert cli.stdout.splitlines()[0] == "a  b"
