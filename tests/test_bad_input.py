"""Every command against a table of malformed files and values.

Each case runs the real command line (in this process, so that the whole
table takes seconds) and asserts what issue 24 asks of bad input: the exit
status of the contract (README: *Exit statuses*; 2 bad input, 3 the host's
failure, 242/243 for the commands that pass a guest command's status on),
exactly one line on stderr (log lines a terminal would show included) that
names the thing at fault, no traceback, and nothing that was there before
lost or changed. None of them gets as far as a kernel build or a VM boot:
that is the point of checking first.

The files: binary, empty, huge (sparse), a directory, a read-only mount and a
full one (small tmpfs mounts: skipped with the reason where mounting is not
allowed), wrong types, duplicate keys, negative and zero limits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.cli import main

pytestmark = pytest.mark.unit

BINARY = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8
CLOUD_KERNELS = sorted(Path("/boot").glob("vmlinuz-*"))


@dataclass(frozen=True)
class Mounts:
    ro: Path | None
    """A read-only tmpfs."""
    full: Path | None
    """A small tmpfs with no space left."""
    why: str = ""


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    res = proc.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], timeout=30, check=False)
    return res.returncode == 0


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounts]:
    base = tmp_path_factory.mktemp("mounts")
    ro, full = base / "ro", base / "full"
    made = []
    if os.geteuid() == 0 and _mount_tmpfs(ro, "size=64k,ro"):
        made.append(ro)
    if os.geteuid() == 0 and _mount_tmpfs(full, "size=64k"):
        made.append(full)
        with contextlib.suppress(OSError), (full / "filler").open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    why = "" if len(made) == 2 else "cannot mount a tmpfs here (needs root)"
    try:
        yield Mounts(ro if ro in made else None, full if full in made else None, why)
    finally:
        for m in made:
            proc.run(["umount", "-l", str(m)], timeout=30, check=False)



def _fake_bzimage() -> bytes:
    """The smallest file kvmlab takes for a bzImage: a setup header ("HdrS")
    whose version pointer names a release. It boots nothing, which is what
    these cases need: input checks run before any boot."""
    head = bytearray(0x400)
    head[0x202:0x206] = b"HdrS"
    head[0x20E:0x210] = (0x100).to_bytes(2, "little")
    version = b"6.1.0-fake (kvmlab@test) #1\0"
    head[0x300:0x300 + len(version)] = version
    return bytes(head)

@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The malformed files, and a few good ones the cases need."""
    w = tmp_path_factory.mktemp("ws")
    (w / "blob.bin").write_bytes(BINARY)
    (w / "blob.yaml").write_bytes(BINARY)
    (w / "blob.syz").write_bytes(BINARY)
    (w / "empty.txt").write_text("")
    with (w / "huge.yaml").open("wb") as f:
        f.truncate(100 << 20)  # sparse: 100 MiB of NULs, no disk used
    (w / "adir").mkdir()
    (w / "afile").write_text("a file, not a directory\n")
    (w / "kernel.bin").write_bytes(_fake_bzimage())
    (w / "notakernel.bin").write_bytes(b"not a bzImage but a file")
    (w / "repro.c").write_text("int main(void) { return 0; }\n")
    (w / "notes.txt").write_text("keep me\n")
    (w / "dup.yaml").write_text("vm:\n  count: 1\n  cpus: 1\n  count: 2\n")
    (w / "boot0.yaml").write_text("timeouts:\n  boot: 0\n")
    (w / "runtime.yaml").write_text("repro:\n  run_time: -1\n")
    (w / "cacheneg.yaml").write_text("cache:\n  max_size_gb: -1\n")
    (w / "wrongtype.yaml").write_text("kind: repro\nvms: {count: two}\n")
    (w / "badyaml.yaml").write_text("kind: repro\n  vms: [oops\n")
    (w / "kconfig").write_text("CONFIG_X=y\n")
    (w / "nokconfig").write_text("# just a comment\n")
    for name, files in {
        "bug-binconfig": {".config": BINARY, "title": b"WARNING in foo\n"},
        "bug-emptyconfig": {".config": b"", "title": b"WARNING in foo\n"},
        "bug-bintitle": {".config": b"CONFIG_X=y\n", "title": BINARY},
        "bug-emptytitle": {".config": b"CONFIG_X=y\n", "title": b"\n"},
    }.items():
        d = w / name
        d.mkdir()
        (d / "commit").write_text("0123456789ab\n")
        (d / "repro.c").write_text("int main(void) { return 0; }\n")
        for f, data in files.items():
            (d / f).write_bytes(data)
    start = {"kind": "start", "header": {"bad": "x"}, "t": 1.0}
    (w / "garbage.jsonl").write_text(json.dumps(start) + "\nthis is not json\n")
    (w / "binary.jsonl").write_bytes(BINARY + b"\n")
    (w / "repro-running").mkdir()
    (w / "repro-running" / "meta.json").write_text(json.dumps({"kind": "repro"}))
    (w / "repro-done").mkdir()
    (w / "repro-done" / "result.json").write_text(json.dumps({"runs": []}))
    # A tiny git history for the bisection's cases (they stop before any build).
    repo = w / "tree"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    proc.run(["git", "init", "-q", "-b", "master", str(repo)], timeout=30, env=env)
    for i in range(2):
        (repo / "f").write_text(f"{i}\n")
        proc.run(["git", "-C", str(repo), "add", "f"], timeout=30, env=env)
        proc.run(["git", "-C", str(repo), "commit", "-q", "-m", f"c{i}"], timeout=30, env=env)
    return w


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    status: int
    names: str
    """What the one stderr line must contain (formatted like argv)."""
    needs: str = ""
    """``ro``, ``full`` (a mount), ``cloud`` (an installed kernel)."""


def c(id: str, argv: str, status: int, names: str, needs: str = "") -> Case:
    return Case(id, tuple(argv.split()), status, names, needs)


REPRO = "repro --kernel {w}/kernel.bin --command true"
BUILD = "repro --tree {w}/tree --commit HEAD --command true"
BISECT = "bisect --tree {w}/tree --bad HEAD --good HEAD~1 --command true"
BOOT = "boot --kernel {w}/kernel.bin"
VMRUN = "vm run --kernel {w}/kernel.bin"

CASES = [
    # --- repro: config files
    c("repro-conf-binary", f"{REPRO} --conf {{w}}/blob.bin", 2, "--conf {w}/blob.bin: not a text file"),
    c("repro-conf-dir", f"{REPRO} --conf {{w}}/adir", 2, "--conf {w}/adir: a directory"),
    c("repro-conf-huge", f"{REPRO} --conf {{w}}/huge.yaml", 2, "huge.yaml: 100 MiB is too big"),
    c("repro-conf-missing", f"{REPRO} --conf {{w}}/nope.yaml", 2, "{w}/nope.yaml: no such file"),
    c("repro-conf-dup-key", f"{REPRO} --conf {{w}}/dup.yaml", 2, "key 'count' given twice"),
    c("repro-conf-boot-timeout-0", f"{REPRO} --conf {{w}}/boot0.yaml", 2, "boot: must be a positive"),
    c("repro-conf-run-time-neg", f"{REPRO} --conf {{w}}/runtime.yaml",
      2, "repro.run_time: must be a positive"),
    c("repro-conf-cache-neg", f"{REPRO} --conf {{w}}/cacheneg.yaml", 2, "cache.max_size_gb"),
    # --- repro: job files
    c("repro-job-binary", "repro --job {w}/blob.bin", 2, "job {w}/blob.bin: not a text file"),
    c("repro-job-dir", "repro --job {w}/adir", 2, "job {w}/adir: a directory"),
    c("repro-job-wrong-type", "repro --job {w}/wrongtype.yaml", 2, "vms.count: expected a whole number"),
    c("repro-job-bad-yaml", "repro --job {w}/badyaml.yaml", 2, "badyaml.yaml: not valid YAML"),
    c("repro-job-huge", "repro --job {w}/huge.yaml", 2, "too big"),
    # --- repro: kernel config and root
    c("repro-kconfig-binary", f"{BUILD} --kernel-config {{w}}/blob.bin",
      2, "--kernel-config {w}/blob.bin: not a text file"),
    c("repro-kconfig-empty", f"{BUILD} --kernel-config {{w}}/empty.txt",
      2, "--kernel-config {w}/empty.txt: empty"),
    c("repro-compiler-with-kernel", f"{REPRO} --compiler gcc-12", 2,
      "--compiler is for building a kernel"),
    c("repro-kconfig-with-kernel-not-syz", f"{REPRO} --kernel-config {{w}}/kconfig", 2,
      "is only read for a syz program's needs"),
    c("repro-kconfig-of-kernel-binary", f"{REPRO} --syz-prog {{w}}/kconfig --kernel-config {{w}}/blob.bin",
      2, "--kernel-config {w}/blob.bin: not a text file"),
    c("repro-root-binary-recipe", f"{REPRO} --root {{w}}/blob.yaml",
      2, "--root {w}/blob.yaml: not a text file"),
    # --- repro: limits
    c("repro-count-0", f"{REPRO} --count 0", 2, "--count 0: must be at least 1"),
    c("repro-count-neg", f"{REPRO} --count -1", 2, "--count -1"),
    c("repro-count-word", f"{REPRO} --count two", 2, "argument --count: invalid int value"),
    c("repro-run-time-0", f"{REPRO} --run-time 0", 2, "--run-time 0: must be a positive"),
    c("repro-run-time-neg", f"{REPRO} --run-time -1", 2, "--run-time -1"),
    c("repro-run-time-nan", f"{REPRO} --run-time nan", 2, "--run-time nan"),
    c("repro-cpus-0", f"{REPRO} --cpus 0", 2, "--cpus 0"),
    c("repro-memory-0", f"{REPRO} --memory 0", 2, "--memory '0'"),
    c("repro-memory-word", f"{REPRO} --memory-mb lots", 2, "--memory 'lots'"),
    c("repro-pool-200-vms-of-100000-mib", f"{REPRO} --count 200 --memory-mb 100000", 2, "this host"),
    c("repro-pool-bigger-than-host", f"{REPRO} --count 200 --memory 1G", 2, "more than this host's"),
    c("repro-vm-bigger-than-host", f"{REPRO} --memory 100000G", 2, "per VM: this host has"),
    # --- repro: inputs that are not there
    c("repro-kernel-missing", "repro --kernel {w}/nope --command true", 2, "--kernel {w}/nope: no such file"),
    c("repro-kernel-dir", "repro --kernel {w}/adir --command true", 2, "--kernel {w}/adir: a directory"),
    c("repro-kernel-not-bzimage", "repro --kernel {w}/notakernel.bin --command true", 2,
      "--kernel {w}/notakernel.bin: not a bootable x86 bzImage"),
    c("vmrun-kernel-not-bzimage", "vm run --kernel {w}/notakernel.bin -- true", 242,
      "--kernel {w}/notakernel.bin: not a bootable x86 bzImage"),
    c("repro-vmlinux-not-elf", f"{REPRO} --vmlinux {{w}}/afile", 2, "--vmlinux {w}/afile: not an ELF file"),
    c("bisect-tree-not-git", "bisect --tree {w}/adir --good v1 --bad v2 --command true", 2,
      "{w}/adir: not a git repository"),
    c("repro-c-missing", "repro --kernel {w}/kernel.bin {w}/nope.c",
      2, "reproducer {w}/nope.c: no such file"),
    c("repro-syz-binary", "repro --kernel {w}/kernel.bin --syz-prog {w}/blob.syz", 2,
      "--syz-prog {w}/blob.syz: not a text file"),
    c("repro-tree-missing", "repro --tree {w}/nope --commit HEAD --command true", 2, "--tree {w}/nope"),
    c("repro-expect-report-missing", f"{REPRO} --expect-report {{w}}/nope.log",
      2, "--expect-report {w}/nope.log"),
    c("repro-empty-command", "repro --kernel {w}/kernel.bin --command=", 2, "--command ''"),
    # --- repro: bug directories
    c("repro-bug-binary-config", "repro --tree {w}/tree --bug {w}/bug-binconfig", 2,
      "{w}/bug-binconfig/.config: not a text file"),
    c("repro-bug-empty-config", "repro --tree {w}/tree --bug {w}/bug-emptyconfig", 2, ".config: empty"),
    c("repro-bug-binary-title", "repro --tree {w}/tree --bug {w}/bug-bintitle", 2,
      "{w}/bug-bintitle/title: not a text file"),
    c("repro-bug-empty-title", "repro --tree {w}/tree --bug {w}/bug-emptytitle", 2, "title is empty"),
    # --- repro: outputs, checked before the run
    c("repro-workdir-ro", f"{REPRO} --workdir {{ro}}/w", 2, "--workdir {ro}/w: cannot write there", "ro"),
    c("repro-workdir-file", f"{REPRO} --workdir {{w}}/afile", 2, "--workdir {w}/afile"),
    c("repro-workdir-under-file", f"{REPRO} --workdir {{w}}/afile/sub", 2, "--workdir {w}/afile/sub"),
    c("repro-workdir-full", f"{REPRO} --workdir {{full}}/w", 3, "--workdir {full}/w: disk full", "full"),
    c("repro-json-ro", f"{REPRO} --json {{ro}}/r.json", 2, "--json {ro}/r.json: cannot write", "ro"),
    c("repro-json-dir", f"{REPRO} --json {{w}}/adir", 2, "--json {w}/adir: a directory"),
    c("repro-json-full", f"{REPRO} --json {{full}}/r.json", 3, "--json {full}/r.json: disk full", "full"),
    # --- bisect
    c("bisect-minimize-builds-neg", f"{BISECT} --minimize-builds -1", 2, "--minimize-builds -1: give 0"),
    c("bisect-minimize-builds-huge", f"{BISECT} --minimize-builds 1000", 2, "--minimize-builds 1000: give 0"),
    c("bisect-minimize-builds-word", f"{BISECT} --minimize-builds six", 2,
      "argument --minimize-builds: invalid int value"),
    c("bisect-journal-garbage", f"{BISECT} --journal {{w}}/garbage.jsonl", 2, "garbage.jsonl line 2"),
    c("bisect-journal-binary", f"{BISECT} --journal {{w}}/binary.jsonl", 2, "binary.jsonl line 1"),
    c("bisect-journal-dir", f"{BISECT} --journal {{w}}/adir", 2, "--journal {w}/adir: a directory"),
    c("bisect-journal-ro", f"{BISECT} --journal {{ro}}/j.jsonl", 2, "--journal {ro}/j.jsonl", "ro"),
    c("bisect-confidence", f"{BISECT} --confidence 1.5", 2, "--confidence 1.5"),
    c("bisect-json-ro", f"{BISECT} --json {{ro}}/b.json", 2, "--json {ro}/b.json", "ro"),
    c("bisect-kconfig-binary", f"{BISECT} --kernel-config {{w}}/blob.bin", 2, "--kernel-config {w}/blob.bin"),
    c("bisect-kconfig-not-a-config", f"{BISECT} --kernel-config {{w}}/nokconfig", 2, "no CONFIG_ option"),
    c("bisect-count-0", f"{BISECT} --count 0", 2, "--count 0"),
    c("bisect-tree-missing", "bisect --tree {w}/nope --bad HEAD --command true", 2, "--tree {w}/nope"),
    c("bisect-bad-unknown", "bisect --tree {w}/tree --bad nosuchrev --command true", 2, "nosuchrev"),
    c("bisect-workdir-full", f"{BISECT} --workdir {{full}}/b", 3, "--workdir {full}/b: disk full", "full"),
    c("bisect-job-binary", "bisect --job {w}/blob.bin", 2, "job {w}/blob.bin: not a text file"),
    # --- boot (passes a guest command's status on: kvmlab's own are 242, 243)
    c("boot-modules-missing", "boot --kernel {cloud} --modules /nonexistent/modules -- true", 242,
      "--modules /nonexistent/modules: no such directory", "cloud"),
    c("boot-repro-missing-dry-run", "boot --kernel {cloud} --repro {w}/nope.c --dry-run", 242,
      "--repro {w}/nope.c: no such file", "cloud"),
    c("boot-memory-mb-small", f"{BOOT} --memory-mb 32 -- true", 242, "--memory '32': at least 64 MiB"),
    c("boot-memory-huge", f"{BOOT} --memory 100000G -- true", 242, "per VM: this host has"),
    c("boot-timeout-0", f"{BOOT} --timeout 0 -- true", 242, "--timeout 0"),
    c("boot-timeout-neg", f"{BOOT} --timeout -5 -- true", 242, "--timeout -5"),
    c("boot-conf-binary", f"{BOOT} --conf {{w}}/blob.bin -- true",
      242, "--conf {w}/blob.bin: not a text file"),
    c("boot-conf-dup", f"{BOOT} --conf {{w}}/dup.yaml -- true", 242, "given twice"),
    c("boot-kernel-missing", "boot --kernel {w}/nope -- true", 242, "--kernel {w}/nope: no such file"),
    c("boot-cpus-0", f"{BOOT} --cpus 0 -- true", 242, "--cpus 0"),
    c("boot-cpus-word", f"{BOOT} --cpus x -- true", 242, "argument --cpus: invalid int value"),
    c("boot-job-binary", "boot --job {w}/blob.bin", 242, "job {w}/blob.bin: not a text file"),
    # --- vm run
    c("vm-run-count-0", f"{VMRUN} --count 0 -- true", 242, "--count 0"),
    c("vm-run-pool-bigger-than-host", f"{VMRUN} --count 200 --memory 1G -- true", 242,
      "more than this host's"),
    c("vm-run-workdir-ro", f"{VMRUN} --workdir {{ro}}/v -- true", 242, "--workdir {ro}/v", "ro"),
    c("vm-run-modules-missing", f"{VMRUN} --modules {{w}}/nope -- true", 242, "--modules {w}/nope"),
    c("vm-run-conf-dup", f"{VMRUN} --conf {{w}}/dup.yaml -- true", 242, "given twice"),
    # --- kernel build
    c("build-tree-missing", "kernel build --tree {w}/nope --commit HEAD", 2, "--tree {w}/nope"),
    c("build-jobs-0", "kernel build --tree {w}/tree --commit HEAD --jobs 0", 2, "--jobs 0"),
    c("build-kconfig-binary", "kernel build --tree {w}/tree --commit HEAD --kernel-config {w}/blob.bin", 2,
      "--kernel-config {w}/blob.bin"),
    c("build-output-ro", "kernel build --tree {w}/tree --commit HEAD -o {ro}/out",
      2, "--output {ro}/out", "ro"),
    c("build-conf-binary", "kernel build --tree {w}/tree --commit HEAD --conf {w}/blob.bin", 2,
      "--conf {w}/blob.bin"),
    # --- show
    c("show-repro-running", "show {w}/repro-running", 2, "a kvmlab repro workdir without its result.json"),
    c("show-not-a-workdir", "show {w}/adir", 2, "{w}/adir: not a kvmlab workdir"),
    c("show-missing", "show {w}/nope", 2, "{w}/nope"),
    c("show-output-ro", "show {w}/repro-done -o {ro}/r.html", 2, "-o {ro}/r.html: cannot write", "ro"),
    c("show-output-full", "show {w}/repro-done -o {full}/r.html", 3, "-o {full}/r.html: disk full", "full"),
    # --- report
    c("report-missing", "report {w}/nope.log", 2, "{w}/nope.log"),
    c("report-dir", "report {w}/adir", 2, "{w}/adir: a directory"),
    c("report-vmlinux-missing", "report --vmlinux {w}/nope {w}/notes.txt", 2, "--vmlinux {w}/nope"),
    # --- demo-tree, demo
    c("demo-tree-not-a-tarball", "demo-tree {w}/demo --tarball {w}/blob.bin", 2,
      "kernel source tarball {w}/blob.bin: not a tar archive"),
    c("demo-tree-no-source", "demo-tree {w}/demo --tarball {w}/nope.tar.xz",
      2, "{w}/nope.tar.xz: no such file"),
    c("demo-tree-dir-not-a-source", "demo-tree {w}/demo --tarball {w}/adir",
      2, "{w}/adir: a directory without"),
    c("demo-dir-ro", "demo --dir {ro}/d", 2, "--dir {ro}/d: cannot write", "ro"),
    c("demo-count-0", "demo --count 0", 2, "--count 0"),
    # --- doctor, image, cache
    c("doctor-kernel-missing", "doctor --kernel {w}/nope", 2, "--kernel {w}/nope: no such file"),
    c("doctor-kernel-not-bzimage", "doctor --kernel {w}/blob.bin",
      2, "--kernel {w}/blob.bin: not a bootable"),
    c("doctor-conf-binary", "doctor --conf {w}/blob.bin", 2, "config {w}/blob.bin: not a text file"),
    c("image-recipe-binary", "image build {w}/blob.yaml", 2, "image recipe {w}/blob.yaml: not a text file"),
    c("image-recipe-huge", "image build {w}/huge.yaml", 2, "too big"),
    c("cache-prune-size-word", "cache prune --max-size lots", 2, "size 'lots'"),
    c("cache-conf-dup", "cache --conf {w}/dup.yaml", 2, "given twice"),
]


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size < 1 << 20 else str(st.st_size)
            out[str(p)] = digest
    return out


def _shown_lines(err: str, records: list[logging.LogRecord]) -> list[str]:
    """What a terminal would show on stderr: the printed lines and the log
    lines the CLI's handler lets through (kvmlab's INFO and up, others' WARNING)."""
    logged = [r.getMessage() for r in records
              if r.levelno >= logging.WARNING or (r.name.startswith("kvmlab") and r.levelno >= logging.INFO)]
    return [ln for ln in err.splitlines() if ln.strip()] + logged


@pytest.mark.parametrize("case", CASES, ids=[k.id for k in CASES])
def test_bad_input_is_one_line_with_the_contracts_status(case: Case, ws: Path, mounts: Mounts,
                                                         capsys: pytest.CaptureFixture[str],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    if case.needs in ("ro", "full") and getattr(mounts, case.needs) is None:
        pytest.skip(mounts.why)
    if case.needs == "cloud" and not CLOUD_KERNELS:
        pytest.skip("no kernel in /boot to pass as --kernel")
    fmt = {"w": ws, "ro": mounts.ro, "full": mounts.full, "cloud": CLOUD_KERNELS[-1] if CLOUD_KERNELS else ""}
    argv = [a.format(**fmt) for a in case.argv]
    before = _snapshot(ws)
    caplog.set_level(logging.INFO)
    rc = main(argv)
    out, err = capsys.readouterr()
    lines = _shown_lines(err, caplog.records)
    assert "Traceback" not in out + err
    assert rc == case.status, f"{argv}: exit {rc}, stderr: {lines}"
    assert len(lines) == 1, f"{argv}: stderr is not one line: {lines}"
    assert case.names.format(**fmt) in lines[0], lines[0]
    assert _snapshot(ws) == before, "a case changed or removed files that were there before"


@pytest.mark.parametrize("subcommand", ["repro", "bisect", "boot", "vm run", "kernel build", "doctor",
                                        "show x", "report x", "demo-tree", "demo", "image build", "cache",
                                        "ps", "kill x", "kernel fragments", "image list"])
def test_a_usage_error_is_one_line_on_every_command(subcommand: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([*subcommand.split(), "--no-such-option"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == (242 if subcommand.startswith(("boot", "vm run")) else 2)
    assert len(err) == 1 and "unrecognized arguments: --no-such-option" in err[0], err


def test_report_into_a_closed_pipe_is_quiet(ws: Path) -> None:
    """``kvmlab report LOG | head -1``: no BrokenPipeError, no traceback."""
    log = Path(__file__).parent / "fixtures" / "report" / "kill-init.log"
    logs = " ".join([str(log)] * 50)
    script = f"set -o pipefail; {sys.executable} -m kvmlab.cli report {logs} | head -1"
    res = subprocess.run(["bash", "-c", script],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                         cwd=Path(__file__).parent.parent)
    assert res.stdout.count("\n") == 1
    assert res.stderr == "", res.stderr
    assert res.returncode in (0, 141), res.returncode  # 141: SIGPIPE's, as the contract says


def test_a_binary_job_file_from_a_real_process_is_one_line(ws: Path) -> None:
    """The same through the installed entry point: Python prints no traceback."""
    res = subprocess.run([sys.executable, "-m", "kvmlab.cli", "repro", "--job", str(ws / "blob.bin")],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                         cwd=Path(__file__).parent.parent)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"kvmlab: error: job {ws / 'blob.bin'}: not a text file: "
                                               "binary data (a NUL byte at offset 7)"]


def test_demo_bug_is_the_old_spelling_of_planted(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["demo", "--bug", "culprit", "--count", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == ["kvmlab: warning: demo --bug is now --planted (--bug names a bug directory in repro and "
                   "bisect)", "kvmlab: error: --count 0: must be at least 1"]
