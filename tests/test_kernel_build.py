"""Real kernel builds of the demo tree: boot, incremental rebuild, cache,
broken range, planted bugs under KASAN and without. Builds go through the
session fixtures in tests/fixtures_kernel.py, so each kernel is built once
per run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.bisect import GitRepository
from kvmlab.cli import main
from kvmlab.errors import ConfigError, DiskFullError, HostToolError, UnknownCommitError
from kvmlab.kernel.builder import BuildManifest, KernelBuilder
from kvmlab.kernel.config import ConfigRequest, parse_config
from kvmlab.kernel.demo_tree import DEFAULT_TARBALL, DemoTree
from kvmlab.kernel.tree import NotAKernelTreeError
from kvmlab.outcome import BuildOutcome, BuildStatus
from tests.fixtures_kernel import INIT_PRELUDE, TEST_CONFIG, BuildKernel, MakeInitramfs, boot_console

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

USERSPACE_MARK = "KVMLAB-USERSPACE-OK"


def _manifest(outcome: BuildOutcome) -> BuildManifest:
    return BuildManifest.load(Path(outcome.artifacts["manifest"]))


def _git(tree: Path, *args: str) -> str:
    return proc.run(["git", "-C", tree, *args], timeout=60).stdout.strip()


def test_base_kernel_builds_with_full_manifest(base_kernel: BuildOutcome, demo_tree: DemoTree) -> None:
    assert base_kernel.status is BuildStatus.OK, base_kernel.error
    for name in ("bzImage", "vmlinux", "System.map", "config", "manifest"):
        assert Path(base_kernel.artifacts[name]).is_file(), name
    m = _manifest(base_kernel)
    assert m.commit == demo_tree.base
    assert m.tree_hash == _git(demo_tree.path, "rev-parse", f"{demo_tree.base}^{{tree}}")
    assert m.compiler.startswith("gcc") and m.compiler == base_kernel.compiler
    assert len(m.kernel_sha256) == 64
    assert m.dropped == [], f"base fragment options dropped by Kconfig: {m.dropped}"
    config = parse_config(Path(base_kernel.artifacts["config"]).read_text())
    assert config["CONFIG_VIRTIO_NET"] == "y"
    assert config.get("CONFIG_KASAN", "n") == "n"
    assert config.get("CONFIG_MODULES", "n") == "n"
    # The suite's kernels have no debug info (nodwarf): nothing symbolizes them.
    assert config.get("CONFIG_DEBUG_INFO_NONE") == "y" and config.get("CONFIG_DEBUG_INFO", "n") == "n"
    assert "comm_digest_compute" not in Path(base_kernel.artifacts["System.map"]).read_text()
    assert m.objects_compiled > 300 or m.ccache_hits > 0


def test_kernel_messages_name_source_files_as_the_kernel_tree_does(base_kernel: BuildOutcome,
                                                                   tmp_path: Path) -> None:
    """BUG()/WARN() print __FILE__ (kept in .rodata): "kernel BUG at mm/x.c", as
    syzbot's kernels do, not the slot layout's "../src/mm/x.c" (title rules
    match on paths). Debug info may keep the build's own paths."""
    rodata = tmp_path / "rodata"
    proc.run(["objcopy", f"--dump-section=.rodata={rodata}", base_kernel.artifacts["vmlinux"],
              str(tmp_path / "scratch.o")], timeout=120)
    data = rodata.read_bytes()
    assert b"mm/page_alloc.c\0" in data
    assert data.count(b"../src/") == 0


def test_base_kernel_boots_to_userspace(base_kernel: BuildOutcome, busybox_initramfs: MakeInitramfs) -> None:
    initramfs = busybox_initramfs(INIT_PRELUDE + f"echo {USERSPACE_MARK}\npoweroff -f\n")
    console = boot_console(Path(base_kernel.artifacts["bzImage"]), initramfs)
    assert "Linux version 6.1" in console
    assert USERSPACE_MARK in console, console[-3000:]


def test_nearby_commit_rebuilds_incrementally(
    base_kernel: BuildOutcome, build_kernel: BuildKernel, demo_tree: DemoTree
) -> None:
    base = _manifest(base_kernel)
    near = build_kernel(demo_tree.commits[2])
    assert near.status is BuildStatus.OK, near.error
    m = _manifest(near)
    if not near.cached:
        # The slot's object directory last held some other commit of the demo
        # history (which one depends on test order), so the rebuild compiles the
        # files that differ plus the relink: a few dozen objects, not the tree.
        tree_objects = sum(1 for _ in Path(near.artifacts["manifest"]).parents[2].joinpath(
            "slots", m.slot, "obj").rglob("*.o"))
        assert tree_objects > 300, tree_objects
        assert m.objects_compiled * 10 < tree_objects, (m.objects_compiled, tree_objects)
        if base.objects_compiled > 300:
            assert m.objects_compiled * 10 < base.objects_compiled
    assert m.kernel_sha256 != base.kernel_sha256


def test_same_build_again_is_a_cache_hit(
    base_kernel: BuildOutcome, kernel_builder: KernelBuilder, demo_tree: DemoTree
) -> None:
    again = kernel_builder.build(demo_tree.path, "v6.1", ConfigRequest.from_fragments(TEST_CONFIG))
    assert again.cached and again.status is BuildStatus.OK
    assert again.duration == 0.0
    assert _manifest(again).kernel_sha256 == _manifest(base_kernel).kernel_sha256
    # Another commit object with the same tree shares the build (no refs change).
    tree = _git(demo_tree.path, "rev-parse", "v6.1^{tree}")
    twin = proc.run(
        ["git", "-C", demo_tree.path, "commit-tree", tree, "-p", demo_tree.base, "-m", "same tree"],
        timeout=60,
        env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
             "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    shared = kernel_builder.build(demo_tree.path, twin, ConfigRequest.from_fragments(TEST_CONFIG))
    assert shared.cached and shared.commit == twin
    assert _manifest(shared).kernel_sha256 == _manifest(base_kernel).kernel_sha256


def test_broken_range_fails_with_compiler_error(
    base_kernel: BuildOutcome, build_kernel: BuildKernel, demo_tree: DemoTree
) -> None:
    assert 2 <= len(demo_tree.broken) <= 3
    broken = build_kernel(demo_tree.broken[-1])
    assert broken.status is BuildStatus.FAILED
    assert "error:" in broken.error and "panic_print_reboot_notice" in broken.error, broken.error
    assert "panic.c" in broken.error
    assert broken.log_tail.strip()
    assert Path(broken.artifacts["manifest"]).is_file() and "bzImage" not in broken.artifacts
    fixed = build_kernel(demo_tree.fixed)
    assert fixed.status is BuildStatus.OK, fixed.error


def test_users_checkout_is_untouched(base_kernel: BuildOutcome, demo_tree: DemoTree) -> None:
    assert _git(demo_tree.path, "rev-parse", "HEAD") == demo_tree.head
    assert _git(demo_tree.path, "status", "--porcelain", "--untracked-files=no") == ""


def _repro_init(binary: str, tries: int) -> str:
    return INIT_PRELUDE + (
        f"for i in $(seq 1 {tries}); do echo \"kvmlab-try $i\"; {binary}; done\n"
        f"echo {USERSPACE_MARK}\npoweroff -f\n"
    )


def test_culprit_oopses_plain_kernel(
    build_kernel: BuildKernel, demo_tree: DemoTree, reproducers: dict[str, Path],
    busybox_initramfs: MakeInitramfs,
) -> None:
    head = build_kernel(demo_tree.head)
    assert head.status is BuildStatus.OK, head.error
    initramfs = busybox_initramfs(_repro_init("/repro", 1), {"/repro": reproducers["culprit"]})
    console = boot_console(Path(head.artifacts["bzImage"]), initramfs)
    assert demo_tree.titles["culprit"]["plain"] in console, console[-3000:]
    assert re.search(r"RIP: 0010:comm_digest_compute\+", console), console[-3000:]
    assert USERSPACE_MARK not in console


def test_culprit_kasan_report(kasan_culprit: tuple[BuildOutcome, str]) -> None:
    kasan, console = kasan_culprit
    assert kasan.status is BuildStatus.OK, kasan.error
    assert _manifest(kasan).dropped == []
    assert "BUG: KASAN: use-after-free in comm_digest_compute" in console, console[-3000:]
    assert re.search(r"Read of size \d+ at addr", console)


def test_flaky_culprit_crashes_on_some_runs(
    build_kernel: BuildKernel, demo_tree: DemoTree, reproducers: dict[str, Path],
    busybox_initramfs: MakeInitramfs,
) -> None:
    head = build_kernel(demo_tree.head)
    # Each call crashes with probability ~1/3: 40 tries all surviving is ~1e-7.
    initramfs = busybox_initramfs(_repro_init("/repro", 40), {"/repro": reproducers["flaky_culprit"]})
    console = boot_console(Path(head.artifacts["bzImage"]), initramfs)
    assert demo_tree.titles["flaky_culprit"]["plain"] in console, console[-3000:]
    assert re.search(r"RIP: 0010:timerslack_pick_hint\+", console)


@pytest.mark.demo_source
def test_planted_commits_json(demo_tree: DemoTree) -> None:
    info = json.loads(demo_tree.info_path.read_text())
    assert info["base"] == _git(demo_tree.path, "rev-parse", "v6.1^{commit}")
    assert len(info["commits"]) >= 40 and info["head"] == info["commits"][-1]
    order = info["commits"]
    assert order.index(info["broken"][0]) < order.index(info["culprit"]) < order.index(info["flaky_culprit"])
    for key in ("culprit", "flaky_culprit"):
        title = _git(demo_tree.path, "log", "-1", "--format=%s", info[key]).lower()
        assert not re.search(r"bug|crash|uaf|use-after|null|flaky|race|break", title), title
        assert Path(info["reproducers"][key]).is_file()



@pytest.mark.demo_source
def test_real_get_maintainer_names_the_virtio_blk_maintainers(demo_tree: DemoTree) -> None:
    """The culprit's cc line takes the tree's own scripts/get_maintainer.pl."""
    commit = _git(demo_tree.path, "log", "-1", "--format=%H", "--grep=virtio_blk: name the queue kinds")
    maintainers = GitRepository(demo_tree.path).maintainers(commit)
    assert {"mst@redhat.com", "axboe@kernel.dk"} <= set(maintainers), maintainers
    assert all("@" in m and " " not in m for m in maintainers)

# -- bad input: one-line errors, nothing built -------------------------------

def test_not_a_kernel_tree(kernel_builder: KernelBuilder, tmp_path: Path) -> None:
    with pytest.raises(NotAKernelTreeError, match="not a kernel tree"):
        kernel_builder.build(tmp_path, "HEAD", ConfigRequest.from_fragments(["base"]))


@pytest.mark.demo_source
def test_unknown_commit(kernel_builder: KernelBuilder, demo_tree: DemoTree) -> None:
    with pytest.raises(UnknownCommitError, match="no-such-rev"):
        kernel_builder.build(demo_tree.path, "no-such-rev", ConfigRequest.from_fragments(["base"]))


@pytest.mark.demo_source
def test_unknown_fragment(kernel_builder: KernelBuilder, demo_tree: DemoTree) -> None:
    with pytest.raises(ConfigError, match="unknown config fragment 'nosuch'"):
        kernel_builder.build(demo_tree.path, "v6.1", ConfigRequest.from_fragments(["base", "nosuch"]))


@pytest.mark.demo_source
def test_compiler_not_installed(demo_tree: DemoTree, tmp_path: Path) -> None:
    builder = KernelBuilder(tmp_path / "work", compiler="gcc-kvmlab-missing")
    with pytest.raises(HostToolError, match=r"gcc-kvmlab-missing.*not installed"):
        builder.build(demo_tree.path, "v6.1", ConfigRequest.from_fragments(["base"]))


@pytest.mark.demo_source
def test_full_disk_is_refused(demo_tree: DemoTree, tmp_path: Path) -> None:
    builder = KernelBuilder(tmp_path / "work", min_free_bytes=1 << 62)
    with pytest.raises(DiskFullError, match="disk full"):
        builder.build(demo_tree.path, "v6.1", ConfigRequest.from_fragments(["base"]))


def test_cli_build_reports_cache_hit(
    base_kernel: BuildOutcome, demo_tree: DemoTree, kernel_builder: KernelBuilder,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    rc = main(["kernel", "build", "--tree", str(demo_tree.path), "--commit", "v6.1",
               "--config", ",".join(TEST_CONFIG), "--work-dir", str(kernel_builder.work_dir), "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "ok (cached)" in text
    assert (out / "bzImage").read_bytes() == Path(base_kernel.artifacts["bzImage"]).read_bytes()
    rc = main(["kernel", "build", "--tree", str(demo_tree.path), "--commit", "v6.1", "--config", "nosuch",
               "--work-dir", str(kernel_builder.work_dir)])
    assert rc == 2
    assert "unknown config fragment 'nosuch'" in capsys.readouterr().err


@pytest.mark.demo_source
def test_demo_tree_records_its_source(demo_tree: DemoTree) -> None:
    """The demo tree says which source made it (its ids depend on it)."""
    src = demo_tree.source
    assert src is not None
    assert src.base_tree == _git(demo_tree.path, "rev-parse", "v6.1^{tree}")
    assert _git(demo_tree.path, "log", "-1", "--format=%s", "v6.1") == f"Linux {src.version}"
    if Path(src.path).is_file():
        assert len(src.sha256) == 64
        if Path(src.path) == DEFAULT_TARBALL:
            assert src.package.startswith("linux-source-6.1 ")
