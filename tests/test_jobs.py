"""Typed jobs: every kind round-trips through YAML and JSON, a job file and the
equivalent command line make the same job, the command line wins over a file,
and a malformed job file is one line naming the field and the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvmlab.cli import build_parser
from kvmlab.commands import boot as boot_cmd
from kvmlab.commands import kernel as kernel_cmd
from kvmlab.commands import repro as repro_cmd
from kvmlab.commands.bisect import bisect_fields
from kvmlab.commands.options import make_job
from kvmlab.errors import ConfigError
from kvmlab.jobs.model import (
    BisectJob,
    BootJob,
    BuildJob,
    BuildOptions,
    DemoJob,
    Job,
    ReproInput,
    ReproJob,
    VMOptions,
    VMRunJob,
    job_to_mapping,
    load_job,
)
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def _jobs(d: Path) -> list[Job]:
    return [
        ReproJob(tree=d / "linux", commit="v6.1", build=BuildOptions(config=("base", "kasan")),
                 reproducer=ReproInput(c=d / "repro.c"),
                 vms=VMOptions(count=4, run_time=30.0, cmdline=("a=1",)),
                 expect="KASAN: use-after-free Read in f", stop_when_decided=True, json=d / "out.json"),
        BisectJob(tree=d / "linux", bad="HEAD", good="v6.1", fix=True, policy="syzbot", confidence=0.99,
                  verify=False, build=BuildOptions(kernel_config=d / "syzbot.config", compiler="gcc-12"),
                  reproducer=ReproInput(syz_prog=d / "repro.syz", syz_dir=d / "syz", syz_opts=("procs=2",)),
                  bug=d / "bug", vms=VMOptions(backend="libvirt", accel="tcg", memory_mb=512)),
        DemoJob(dir=d / "demo", planted="flaky_culprit", bisect=BisectJob(vms=VMOptions(count=3))),
        BootJob(tree=d / "linux", commit="v6.1", shares=(f"{d}:/mnt",), gdb=True, vms=VMOptions(cpus=4),
                command=("sh", "-c", 'echo "a  b"; exit 4'), timeout=30.0),
        BuildJob(tree=d / "linux", commit="HEAD", build=BuildOptions(config=("base",)), jobs=2),
        VMRunJob(kernel=d / "bzImage", vms=VMOptions(count=2, root="bookworm"), command=("uname", "-r")),
    ]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_every_kind_round_trips_through_a_file(tmp_path: Path, fmt: str) -> None:
    for job in _jobs(tmp_path):
        path = tmp_path / f"{job.KIND}.{fmt}"
        data = job_to_mapping(job)
        path.write_text(yaml.safe_dump(data) if fmt == "yaml" else json.dumps(data))
        assert load_job(path) == job, job.KIND
        assert load_job(path, kind=job.KIND) == job


def test_relative_paths_in_a_job_file_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    f = tmp_path / "jobs" / "r.yaml"
    f.write_text("kind: repro\nkernel: ../k/bzImage\nreproducer: {c: repro.c}\n")
    job = load_job(f)
    assert isinstance(job, ReproJob)
    assert job.kernel == tmp_path / "k" / "bzImage" and job.reproducer.c == tmp_path / "jobs" / "repro.c"


def _cli_job(argv: list[str], monkeypatch: pytest.MonkeyPatch, cwd: Path) -> Job:
    monkeypatch.chdir(cwd)
    args = build_parser().parse_args(argv)
    translate: dict[str, Any] = {
        "repro": repro_cmd.job_from_args, "boot": boot_cmd.job_from_args, "kernel": kernel_cmd.build_job,
        "bisect": lambda a: make_job("bisect", bisect_fields(a), a.job),
    }
    if argv[0] == "vm":
        words = [w for w in args.command if w != "--"]
        fields: dict[str, Any] = {"kernel": str(args.kernel), "command": words,
                                  "vms": {"count": args.count}}
        return make_job("vm-run", fields, args.job)
    return translate[argv[0]](args)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("argv", "text"), [
    (["repro", "--tree", "linux", "--commit", "v6.1", "--config", "base,kasan", "--count", "4",
      "--run-time", "30", "--stop-when-decided", "--expect", "WARNING in f", "repro.c"],
     "kind: repro\ntree: linux\ncommit: v6.1\nbuild: {config: [base, kasan]}\nreproducer: {c: repro.c}\n"
     "vms: {count: 4, run_time: 30}\nstop_when_decided: true\nexpect: WARNING in f\n"),
    (["bisect", "--tree", "linux", "--bad", "HEAD", "--good", "v6.1", "--policy", "syzbot", "--no-verify",
      "--syz-prog", "r.syz", "--syz-dir", "syz", "--syz-opt", "procs=2", "--kernel-config", "c.config",
      "--minimize-builds", "3"],
     "kind: bisect\ntree: linux\nbad: HEAD\ngood: v6.1\npolicy: syzbot\nverify: false\n"
     "reproducer: {syz_prog: r.syz, syz_dir: syz, syz_opts: [procs=2]}\n"
     "build: {kernel_config: c.config, minimize_builds: 3}\n"),
    (["boot", "--tree", "linux", "v6.1", "--cpus", "4", "--memory", "2G", "--gdb", "--share", "/srv:/mnt",
      "--", "sh", "-c", "echo hi"],
     "kind: boot\ntree: linux\ncommit: v6.1\nvms: {cpus: 4, memory_mb: 2048}\ngdb: true\n"
     "shares: ['/srv:/mnt']\ncommand: [sh, -c, echo hi]\n"),
    (["kernel", "build", "--tree", "linux", "--commit", "HEAD", "--config", "base,nodwarf", "-j", "2"],
     "kind: build\ntree: linux\ncommit: HEAD\nbuild: {config: [base, nodwarf]}\njobs: 2\n"),
    (["vm", "run", "--kernel", "bzImage", "--count", "2", "--", "uname", "-r"],
     "kind: vm-run\nkernel: bzImage\nvms: {count: 2}\ncommand: [uname, -r]\n"),
])
def test_a_job_file_and_the_equivalent_command_line_make_the_same_job(
        argv: list[str], text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "job.yaml"
    f.write_text(text)
    from_cli = _cli_job(argv, monkeypatch, tmp_path)
    from_file = load_job(f)
    assert from_cli == from_file
    # And the job the command line makes, written out, is that job again.
    out = tmp_path / "again.json"
    out.write_text(json.dumps(job_to_mapping(from_cli)))
    assert load_job(out) == from_cli


def test_the_command_line_wins_over_the_job_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "job.yaml"
    f.write_text("kind: repro\nkernel: k/bzImage\nreproducer: {command: 'true'}\n"
                 "vms: {count: 4, run_time: 30}\n")
    job = _cli_job(["repro", "--job", str(f), "--count", "1"], monkeypatch, tmp_path)
    assert isinstance(job, ReproJob)
    assert job.vms.count == 1 and job.vms.run_time == 30.0 and job.reproducer.command == "true"
    assert job.kernel == tmp_path / "k" / "bzImage"


def test_a_short_commit_id_that_yaml_reads_as_a_number_says_quote_it(tmp_path: Path) -> None:
    f = tmp_path / "job.yaml"
    f.write_text("kind: bisect\ntree: /tmp\nbad: 1234567\n")
    with pytest.raises(ConfigError, match=r"job\.yaml\.bad: expected a string, got 1234567 \(YAML read it "
                                          r"as a number or a boolean: quote it\)"):
        load_job(f, kind="bisect")
    f.write_text("kind: bisect\ntree: /tmp\nbad: '1234567'\n")
    job = load_job(f, kind="bisect")
    assert isinstance(job, BisectJob) and job.bad == "1234567"


@pytest.mark.parametrize(("content", "message"), [
    ("kind: repro\nkernal: /boot/vmlinuz\n", r"job .*job\.yaml: unknown key 'kernal'"),
    ("kind: repro\nvms: {count: two}\n", r"job .*job\.yaml\.vms\.count: expected a whole number, got 'two'"),
    ("kind: repro\nvms: {run_time: [1]}\n", r"job .*job\.yaml\.vms\.run_time: expected a number"),
    ("kind: repro\nreproducer: {c: 3}\n", r"job .*job\.yaml\.reproducer\.c: expected a path, got 3"),
    ("kind: repro\nstop_when_decided: maybe\n", r"\.stop_when_decided: expected true or false"),
    ("kind: repro\nbuild: {minimize_builds: six}\n", r"\.build\.minimize_builds: expected a whole number"),
    ("kind: bisect\n", r"job .*job\.yaml: a bisect job, not a repro job"),
    ("kind: nonsense\n", r"job .*job\.yaml\.kind: 'nonsense' is not one of"),
    ("- a\n- list\n", r"job .*job\.yaml: the top level must be a mapping"),
    ("kind: repro\n  bad: [indent\n", r"job .*job\.yaml: not valid YAML"),
    (b"\x7fELF\x02\x01\x01\x00\xff\xfe", r"job .*job\.yaml: not a text file"),
])
def test_a_malformed_job_file_is_one_line_naming_the_field(tmp_path: Path, content: str | bytes,
                                                            message: str) -> None:
    f = tmp_path / "job.yaml"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_job(f, kind="repro")
    res = subprocess.run([sys.executable, "-m", "kvmlab.cli", "repro", "--job", str(f)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvmlab: error: job ") and str(f) in lines[0], res.stderr


def test_a_job_file_that_is_missing_or_a_directory_is_one_line(tmp_path: Path) -> None:
    for path, message in ((tmp_path / "none.yaml", "no such file"), (tmp_path, "a directory")):
        res = subprocess.run([sys.executable, "-m", "kvmlab.cli", "bisect", "--job", str(path)], cwd=REPO,
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip() == f"kvmlab: error: job {path}: {message}" + (
            ", not a file" if message == "a directory" else ""), res.stderr


def test_every_job_that_builds_gets_the_users_fragments_and_compile_hosts(tmp_path: Path) -> None:
    # One constructor for kvmlab's builders: `boot --tree` once built without
    # the config's fragments dir and compile hosts while the others had them.
    import shutil

    from kvmlab.config import load_config
    from kvmlab.jobs import inputs
    from kvmlab.jobs.model import BuildOptions

    frags = tmp_path / "frags"
    frags.mkdir()
    (frags / "mine.config").write_text("CONFIG_X=y\n")
    hosts = ["lab1/8"] if shutil.which("distcc") else []
    conf = tmp_path / "kvmlab.yaml"
    conf.write_text(yaml.safe_dump({"kernel": {"fragments_dir": str(frags), "distcc_hosts": hosts}}))
    builder = inputs.kernel_builder(load_config(conf), BuildOptions(compiler="gcc"), work_dir=tmp_path / "w")
    assert builder.fragment_dirs[0] == frags
    assert builder.compiler_override == "gcc"
    assert [(h.host, h.slots) for h in builder.distcc_hosts] == [("lab1", 8)] * len(hosts)
    for module in ("boot", "bisection", "build", "reproduction"):
        source = (REPO / "kvmlab" / "jobs" / f"{module}.py").read_text()
        assert "KernelBuilder(" not in source, f"jobs/{module}.py makes its own KernelBuilder"
