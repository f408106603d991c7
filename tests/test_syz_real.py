"""syzkaller programs and syzbot bugs end to end, for real: the real
syz-execprog/syz-executor in kvmlab guests on the demo kernels, a bug
directory bisected to the planted culprit, a kernel from syzbot's own config,
and a clang build.

The demo tests use the ``base`` builds other tests make anyway (``base`` has
the namespaces syz-executor needs), so they add VM time, not kernel builds.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from kvmlab import oops
from kvmlab.cli import main
from kvmlab.jobs.inputs import minimized_request
from kvmlab.jobs.model import BuildOptions
from kvmlab.kernel.builder import BuildManifest, KernelBuilder
from kvmlab.kernel.config import ConfigRequest
from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.outcome import BuildStatus, RunStatus
from kvmlab.repro.reproducer import ShellCommand
from kvmlab.repro.runner import ReproOptions, run_repro
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.initramfs import READY_MARKER, build_initramfs
from kvmlab.vmm.qemu_backend import QemuBackend
from kvmlab.vmm.spec import Accel, VMSpec
from tests.conftest import TEST_CACHE
from tests.fixtures_kernel import KERNEL_CACHE, TEST_CONFIG, BuildKernel
from tests.test_syz_units import HAVE_SYZ, SYZ_DIR

HEAVY = os.environ.get("KVMLAB_HEAVY_TESTS") == "1"

pytestmark = [
    pytest.mark.vm, pytest.mark.kernel, pytest.mark.slow,
    pytest.mark.skipif(not HAVE_SYZ, reason=f"no syzkaller binaries in {SYZ_DIR}"),
]

#: syz-manager's spelling of the options, nothing but the sandbox: what the
#: plain ``base`` kernel can give.
PLAIN_OPTIONS = ("# {Threaded:true Repeat:true RepeatTimes:0 Procs:1 Slowdown:1 Sandbox:none SandboxArg:0 "
                 "Leak:false NetInjection:false NetDevices:false NetReset:false Cgroups:false "
                 "BinfmtMisc:false CloseFDs:false KCSAN:false DevlinkPCI:false NicVF:false USB:false "
                 "VhciInjection:false Wifi:false IEEE802154:false Sysctl:false Swap:false UseTmpDir:true "
                 "HandleSegv:true Trace:false "
                 "LegacyOptions:{Collide:false Fault:false FaultCall:0 FaultNth:0}}")
#: The demo's planted bug: prctl(PR_GET_COMM_DIGEST = 65) frees, then reads.
CULPRIT_PROG = f"{PLAIN_OPTIONS}\nprctl$auto(0x41, 0x0, 0x0, 0x0, 0x0)\n"
NOTHING_PROG = f"{PLAIN_OPTIONS}\ngetpid()\n"
#: syzbot's title for the plain (no KASAN) kernel's oops of the planted bug.
PLAIN_TITLE = "BUG: unable to handle kernel NULL pointer dereference in comm_digest_compute"

#: Seconds a syz program runs (counted from its first execution: syz-execprog's
#: machine check before it takes 15-60 s in a loaded TCG guest).
RUN_TIME = "30"


def _vm_args(tmp: Path, count: int = 2) -> list[str]:
    return ["--count", str(count), "--cpus", "1", "--memory-mb", "1024", "--run-time", RUN_TIME,
            "--accel", "tcg", "--workdir", str(tmp)]


def _repro(build_art: dict[str, str], prog: Path, tmp: Path, *extra: str, count: int = 2,
           kernel_config: bool = True) -> list[str]:
    argv = ["repro", "--kernel", build_art["bzImage"], "--vmlinux", build_art["vmlinux"],
            "--syz-prog", str(prog), "--syz-dir", str(SYZ_DIR), *_vm_args(tmp, count), *extra]
    if kernel_config:
        argv += ["--kernel-config", build_art["config"]]
    return argv


def test_syz_program_reproduces_the_planted_bug_and_nothing_else_crashes(
        demo_tree: DemoTree, build_kernel: BuildKernel, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    build = build_kernel(demo_tree.culprit)
    prog = tmp_path / "repro.syz"
    prog.write_text(CULPRIT_PROG)
    t0 = time.monotonic()
    rc = main(_repro(build.artifacts, prog, tmp_path / "crash", "--json", str(tmp_path / "r.json")))
    out = capsys.readouterr().out
    print(f"syz repro of the planted bug: {time.monotonic() - t0:.0f} s")
    assert rc == 0, out
    titles = re.findall(r"^run #(\d): crashed: (.*)$", out, re.M)
    assert sorted(i for i, _ in titles) == ["0", "1"], out
    for _, title in titles:
        assert oops.same_bug(title, PLAIN_TITLE), (title, PLAIN_TITLE)
    for i in (0, 1):
        log = (tmp_path / "crash" / f"vm-{i}" / "repro.log").read_text()
        assert "parsed 1 programs" in log, log[-2000:]
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert all(r["repro_log"].endswith("repro.log") for r in runs)

    # The same kernel, a program that does nothing: it runs (syz-execprog
    # says how many times) and nothing crashes.
    nothing = tmp_path / "nothing.syz"
    nothing.write_text(NOTHING_PROG)
    rc = main(_repro(build.artifacts, nothing, tmp_path / "nothing", count=1))
    out = capsys.readouterr().out
    assert rc == 0 and "run #0: OK" in out and "all runs: OK" in out, out
    log = (tmp_path / "nothing" / "vm-0" / "repro.log").read_text()
    assert re.search(r"executed programs: [1-9]", log), log[-2000:]


def test_syz_program_that_cannot_run_is_never_ok(demo_tree: DemoTree, build_kernel: BuildKernel,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build = build_kernel(demo_tree.culprit)
    prog = tmp_path / "repro.syz"
    prog.write_text(CULPRIT_PROG)
    # Asking for a feature the kernel lacks: refused before boot, naming it.
    rc = main(_repro(build.artifacts, prog, tmp_path / "tun", "--syz-opt", "enable=tun"))
    err = capsys.readouterr().err
    assert rc == 2 and "CONFIG_TUN (for feature tun)" in err, err
    assert not (tmp_path / "tun" / "vm-0").exists()
    # Without the kernel's config kvmlab cannot know: the sandbox needs user
    # namespaces (base has none), syz-executor fails, and the run says so.
    rc = main(_repro(build.artifacts, prog, tmp_path / "ns", "--syz-opt", "sandbox=namespace", count=1,
                     kernel_config=False))
    out = capsys.readouterr().out
    assert rc == 1, out
    line = re.search(r"^run #0: reproducer failed: (.*)$", out, re.M)
    assert line is not None, out
    assert "crashed" not in out and "run #0: OK" not in out
    assert f"(output: {tmp_path / 'ns' / 'vm-0' / 'repro.log'})" in out
    print(f"sandbox=namespace without CONFIG_USER_NS: {line.group(1)}")


def _share_kernel_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI's kernel work dir is the tests' shared one: the bisection
    reuses the demo's base builds (and ccache)."""
    cache = tmp_path / "xdg-cache"
    (cache / "kvmlab").mkdir(parents=True)
    (cache / "kvmlab" / "kernel").symlink_to(KERNEL_CACHE / "work")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))


@pytest.mark.heavy
@pytest.mark.skipif(not HEAVY, reason="~30 min on 2 cores (1,770 s measured cold, builds included; each syz "
                    "run is a boot, syz-execprog's 15-60 s machine check and up to RUN_TIME s): "
                    "over the CI budget (README: Test budget): KVMLAB_HEAVY_TESTS=1")
def test_bug_directory_with_a_syz_repro_is_bisected_to_the_planted_culprit(
        demo_tree: DemoTree, build_kernel: BuildKernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Our own syzbot-style bug: seen at the demo's head, with the full config
    # that kernel was built with (so each commit's build is the demo's own
    # base build, from the cache) and a syz reproducer only.
    head = build_kernel(demo_tree.head)
    bug = tmp_path / "bug"
    bug.mkdir()
    (bug / "title").write_text(PLAIN_TITLE + "\n")
    (bug / "commit").write_text(demo_tree.head[:12] + "\n")
    (bug / "tree").write_text(f"{demo_tree.path} master\n")
    (bug / ".config").write_text(Path(head.artifacts["config"]).read_text())
    (bug / "repro.syz").write_text(CULPRIT_PROG)
    _share_kernel_cache(monkeypatch, tmp_path)
    t0 = time.monotonic()
    rc = main(["bisect", "--tree", str(demo_tree.path), "--bug", str(bug), "--syz-dir", str(SYZ_DIR),
               "--json", str(tmp_path / "result.json"), *_vm_args(tmp_path / "w")])
    out = capsys.readouterr().out
    print(f"bug directory bisection: {time.monotonic() - t0:.0f} s")
    assert rc == 0, out[-4000:]
    assert f"{demo_tree.culprit} is the first bad commit" in out
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["culprit"] == demo_tree.culprit
    # syzbot's compiler string on the testing lines.
    assert re.search(r"testing commit [0-9a-f]{40} with gcc\S* \(Debian .*GNU ld", out), out[:3000]


@pytest.mark.heavy
@pytest.mark.skipif(not HEAVY, reason="a cold clang kernel build is another ~10 min on 2 cores, over the CI "
                    "budget (README: Test budget): KVMLAB_HEAVY_TESTS=1")
@pytest.mark.skipif(not os.path.exists("/usr/bin/clang-15"), reason="clang-15 is not installed "
                    "(apt-get install clang-15 lld-15 llvm-15; scripts/setup.sh does)")
def test_clang_build_of_base_boots(demo_tree: DemoTree, tmp_path: Path) -> None:
    builder = KernelBuilder(KERNEL_CACHE / "work", compiler="clang-15")
    t0 = time.monotonic()
    build = builder.build(demo_tree.path, demo_tree.base, ConfigRequest.from_fragments(TEST_CONFIG))
    print(f"clang-15 build of base: {time.monotonic() - t0:.0f} s (cached: {build.cached})")
    assert build.status is BuildStatus.OK, build.error
    manifest = BuildManifest.load(Path(build.artifacts["manifest"]))
    assert "clang version 15" in manifest.compiler and manifest.compiler.endswith("LLVM=1"), manifest.compiler
    assert "LLVM=1" in manifest.make_argv
    assert "CONFIG_CC_IS_CLANG=y" in Path(build.artifacts["config"]).read_text()
    kernel = Path(build.artifacts["bzImage"])
    root = build_initramfs(TEST_CACHE / "initramfs-demo", kernel=kernel)
    spec = VMSpec(kernel=kernel, root=root, cpus=1, memory_mb=512, accel=Accel.TCG, name="kvmlab-clang")
    res = run_repro(spec, ShellCommand("cat /proc/version").prepare(tmp_path), backend=QemuBackend(),
                    timeouts=Timeouts().scaled(4), options=ReproOptions(count=1, run_time=20.0),
                    workdir=tmp_path / "runs", ready_marker=READY_MARKER)
    (o,) = res.outcomes
    assert o.status is RunStatus.OK, o
    assert "clang version 15" in (tmp_path / "runs" / "vm-0" / "repro.log").read_text()


@pytest.mark.heavy
@pytest.mark.skipif(not HEAVY, reason="~17 min on 2 cores (syzbot's config minimized for the bug: "
                    "922 s cold without ccache, 2,309 objects; as given 1,212 s, 2,316), over the CI "
                    "budget (README: Test budget): KVMLAB_HEAVY_TESTS=1")
def test_syzbot_config_kernel_boots_and_runs_a_syz_program(
        demo_tree: DemoTree, kernel_builder: KernelBuilder, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """syzbot's KASAN config, minimized for the bug's title as repro and bisect
    build it, still crashes with the bug's title."""
    config = SYZ_DIR / "stable-6.1-kasan-base.config"
    if not config.is_file():
        pytest.skip(f"{config} missing")
    request, minimized = minimized_request(BuildOptions(kernel_config=config),
                                           "KASAN: use-after-free Read in comm_digest_compute")
    assert minimized is not None and {d.rule for d in minimized.drops} >= {"lockdep", "debug-info"}
    t0 = time.monotonic()
    build = kernel_builder.build(demo_tree.path, demo_tree.culprit, request)
    print(f"syzbot config build: {time.monotonic() - t0:.0f} s (cached: {build.cached})")
    assert build.status is BuildStatus.OK, build.error
    prog = tmp_path / "repro.syz"
    # syzbot's features that this config has (it has no tun).
    prog.write_text('#{"threaded":true,"repeat":true,"procs":1,"slowdown":1,"sandbox":"none","sandbox_arg":0,'
                    '"cgroups":true,"binfmt_misc":true,"close_fds":true,"sysctl":true,"swap":true,'
                    '"tmpdir":true,"segv":true}\nprctl$auto(0x41, 0x0, 0x0, 0x0, 0x0)\n')
    t0 = time.monotonic()
    rc = main(_repro(build.artifacts, prog, tmp_path / "w", "--run-time", "300", count=1))
    out = capsys.readouterr().out
    print(f"syz repro on the syzbot kernel: {time.monotonic() - t0:.0f} s\n{out}")
    assert rc == 0, out
    assert "run #0: crashed: KASAN: use-after-free Read in comm_digest_compute" in out, out
