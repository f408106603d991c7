"""Config minimization, oracle half (:mod:`kvmlab.kernel.reduce`): the search
with a fake judge (which options a crash needs is known to the test), its
budget, and the promise that the answer is a config that was seen to crash;
and the job layer (:mod:`kvmlab.jobs.minimizing`) with a fake builder and
tester: what it builds, where, and its cache."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kvmlab.bisect.timing import Stopwatch
from kvmlab.jobs import minimizing
from kvmlab.kernel.config import ConfigRequest, find_data_file, parse_config, render_config
from kvmlab.kernel.minimize import TABLE_NAME, load_rules
from kvmlab.kernel.reduce import candidate, difference, reduce, suspects_of
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome, RunStatus

pytestmark = pytest.mark.unit

BASE = {"CONFIG_A": "y", "CONFIG_SERIAL": "y", "CONFIG_OFF_IN_FULL": "y", "CONFIG_HZ": "250"}


def _full(n: int) -> dict[str, str]:
    full = dict(BASE)
    full["CONFIG_OFF_IN_FULL"] = "n"
    full["CONFIG_HZ"] = "1000"
    full |= {f"CONFIG_KASAN{s}": "y" for s in ("", "_GENERIC", "_INLINE")}
    full |= {f"CONFIG_OPT{i}": "y" if i % 3 else "m" for i in range(n)}
    full["CONFIG_NOT_SET"] = "n"
    return full


def _judge(needs: set[str], calls: list[dict[str, str]], *, flaky: random.Random | None = None
           ) -> Callable[[dict[str, str], str], tuple[bool, str]]:
    """Crashes when every option of ``needs`` is on (with ``flaky``: only
    sometimes even then; never without them)."""
    def test(config: dict[str, str], label: str) -> tuple[bool, str]:
        calls.append(config)
        has = all(config.get(k, "n") not in ("n", "") for k in needs)
        if has and (flaky is None or flaky.random() < 0.6):
            return True, ""
        return False, "8 runs"
    return test


def test_the_difference_is_what_the_full_config_turns_on_beyond_the_base() -> None:
    full = _full(4)
    diff = difference(BASE, full)
    assert diff[0] == "CONFIG_HZ" and "CONFIG_OFF_IN_FULL" not in diff and "CONFIG_NOT_SET" not in diff
    assert "CONFIG_A" not in diff and len(diff) == 1 + 3 + 4
    assert suspects_of(diff, ["KASAN"]) == ["CONFIG_KASAN", "CONFIG_KASAN_GENERIC", "CONFIG_KASAN_INLINE"]
    assert suspects_of(["CONFIG_KASANX"], ["KASAN"]) == []
    cand = candidate(BASE, full, ["CONFIG_OPT1"])
    assert cand["CONFIG_OFF_IN_FULL"] == "y" and cand["CONFIG_OPT1"] == "y" and "CONFIG_OPT2" not in cand


def test_base_with_the_suspects_is_tried_first_and_is_the_answer_when_it_crashes() -> None:
    calls: list[dict[str, str]] = []
    found = reduce(BASE, _full(64), ["KASAN"], _judge({"CONFIG_KASAN"}, calls), budget=6)
    assert len(found.trials) == 1 and found.trials[0].crashed and found.trials[0].label == "base + suspects"
    assert found.config == calls[0] and found.config["CONFIG_KASAN_INLINE"] == "y"
    assert "CONFIG_OPT5" not in found.config and found.kept == found.suspects
    assert "base + 3 of the 68 options" in found.summary()


def test_halving_finds_the_option_the_crash_needs_within_the_budget() -> None:
    calls: list[dict[str, str]] = []
    found = reduce(BASE, _full(64), ["KASAN"], _judge({"CONFIG_KASAN", "CONFIG_OPT41"}, calls), budget=20)
    assert found.config is not None and found.config["CONFIG_OPT41"] == "y"
    assert "CONFIG_OPT40" not in found.config and found.config["CONFIG_HZ"] == "250"  # the base's
    assert found.config in calls and len(calls) <= 20
    assert found.trials[-1].crashed
    # 64 + HZ = 65 options: 1 (suspects) + at most 2 tests per halving step.
    assert len(found.trials) <= 1 + 2 * 7


def test_the_budget_caps_the_tests_and_the_last_crashing_half_is_kept() -> None:
    calls: list[dict[str, str]] = []
    found = reduce(BASE, _full(64), [], _judge({"CONFIG_OPT63"}, calls), budget=4)
    assert len(calls) == 4
    assert found.config is not None and found.config["CONFIG_OPT63"] == "m"
    assert found.config == calls[-1] or found.config in calls
    assert 1 < len(found.kept) < 65


def test_when_each_half_needs_the_other_the_full_config_is_kept() -> None:
    calls: list[dict[str, str]] = []
    found = reduce(BASE, _full(64), ["KASAN"], _judge({"CONFIG_OPT1", "CONFIG_OPT60"}, calls), budget=6)
    assert found.config is None and len(calls) == 3
    assert "nothing smaller than the full config crashed" in found.summary()
    assert found.to_json()["minimized"] is False


def test_a_full_config_with_nothing_beyond_the_base_costs_no_test() -> None:
    calls: list[dict[str, str]] = []
    found = reduce(BASE, dict(BASE), ["KASAN"], _judge(set(), calls))
    assert found.config is None and not calls and "adds nothing" in found.summary()
    with pytest.raises(ValueError, match="budget of 0"):
        reduce(BASE, _full(3), [], _judge(set(), calls), budget=0)


def test_the_answer_always_crashed_and_never_loses_a_needed_option_with_a_flaky_judge() -> None:
    """Breaking it on purpose: random sizes, needed sets, budgets and a judge
    that misses a crash 40% of the time (it never crashes without the bug's
    options, as a reproducer would not)."""
    rng = random.Random(7)
    for _ in range(300):
        full = _full(rng.randrange(0, 200))
        diff = difference(BASE, full)
        needs = set(rng.sample(diff, k=min(len(diff), rng.choice([0, 1, 1, 2, 3]))))
        calls: list[dict[str, str]] = []
        budget = rng.randrange(1, 12)
        found = reduce(BASE, full, rng.choice([[], ["KASAN"]]), _judge(needs, calls, flaky=rng),
                       budget=budget)
        assert len(calls) <= budget
        if found.config is not None:
            assert found.config in calls
            assert any(t.crashed for t in found.trials)
            assert all(found.config.get(k, "n") != "n" for k in needs)


# The job layer with fakes ---------------------------------------------------

@dataclass
class FakeBuilder:
    base: str
    full: str
    builds: list[tuple[str, int | None]] = field(default_factory=list)
    fail: bool = False

    def final_config(self, tree: Path, rev: str, config: ConfigRequest, *, slot: int | None = None) -> str:
        return self.full if config.full_config is not None else self.base

    def build(self, tree: Path, rev: str, config: ConfigRequest, *, slot: int | None = None,
              **_: object) -> BuildOutcome:
        assert config.full_config is not None
        self.builds.append((config.full_config, slot))
        if self.fail:
            return BuildOutcome(rev, BuildStatus.FAILED, error="arch/x86/foo.c:1: error: boom")
        return BuildOutcome(rev, BuildStatus.OK, artifacts={"bzImage": "/nonexistent/bzImage"})


@dataclass
class FakeTester:
    needs: Sequence[str]
    calls: list[int] = field(default_factory=list)
    closed: bool = False

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        self.calls.append(runs)
        last = self.builder_configs[-1]
        on = parse_config(last)
        crash = all(on.get(k, "n") != "n" for k in self.needs)
        title = "KASAN: use-after-free Read in f" if crash else None
        return [RunOutcome(i, RunStatus.CRASHED if crash else RunStatus.OK, title=title, duration=10.0)
                for i in range(runs)]

    def close(self) -> None:
        self.closed = True

    builder_configs: list[str] = field(default_factory=list)


def _oracle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builder: FakeBuilder, tester: FakeTester,
            said: list[str]) -> minimizing.Oracle:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(minimizing, "cache_file", lambda tree, commit, request, title:
                        tmp_path / "cache" / "minimized" / f"{commit}-{title[:5]}.json")

    def make_tester(req: ConfigRequest, kernel: Path) -> FakeTester:
        return tester

    def build(tree: Path, rev: str, config: ConfigRequest, **kw: object) -> BuildOutcome:
        assert config.full_config is not None
        tester.builder_configs.append(config.full_config)
        return FakeBuilder.build(builder, tree, rev, config, **kw)  # type: ignore[arg-type]

    builder.build = build  # type: ignore[method-assign]
    return minimizing.Oracle(
        tree=tmp_path, commit="c0ffee", title="KASAN: use-after-free Read in f",
        request=ConfigRequest(full_config=builder.full, full_config_name="bug/.config"),
        builder=builder, make_tester=make_tester,  # type: ignore[arg-type]
        is_target=lambda r: r.title is not None and r.title.startswith("KASAN"),
        vm_slots=2, stopwatch=Stopwatch(), say=said.append, runs=4)


def test_the_job_layer_builds_candidates_in_one_slot_runs_them_and_caches_the_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = load_rules(find_data_file(TABLE_NAME))
    full = _full(16)
    builder = FakeBuilder(render_config(BASE), render_config(full))
    tester = FakeTester(needs=["CONFIG_KASAN", "CONFIG_OPT9"])
    said: list[str] = []
    oracle = _oracle(tmp_path, monkeypatch, builder, tester, said)
    found = minimizing.minimize(oracle, rules, budget=6)
    assert found.config is not None and "CONFIG_OPT9=m" in found.config and "CONFIG_OPT2=" not in found.config
    assert "CONFIG_KASAN=y" in found.config  # a suspect: the title is a KASAN report
    assert {slot for _, slot in builder.builds} == {minimizing.SLOT}
    assert found.config == builder.builds[-1][0] or found.config in [b for b, _ in builder.builds]
    # A crashing candidate stops at its first batch; a clean one runs all 4 runs (2 + 2).
    assert tester.calls[:2] == [2, 2] and tester.closed
    assert any("testing base + suspects" in s for s in said) and any("no crash (4 runs)" in s for s in said)
    request = found.request(oracle.request)
    assert request.full_config == found.config and "reproducer-minimized" in request.describe()
    again = minimizing.cached(tmp_path, "c0ffee", oracle.request, oracle.title)
    assert again == found
    assert minimizing.cached(tmp_path, "c0ffee", oracle.request, None) is None


def test_a_candidate_that_does_not_build_counts_as_no_crash_and_the_full_config_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = load_rules(find_data_file(TABLE_NAME))
    builder = FakeBuilder(render_config(BASE), render_config(_full(8)), fail=True)
    tester = FakeTester(needs=[])
    said: list[str] = []
    found = minimizing.minimize(_oracle(tmp_path, monkeypatch, builder, tester, said), rules, budget=3)
    assert found.config is None and not tester.calls
    assert "did not build: arch/x86/foo.c:1: error: boom" in "\n".join(said)
    assert found.request(ConfigRequest(full_config="CONFIG_X=y\n")).full_config == "CONFIG_X=y\n"


def test_a_corrupt_cache_entry_is_minimized_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builder = FakeBuilder(render_config(BASE), render_config(_full(8)))
    oracle = _oracle(tmp_path, monkeypatch, builder, FakeTester(needs=[]), [])
    path = minimizing.cache_file(tmp_path, "c0ffee", oracle.request, oracle.title)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00\xff not json")
    assert minimizing.cached(tmp_path, "c0ffee", oracle.request, oracle.title) is None


def test_an_unwritable_cache_loses_only_the_reuse_not_the_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = load_rules(find_data_file(TABLE_NAME))
    builder = FakeBuilder(render_config(BASE), render_config(_full(8)))
    said: list[str] = []
    oracle = _oracle(tmp_path, monkeypatch, builder, FakeTester(needs=["CONFIG_OPT5"]), said)
    blocker = tmp_path / "cache"
    blocker.mkdir()
    (blocker / "minimized").write_text("a file where the cache's directory goes\n")
    found = minimizing.minimize(oracle, rules, budget=6)
    assert found.config is not None and "CONFIG_OPT5=y" in found.config
    assert any("warning: the minimized config is not cached" in s for s in said), said
    assert minimizing.cached(tmp_path, "c0ffee", oracle.request, oracle.title) is None
