"""The suite's own safety nets: a test that leaves a process running is the
test that errors, by name, and what it left is gone before the next test."""

from __future__ import annotations

import os

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit


def test_a_leaked_process_fails_the_test_that_leaked_it_only(pytester: pytest.Pytester,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_leaky="""
        import subprocess, psutil

        def test_leaks():
            subprocess.Popen(["sleep", "300"])

        def test_after_it():
            assert not [p for p in psutil.Process().children(recursive=True)
                        if p.status() != psutil.STATUS_ZOMBIE], "the leak reached the next test"
    """)
    env_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", env_path)
    res = pytester.runpytest_subprocess("-p", "tests.conftest", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=2, errors=1)
    res.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks*",
                              "*test_leaky.py::test_leaks left behind: process * sleep 300*"])
