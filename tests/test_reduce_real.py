"""Config minimization with the reproducer as the oracle, for real: kernel
builds of the demo tree (incremental, in one build slot) and VM runs decide
which of a full config's options a crash needs; and a bisection given a full
config bisects with what minimization kept.

The full configs are the suite's ``base,nodwarf`` build with a few options on
top (a small file system, sysrq): a syzbot config would cost a ~20 min cold
build per candidate here (``benchmarks/config_minimize.py`` measures that)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmlab.bisect.timing import Stopwatch
from kvmlab.cli import main
from kvmlab.jobs import inputs, minimizing
from kvmlab.jobs.bisection import target_matcher
from kvmlab.jobs.model import ReproInput, VMOptions
from kvmlab.jobs.tester import VMTester
from kvmlab.kernel.builder import KernelBuilder
from kvmlab.kernel.config import ConfigRequest, find_data_file, parse_config
from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.kernel.minimize import TABLE_NAME, load_rules
from kvmlab.outcome import BuildOutcome
from kvmlab.vmm.factory import choose_accel
from tests.fixtures_kernel import TEST_CONFIG, BuildKernel
from tests.test_demo_e2e import _share_kernel_cache

pytestmark = [pytest.mark.vm, pytest.mark.kernel, pytest.mark.slow]

SYSRQ_TITLE = "kernel panic: sysrq triggered crash"
PLAIN_TITLE = "BUG: unable to handle kernel NULL pointer dereference in comm_digest_compute"
EXTRA = ("CONFIG_MISC_FILESYSTEMS=y\nCONFIG_MINIX_FS=y\nCONFIG_ROMFS_FS=y\nCONFIG_QNX4FS_FS=y\n"
         "CONFIG_MAGIC_SYSRQ=y\n")


def _full_config(base_build: BuildOutcome, tmp_path: Path) -> Path:
    path = tmp_path / "full.config"
    path.write_text(Path(base_build.artifacts["config"]).read_text() + EXTRA)
    return path


def test_the_reproducer_keeps_sysrq_and_drops_the_file_systems(
        demo_tree: DemoTree, base_kernel: BuildOutcome, kernel_builder: KernelBuilder, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cfg = inputs.settings(VMOptions(count=1, cpus=1, memory_mb=512, accel="tcg", run_time=15.0))
    sysrq = ReproInput(command="echo c > /proc/sysrq-trigger")
    staged = inputs.reproducer(sysrq, cfg).prepare(tmp_path / "r")
    request = ConfigRequest.from_file(_full_config(base_kernel, tmp_path))
    testers: list[VMTester] = []

    def make_tester(req: ConfigRequest, kernel: Path) -> VMTester:
        tester = VMTester(tree=demo_tree.path, builder=kernel_builder, request=req, prepared=staged, cfg=cfg,
                          accel=choose_accel(cfg.vm, kernel), workdir=tmp_path / "runs")
        testers.append(tester)
        return tester

    said: list[str] = []
    oracle = minimizing.Oracle(tree=demo_tree.path, commit=demo_tree.base, request=request, title=SYSRQ_TITLE,
                               builder=kernel_builder, make_tester=make_tester,
                               is_target=target_matcher(SYSRQ_TITLE), vm_slots=1, stopwatch=Stopwatch(),
                               say=said.append, runs=1)
    found = minimizing.minimize(oracle, load_rules(find_data_file(TABLE_NAME)), budget=4)
    log = "\n".join(said)
    print(log)
    trials = found.detail["trials"]
    # The base (a cache hit: the suite's base,nodwarf build) cannot crash this way.
    assert trials[0]["label"] == "base" and trials[0]["crashed"] is False, log
    assert found.config is not None, log
    kept = parse_config(found.config)
    assert kept.get("CONFIG_MAGIC_SYSRQ") == "y" and "CONFIG_MINIX_FS" not in kept, log
    assert any(t["crashed"] for t in trials) and len(trials) <= 4
    # The file systems were in the difference, and a candidate with them but without sysrq did not crash.
    assert found.detail["difference"] >= 8 > len(found.detail["kept"]), found.detail
    assert any(not t["crashed"] for t in trials[1:]), log
    # Everything else is the base's: the answer is base + part of the difference.
    base = parse_config(Path(base_kernel.artifacts["config"]).read_text())
    assert {k for k in kept if kept[k] != base.get(k)} <= set(found.detail["kept"])
    assert minimizing.cached(demo_tree.path, demo_tree.base, request, SYSRQ_TITLE) == found


def test_a_bisection_with_a_full_config_bisects_with_the_minimized_one(
        demo_tree: DemoTree, build_kernel: BuildKernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's bug needs none of the extra options: the base crashes, one
    test, and every step builds the base config (cache hits of the suite's)."""
    _share_kernel_cache(monkeypatch, tmp_path)
    culprit = demo_tree.culprit
    parent = demo_tree.commits[demo_tree.commits.index(culprit) - 1]
    full = _full_config(build_kernel(culprit, TEST_CONFIG), tmp_path)
    out_json = tmp_path / "result.json"
    rc = main(["bisect", "--tree", str(demo_tree.path), "--bad", culprit, "--good", parent,
               str(demo_tree.reproducers["culprit"]), "--kernel-config", str(full), "--expect", PLAIN_TITLE,
               "--count", "2", "--cpus", "1", "--memory-mb", "512", "--run-time", "20",
               "--workdir", str(tmp_path / "work"), "--json", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0, out[-4000:]
    result = json.loads(out_json.read_text())
    assert result["culprit"] == culprit, out[-3000:]
    assert "kvmlab: minimizing the config: testing base" in out, out[:3000]
    assert "config minimized with the reproducer: base + 0 of the" in out, out[:3000]
    oracle = result["config_minimized"]["reproducer"]
    assert oracle["minimized"] is True and len(oracle["trials"]) == 1
    # The bisection's own builds are the base's: no MINIX_FS in any kernel it built.
    configs = list((tmp_path / "xdg-cache").glob("kvmlab/minimized/*.json"))
    assert len(configs) == 1
    assert "CONFIG_MINIX_FS=y" not in json.loads(configs[0].read_text())["config"]
