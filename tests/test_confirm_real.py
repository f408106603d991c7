"""Confirm by revert, for real: bisections of the demo's deterministic bug with
kernel builds and VM runs, ending in a revert that is not confirmed (the user
gave a good commit that already had the bug) and one that does not apply
cleanly (a later commit rewrote one of the culprit's files). The confirmed
case is the demo's own end-to-end bisection (test_demo_e2e.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.cli import main
from kvmlab.kernel.demo_tree import DemoTree
from tests.fixtures_kernel import TEST_CONFIG
from tests.test_demo_e2e import _share_kernel_cache

pytestmark = [pytest.mark.vm, pytest.mark.kernel, pytest.mark.slow]

_GIT_ENV = {"GIT_AUTHOR_NAME": "A Developer", "GIT_AUTHOR_EMAIL": "dev@example.org",
            "GIT_COMMITTER_NAME": "A Developer", "GIT_COMMITTER_EMAIL": "dev@example.org",
            "GIT_AUTHOR_DATE": "2022-12-14T12:00:00+00:00", "GIT_COMMITTER_DATE": "2022-12-14T12:00:00+00:00"}


def _git(tree: Path, *args: str, env: dict[str, str] | None = None, text: str | None = None) -> str:
    return proc.run(["git", "-C", str(tree), *args], timeout=120, env={**os.environ, **(env or {})},
                    input_text=text).stdout.strip()


def _bisect(demo: DemoTree, tmp_path: Path, bad: str, good: str) -> tuple[int, str, dict[str, object]]:
    out_json = tmp_path / "result.json"
    rc = main(["bisect", "--tree", str(demo.path), "--bad", bad, "--good", good,
               str(demo.reproducers["culprit"]), "--count", "2", "--cpus", "1", "--memory-mb", "512",
               "--run-time", "20", "--config", ",".join(TEST_CONFIG), "--workdir", str(tmp_path / "work"),
               "--json", str(out_json)])
    return rc, "", json.loads(out_json.read_text())


def test_wrong_good_commit_is_caught_by_the_revert(demo_tree: DemoTree, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The good commit given already has the bug: every tested commit crashes and
    the first one of the range is named. Reverting it changes nothing: the
    crash stays, and the culprit is reported doubtful."""
    _share_kernel_cache(monkeypatch, tmp_path)
    commits = demo_tree.commits
    i = commits.index(demo_tree.culprit)
    good, bad = commits[i + 2], commits[i + 5]
    rc, _, result = _bisect(demo_tree, tmp_path, bad, good)
    out = capsys.readouterr().out
    named = commits[i + 3]
    assert result["culprit"] == named, out[-3000:]
    assert f"not confirmed: still crashes with {named[:12]} reverted (" in out, out[-3000:]
    assert "warning: the culprit is doubtful" in out
    assert result["doubtful"] is True
    # Checked on the bad commit and on the tree's HEAD (newer, with the culprit).
    checks = result["confirmations"]
    assert [c["base"] for c in checks] == [bad, demo_tree.head]  # type: ignore[attr-defined]
    assert all(c["status"] == "not-confirmed" for c in checks)  # type: ignore[attr-defined]
    assert rc == 0


def test_revert_that_does_not_apply_cleanly(demo_tree: DemoTree, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A later commit (made here, on no branch) adds a line next to the
    culprit's in include/uapi/linux/prctl.h: the revert of the culprit does not
    apply as a whole; kernel/sys.c's part does, and with it the crash is gone."""
    _share_kernel_cache(monkeypatch, tmp_path)
    tree = demo_tree.path
    commits = demo_tree.commits
    i = commits.index(demo_tree.culprit)
    base = commits[i + 1]
    header = "include/uapi/linux/prctl.h"
    text = _git(tree, "show", f"{base}:{header}")
    anchor = "#define PR_GET_COMM_DIGEST\t\t65\n"
    assert anchor in text + "\n"
    changed = text.replace(anchor.rstrip("\n"), anchor + "/* the digest is seeded with the pid */", 1) + "\n"
    index = tmp_path / "index"
    env = {**_GIT_ENV, "GIT_INDEX_FILE": str(index)}
    _git(tree, "read-tree", base, env=env)
    blob = _git(tree, "hash-object", "-w", "--stdin", text=changed)
    _git(tree, "update-index", "--cacheinfo", f"100644,{blob},{header}", env=env)
    later = _git(tree, "commit-tree", _git(tree, "write-tree", env=env), "-p", base,
                 "-m", "prctl: note how the comm digest is seeded", env=env)
    rc, _, result = _bisect(demo_tree, tmp_path, later, commits[i - 1])
    out = capsys.readouterr().out
    assert result["culprit"] == demo_tree.culprit, out[-3000:]
    on_later, on_head = result["confirmations"]  # type: ignore[misc]
    assert on_later["base"] == later and on_head["base"] == demo_tree.head
    assert on_later["applied"] == ["kernel/sys.c"] and on_later["failed"] == [header]
    assert ("the revert does not apply cleanly: reverted only kernel/sys.c "
            f"({header} do not apply); confirmed: the crash is gone") in out
    assert on_later["status"] == "confirmed" and on_later["runs"] >= 2
    # On the demo's HEAD (which lacks the later commit) the planted flaky bug,
    # a commit after the culprit, rewrote the same lines of both files: no part
    # of the revert applies there. That is said, and is no doubt about the culprit.
    assert on_head["status"] == "does-not-apply" and on_head["applied"] == [], on_head
    assert sorted(on_head["failed"]) == sorted([header, "kernel/sys.c"]), on_head
    assert result["doubtful"] is False and rc == 0
