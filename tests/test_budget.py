"""The test budget's deferral: which tests wait for the end of the run, and
when they are skipped instead of run."""

from __future__ import annotations

import os

import pytest

from tests import budget
from tests.conftest import REPO

pytestmark = pytest.mark.unit

DEMO, FLAKY = "tests/test_demo_e2e.py::test_demo_finds_the_planted_culprit[culprit]", \
    "tests/test_demo_e2e.py::test_demo_finds_the_planted_culprit[flaky_culprit]"


class _Item:
    def __init__(self, nodeid: str, *fixturenames: str) -> None:
        self.nodeid, self.fixturenames = nodeid, fixturenames


def test_deferred_groups_run_last_in_table_order_and_the_rest_keeps_its_order() -> None:
    items = [_Item(FLAKY), _Item("a::t1"), _Item("b::t_gdb", "tmp_path", "gdb_kernel"), _Item(DEMO),
             _Item("a::t2"), _Item("c::t_kasan", "kasan_culprit")]
    ordered = budget.order(items)  # type: ignore[arg-type]
    assert [i.nodeid for i in ordered] == ["a::t1", "a::t2", "b::t_gdb", "c::t_kasan", DEMO, FLAKY]


def test_a_group_runs_when_it_fits_and_counts_a_cold_build_on_a_fresh_machine() -> None:
    debug = next(g for g in budget.DEFERRED if g.build_minutes[1])
    assert debug.build_minutes[1] > debug.build_minutes[0] > 0
    warm_fit = 45 - debug.estimate(cold=False)
    assert budget.decide(debug, warm_fit, cold=False, budget=45) is None
    why = budget.decide(debug, warm_fit, cold=True, budget=45)
    assert why is not None and "cold ccache" in why and "KVMLAB_TEST_BUDGET=0" in why
    assert budget.decide(debug, 500, cold=True, budget=None) is None


def test_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVMLAB_TEST_BUDGET", raising=False)
    assert budget.budget_minutes() == budget.BUDGET_MINUTES
    monkeypatch.setenv("KVMLAB_TEST_BUDGET", "0")
    assert budget.budget_minutes() is None
    monkeypatch.setenv("KVMLAB_TEST_BUDGET", "30")
    assert budget.budget_minutes() == 30
    monkeypatch.setenv("KVMLAB_TEST_BUDGET", "soon")
    with pytest.raises(pytest.UsageError, match="KVMLAB_TEST_BUDGET='soon'"):
        budget.budget_minutes()


def test_suite_start_comes_from_test_sh_when_sane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMLAB_SUITE_STARTED", "1000")
    assert budget.suite_started(2000.0) == 1000.0
    assert budget.suite_started(1000.0 + 7 * 3600) == 1000.0 + 7 * 3600  # stale: ignored
    monkeypatch.setenv("KVMLAB_SUITE_STARTED", "yesterday")
    assert budget.suite_started(2000.0) == 2000.0


def test_an_over_budget_group_is_skipped_with_its_figures(pytester: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_demo_e2e="""
        import pytest

        @pytest.mark.parametrize("bug", ["culprit", "flaky_culprit"])
        def test_demo_finds_the_planted_culprit(bug):
            pass

        def test_plain():
            pass
    """)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("KVMLAB_TEST_CACHE", str(pytester.path / "cache"))
    monkeypatch.setenv("KVMLAB_TEST_BUDGET", "10")
    # Started 5 minutes ago: the 9.5 min demo does not fit in what is left.
    monkeypatch.setenv("KVMLAB_SUITE_STARTED", str(int(__import__("time").time()) - 300))
    res = pytester.runpytest_subprocess("-p", "tests.conftest", "-p", "no:cacheprovider", "-v", "-rs")
    res.assert_outcomes(passed=1, skipped=2)
    res.stdout.fnmatch_lines(["*test_plain PASSED*", "*culprit* SKIPPED*", "*flaky_culprit* SKIPPED*",
                              "deferred the demo bisection of the deterministic bug: skipped (at 5.*",
                              "*deferred, over the 10 min test budget: 5.* min gone + ~10 min for the demo "
                              "bisection of the deterministic bug*"])
    monkeypatch.setenv("KVMLAB_TEST_BUDGET", "0")
    pytester.runpytest_subprocess("-p", "tests.conftest", "-p", "no:cacheprovider").assert_outcomes(passed=3)
