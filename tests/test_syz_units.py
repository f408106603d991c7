"""syzkaller programs and syzbot bug directories: the pure parts (options
lines, flags, kernel needs, program checks, output reading, bug directory
checks) and the checks made with the real syz-execprog before anything boots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmlab.cli import main
from kvmlab.errors import UserError
from kvmlab.outcome import RunOutcome, RunStatus
from kvmlab.repro import bugdir, syz
from kvmlab.repro.reproducer import SyzProgram
from kvmlab.repro.runner import (
    MissingKernelOptionError,
    ReproResult,
    check_kernel_needs,
    run_line,
    summary_lines,
)

pytestmark = pytest.mark.unit



def _syz_dir() -> Path:
    """The real syzkaller binaries and syzbot configs: $KVMLAB_SYZ_DIR, else
    ../shared/syzkaller from the project root (see its README.md), else the
    same from the main checkout's place on these machines."""
    if os.environ.get("KVMLAB_SYZ_DIR"):
        return Path(os.environ["KVMLAB_SYZ_DIR"])
    for d in (Path(__file__).resolve().parents[1].parent / "shared" / "syzkaller",
              Path("/work/shared/syzkaller")):
        if d.is_dir():
            return d
    return Path("/work/shared/syzkaller")


SYZ_DIR = _syz_dir()
HAVE_SYZ = (SYZ_DIR / "syz-execprog").is_file() and (SYZ_DIR / "syz-executor").is_file()
needs_syz = pytest.mark.skipif(not HAVE_SYZ, reason=f"no syzkaller binaries in {SYZ_DIR}")

# Options lines as syzkaller writes them (the same options in each spelling).
JSON_LINE = ('#{"threaded":true,"repeat":true,"procs":6,"slowdown":1,"sandbox":"none","sandbox_arg":0,'
             '"tun":true,"netdev":true,"resetnet":true,"cgroups":true,"binfmt_misc":true,"close_fds":true,'
             '"usb":true,"vhci":true,"wifi":true,"ieee802154":true,"sysctl":true,"swap":true,"tmpdir":true,'
             '"segv":true}')
GO_LINE = ("# {Threaded:true Repeat:true RepeatTimes:0 Procs:6 Slowdown:1 Sandbox:none SandboxArg:0 "
           "Leak:false NetInjection:true NetDevices:true NetReset:true Cgroups:true BinfmtMisc:true "
           "CloseFDs:true KCSAN:false DevlinkPCI:false NicVF:false USB:true VhciInjection:true Wifi:true "
           "IEEE802154:true Sysctl:true Swap:true UseTmpDir:true HandleSegv:true Trace:false "
           "LegacyOptions:{Collide:false Fault:false FaultCall:0 FaultNth:0}}")
LEGACY_LINE = ("#{Threaded:true Collide:true Repeat:true Procs:8 Sandbox:namespace Fault:false FaultCall:-1 "
               "FaultNth:0 EnableTun:true UseTmpDir:true EnableCgroups:false HandleSegv:true WaitRepeat:true "
               "Debug:false Repro:false}")


def test_the_three_spellings_of_the_options_line() -> None:
    js = syz.parse_options_line(JSON_LINE)
    go = syz.parse_options_line(GO_LINE)
    assert (js.spelling, go.spelling) == ("json", "go")
    for name in ("Threaded", "Repeat", "NetInjection", "Cgroups", "Wifi", "Swap", "UseTmpDir"):
        assert js.on(name) and go.on(name), name
    assert js.get("Procs", 0) == go.get("Procs", 0) == 6
    assert js.get("Sandbox", "") == go.get("Sandbox", "") == "none"
    assert syz.execprog_flags(js) == syz.execprog_flags(go) == {
        "sandbox": "none", "procs": "6", "repeat": "0", "threaded": "true", "cover": "false",
        "enable": "binfmt_misc,cgroups,close_fds,ieee802154,net_dev,net_reset,swap,sysctl,tun,usb,vhci,wifi",
    }
    old = syz.parse_options_line(LEGACY_LINE)
    assert old.spelling == "legacy"
    assert old.on("NetInjection") and not old.on("Cgroups") and old.on("Collide")
    assert syz.execprog_flags(old) == {"sandbox": "namespace", "procs": "8", "repeat": "0",
                                       "threaded": "true", "cover": "false", "enable": "tun"}
    # Go's %+v leaves an empty sandbox as "Sandbox: SandboxArg:0": syzbot runs it as none.
    empty = syz.parse_options_line("# {Threaded:false Repeat:false Procs:1 Sandbox: SandboxArg:0}")
    assert syz.execprog_flags(empty)["sandbox"] == "none" and syz.execprog_flags(empty)["enable"] == ""


def test_bad_options_lines_are_one_clear_error() -> None:
    with pytest.raises(syz.SyzProgramError, match=r"p:3: option Procs has a bad value 'six'"):
        syz.find_options("# https://syzkaller.appspot.com/bug?id=1\n#\n# {Threaded:true Procs:six}\n"
                         "r0 = getpid()\n", where="p")
    with pytest.raises(syz.SyzProgramError, match=r"unknown sandbox 'sandbag'"):
        syz.parse_options_line('#{"sandbox":"sandbag"}')
    with pytest.raises(syz.SyzProgramError, match="not valid JSON"):
        syz.parse_options_line('#{"threaded":tru}')
    # No options line at all: nothing enabled, run as syzbot would.
    assert syz.find_options("getpid()\n").spelling == "none"


def test_command_line_options_win_and_enable_disable_exclude_each_other() -> None:
    flags = syz.execprog_flags(syz.parse_options_line(GO_LINE))
    merged = syz.merge_flags(flags, syz.parse_overrides(["procs=2", "-disable=wifi,usb"]))
    assert merged["procs"] == "2" and "enable" not in merged and merged["disable"] == "wifi,usb"
    assert "wifi" not in syz.enabled_features(merged) and "tun" in syz.enabled_features(merged)
    assert syz.enabled_features({"enable": ""}) == set()
    assert syz.enabled_features({}) == set(syz.ALL_FEATURES)  # syz-execprog's default: all
    with pytest.raises(UserError, match="unknown feature 'tunn'"):
        syz.enabled_features({"enable": "tunn"})
    with pytest.raises(UserError, match="expected K=V"):
        syz.parse_overrides(["procs"])


def test_kernel_needs_follow_the_flags_and_are_checked_against_a_config(tmp_path: Path) -> None:
    flags = syz.execprog_flags(syz.parse_options_line(LEGACY_LINE))  # namespace sandbox, tun
    needs = syz.kernel_needs(flags, "r0 = openat(0x0, 0x0, 0x0, 0x0) (fail_nth: 3)\n")
    opts = [n.option for n in needs]
    assert opts == ["CONFIG_NET_NS", "CONFIG_USER_NS", "CONFIG_TUN", "CONFIG_FAULT_INJECTION",
                    "CONFIG_FAILSLAB"]
    have = {"CONFIG_NET_NS": "y", "CONFIG_USER_NS": "y", "CONFIG_TUN": "m", "CONFIG_FAULT_INJECTION": "y"}
    missing = syz.missing_needs(needs, have)
    assert [n.option for n in missing] == ["CONFIG_FAILSLAB"]
    line = syz.describe_missing(missing, "k.config")
    assert "CONFIG_FAILSLAB (for fault injection (fail_nth) in the program)" in line and "\n" not in line

    # Through the runner: refused before any VM is made.
    from kvmlab.repro.reproducer import StagedRepro

    config = tmp_path / ".config"
    config.write_text("CONFIG_NET_NS=y\n# CONFIG_TUN is not set\n")
    prepared = StagedRepro((), "true", "syz", kind="syz",
                        kernel_needs=tuple(syz.kernel_needs({"enable": "tun,cgroups", "sandbox": "none"})))
    with pytest.raises(MissingKernelOptionError,
                       match=r"needs CONFIG_CGROUPS \(for feature cgroups\), "
                             r"CONFIG_TUN \(for feature tun\), not set"):
        check_kernel_needs(prepared, config)
    config.write_text("CONFIG_NET_NS=y\nCONFIG_TUN=y\nCONFIG_CGROUPS=y\n")
    check_kernel_needs(prepared, config)


def test_the_shipped_syzkaller_fragment_meets_what_it_promises() -> None:
    from kvmlab.kernel.config import load_fragment

    frag = load_fragment("syzkaller").options
    base = load_fragment("base").options
    for feat in ("tun", "cgroups", "binfmt_misc", "net_reset", "sysctl", "swap"):
        for o in syz.FEATURE_NEEDS[feat]:
            assert frag.get(o) == "y", (feat, o)
    for o in (*syz.ALWAYS_NEEDED, *syz.SANDBOX_NEEDS["namespace"]):
        assert frag.get(o) == "y", o
    # The executor itself runs on every kvmlab kernel: base has what it opens.
    for o in syz.ALWAYS_NEEDED:
        assert base.get(o) == "y", o


def test_program_lines_are_calls() -> None:
    text = ("# a comment\n"
            "r0 = openat(0xffffffffffffff9c, &(0x7f0000000000)='./file0\\x00', 0x42, 0x0)\n"
            "write$binfmt_script(r0, &(0x7f0000000040)={'#! ', './file0', [{0x20, ')('}]}, 0x10)\n"
            "prctl$auto(0x41, 0x0, 0x0, 0x0, 0x0) (fail_nth: 2)\n")
    assert syz.program_calls(text) == ["openat", "write$binfmt_script", "prctl$auto"]
    with pytest.raises(syz.SyzProgramError, match=r"p:2: not a syzkaller call: 'this is junk'"):
        syz.program_calls("getpid()\nthis is junk\n", where="p")
    with pytest.raises(syz.SyzProgramError, match=r"p:1: not a syzkaller call"):
        syz.program_calls("close(r0\n", where="p")
    with pytest.raises(syz.SyzProgramError, match="no syzkaller calls"):
        syz.program_calls("# only a comment\n\n", where="p")


def test_reading_syz_execprog_output() -> None:
    ok = "2026/11/26 14:35:32 parsed 1 programs\n2026/11/26 14:35:53 executed programs: 67\n"
    assert syz.execprog_failure(ok, None) is None
    assert syz.execprog_failure(ok, 0) is None
    fail = ok + "SYZFAIL: open(/proc/self/ns/net) failed\n (errno 2: No such file or directory)\n"
    assert syz.execprog_failure(fail, None) == \
        "SYZFAIL: open(/proc/self/ns/net) failed (errno 2: No such file or directory)"
    # With -debug (kvmlab's second look when syz-execprog failed silently).
    debug = ("proc 2: got output: SYZFAIL: open(/proc/self/ns/net) failed\n"
             "proc 2: got output:  (errno 2: No such file or directory)\n")
    assert syz.execprog_failure(debug, 0) == \
        "SYZFAIL: open(/proc/self/ns/net) failed (errno 2: No such file or directory)"
    assert syz.execprog_failure("parsed 0 programs\nusage: execprog [flags]\n", 1) == \
        "syz-execprog parsed no program from the file"
    assert syz.execprog_failure("kvmlab: guest lacks /dev/net/tun (CONFIG_TUN)\n", 97) == \
        "kvmlab: guest lacks /dev/net/tun (CONFIG_TUN)"
    assert syz.execprog_failure("sh: ./syz-execprog: not found\n", 127) == \
        "syz-execprog exited with status 127: sh: ./syz-execprog: not found"


def test_run_lines_for_runs_that_could_not_run_or_exited_early() -> None:
    failed = RunOutcome(0, RunStatus.REPRO_FAILED, detail="SYZFAIL: open(/proc/self/ns/net) failed",
                        repro_log="/w/vm-0/repro.log")
    early = RunOutcome(1, RunStatus.OK, detail="the reproducer exited after 0.4s with status 0",
                       repro_log="/w/vm-1/repro.log")
    assert run_line(failed) == "run #0: reproducer failed: SYZFAIL: open(/proc/self/ns/net) failed"
    assert run_line(early) == "run #1: OK"
    lines = summary_lines(ReproResult([failed, early], [None, None]))
    assert ("  run #0: the reproducer could not run: SYZFAIL: open(/proc/self/ns/net) failed "
            "(output: /w/vm-0/repro.log)") in lines
    assert "  run #1: the reproducer exited after 0.4s with status 0 (output: /w/vm-1/repro.log)" in lines
    assert RunOutcome.from_json(failed.to_json()) == failed


def test_elf_checks(tmp_path: Path) -> None:
    script = tmp_path / "syz-execprog"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    real = Path("/bin/true")
    with pytest.raises(syz.SyzBinaryError, match=r"syz-execprog .*: not an ELF binary"):
        syz.check_binaries(script, real)
    with pytest.raises(syz.SyzBinaryError, match=r"syz-executor .*/nope: no such file"):
        syz.check_binaries(real, tmp_path / "nope")
    noexec = tmp_path / "syz-executor"
    noexec.write_bytes(real.read_bytes())
    noexec.chmod(0o644)
    with pytest.raises(syz.SyzBinaryError, match="not executable"):
        syz.check_binaries(real, noexec)
    arm = tmp_path / "arm"
    data = bytearray(real.read_bytes()[:4096])
    data[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    arm.write_bytes(bytes(data))
    arm.chmod(0o755)
    with pytest.raises(syz.SyzBinaryError,
                       match=r"built for ELF machine 183 \(64-bit\), the guests are x86-64"):
        syz.check_binaries(arm, real)
    bins = syz.check_binaries(real, real)
    assert bins.interpreters == ("/lib64/ld-linux-x86-64.so.2",)
    (tmp_path / "empty").mkdir()
    with pytest.raises(syz.SyzBinaryError, match="no syz-execprog or syz-executor in it"):
        syz.find_binaries(tmp_path / "empty")
    with pytest.raises(syz.SyzBinaryError, match="no such directory"):
        syz.find_binaries(tmp_path / "none")


@needs_syz
def test_bad_programs_are_refused_before_boot_by_the_real_syz_execprog(tmp_path: Path) -> None:
    good = tmp_path / "good.syz"
    good.write_text(f"{GO_LINE}\nprctl$auto(0x41, 0x0, 0x0, 0x0, 0x0)\n")
    prepared = SyzProgram(good, SYZ_DIR / "syz-execprog", SYZ_DIR / "syz-executor").prepare(tmp_path / "w")
    assert prepared.kind == "syz" and prepared.command == "sh /tmp/kvmlab-repro/run-syz.sh"
    script = (tmp_path / "w" / "run-syz.sh").read_text()
    assert "exec ./syz-execprog -executor=/tmp/kvmlab-repro/syz-executor -cover=false" in script
    assert "-procs=6 -repeat=0 -sandbox=none -threaded=true \"$@\" prog" in script
    assert "[ -e /dev/net/tun ]" in script
    unknown = tmp_path / "unknown.syz"
    unknown.write_text("prctl$no_such_variant(0x41, 0x0)\n")
    with pytest.raises(syz.SyzProgramError, match=r"unknown syzkaller call 'prctl\$no_such_variant'"):
        SyzProgram(unknown, SYZ_DIR / "syz-execprog", SYZ_DIR / "syz-executor").prepare(tmp_path / "u")
    # Through the CLI: one line, exit 2, nothing built or booted.
    junk = tmp_path / "junk.syz"
    junk.write_text("getpid()\nthis is junk\n")
    rc = main(["repro", "--kernel", str(tmp_path / "no-bzImage"), "--syz-prog", str(junk),
               "--syz-dir", str(SYZ_DIR), "--workdir", str(tmp_path / "cli")])
    assert rc == 2
    assert not list((tmp_path / "cli").glob("vm-*"))


def _bug(tmp_path: Path, **files: str) -> Path:
    d = tmp_path / "bug"
    d.mkdir(parents=True, exist_ok=True)
    defaults = {"title": "KASAN: use-after-free Read in comm_digest_compute\n", "commit": "fba1e41a7968\n",
                ".config": "CONFIG_KASAN=y\n", "repro.syz": "prctl$auto(0x41, 0x0, 0x0, 0x0, 0x0)\n"}
    for name, text in {**defaults, **files}.items():
        if text:
            (d / name).write_text(text)
        else:
            (d / name).unlink(missing_ok=True)
    return d


def test_bug_directory_pieces_and_contradictions(tmp_path: Path) -> None:
    d = _bug(tmp_path, tree="https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git  linux-6.1.y\n",
             cmdline="panic_on_warn=1 kasan.fault=panic\n")
    bug = bugdir.load(d)
    assert bug.title == "KASAN: use-after-free Read in comm_digest_compute"
    assert bug.commit == "fba1e41a7968" and bug.config == d / ".config" and bug.repro_c is None
    assert bug.cmdline == ("panic_on_warn=1", "kasan.fault=panic")
    assert bug.tree.endswith("linux.git linux-6.1.y")
    for files, message in (
        ({".config": ""}, r"no kernel config \(.config\)"),
        ({"repro.syz": ""}, r"no reproducer \(repro.syz or repro.c\)"),
        ({"commit": ""}, "no commit file"),
        ({"commit": "v6.1\n"}, "commit: 'v6.1' is not a commit hash"),
        ({"commit": "fba1e41a79685f614414 4c4d0aaa74e0bdec3175\n"}, "names more than one commit"),
        ({"config": "CONFIG_KASAN=n\n"}, ".config and config are two different kernel configs"),
        ({"title": "", "console.log": "nothing crashed\n"},
         "no title file, and no crash found in console.log"),
        ({"title": ""}, "no title"),
        ({"console.log": "[   1.0] BUG: kernel NULL pointer dereference, address: 0000000000000000\n"
                         "[   1.0] #PF: supervisor read access in kernel mode\n"},
         "title says 'KASAN: use-after-free Read in comm_digest_compute' but the crash in console.log is"),
    ):
        d = _bug(tmp_path / f"case{len(message)}-{len(files)}-{sorted(files)[0]}", **files)
        with pytest.raises(bugdir.BugDirError, match=message):
            bugdir.load(d)
    with pytest.raises(bugdir.BugDirError, match="no such directory"):
        bugdir.load(tmp_path / "nowhere")


def test_bug_directory_fills_the_job_and_what_the_job_gives_wins(tmp_path: Path) -> None:
    from kvmlab.jobs.inputs import settings, with_bug
    from kvmlab.jobs.model import ReproJob
    from tests.test_bisect import git

    tree = tmp_path / "tree"
    tree.mkdir()
    git(tree, "init", "-q")
    (tree / "f").write_text("x")
    git(tree, "add", "f")
    git(tree, "commit", "-q", "-m", "one")
    head = git(tree, "rev-parse", "HEAD")
    d = _bug(tmp_path, commit=head + "\n", cmdline="panic_on_warn=1\n")

    def quiet(_line: str) -> None:
        pass

    job = with_bug(ReproJob(tree=tree, bug=d), say=quiet)
    assert job.commit == head and job.build.kernel_config == d / ".config"
    assert job.reproducer.syz_prog == d / "repro.syz"
    assert job.expect == "KASAN: use-after-free Read in comm_digest_compute"
    assert job.vms.cmdline == ("panic_on_warn=1",)
    assert settings(job.vms).vm.cmdline[-1] == "panic_on_warn=1"
    job = with_bug(ReproJob(tree=tree, bug=d, expect="WARNING in foo", commit="HEAD"), say=quiet)
    assert job.expect == "WARNING in foo" and job.commit == "HEAD"
    # Both reproducers and no syz binaries: the C one, said so.
    (d / "repro.c").write_text("int main(void) { return 0; }\n")
    said: list[str] = []
    job = with_bug(ReproJob(tree=tree, bug=d), say=said.append)
    assert job.reproducer.c == d / "repro.c" and job.reproducer.syz_prog is None
    assert "using repro.c" in said[0]
    with pytest.raises(UserError, match="give --tree"):
        with_bug(ReproJob(bug=d), say=quiet)
    _bug(tmp_path, commit="0123456789ab\n")
    with pytest.raises(UserError, match="commit 0123456789ab is not in --tree"):
        with_bug(ReproJob(tree=tree, bug=d), say=quiet)
