"""Relevance to the build on a real kernel build: the demo tree's base build
(the suite's shared one, no extra build) lists the files its ``.cmd``
dependency files name, and the demo range's commits are classified against
it with the real git layer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.bisect import GitRepository
from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.kernel.relevance import BuildFiles, read_inputs
from kvmlab.outcome import BuildOutcome, BuildStatus

pytestmark = [pytest.mark.kernel]


def _files(base_kernel: BuildOutcome) -> BuildFiles:
    assert base_kernel.status is BuildStatus.OK, base_kernel.error
    if "inputs" not in base_kernel.artifacts:
        pytest.skip("the cached base build was made by a kvmlab that did not keep inputs.txt "
                    "(clear the test cache's kernel/work/builds to rebuild it)")
    return BuildFiles(read_inputs(Path(base_kernel.artifacts["inputs"])))


def test_base_build_lists_what_it_read(base_kernel: BuildOutcome, demo_tree: DemoTree) -> None:
    files = _files(base_kernel)
    # Thousands of sources and headers, all of them real files of the tree.
    assert len(files.files) > 1000
    for path in sorted(files.files)[::97]:
        assert (demo_tree.path / path).is_file(), path
    for path in ("kernel/sys.c", "mm/slub.c", "include/linux/sched.h", "arch/x86/kernel/setup.c"):
        assert files.relevant(path), path
    assert files.tools  # x86_64 with ORC builds objtool
    for path in ("Documentation/admin-guide/README.rst", "drivers/gpu/drm/i915/i915_driver.c",
                 "arch/arm64/kernel/setup.c", "tools/perf/builtin-top.c", "sound/core/pcm.c"):
        assert (demo_tree.path / path).is_file(), path
        assert not files.relevant(path), path


def test_demo_range_classified(base_kernel: BuildOutcome, demo_tree: DemoTree, tmp_path: Path) -> None:
    """The demo range's commits all change code the base config builds: all
    relevant. Three commits made on top of its head (objects only, on no
    branch) touching documentation, a driver the config does not build and
    kernel/sys.c: only the last is."""
    files = _files(base_kernel)
    repo = GitRepository(demo_tree.path)
    changed = repo.changed_paths(demo_tree.head, [demo_tree.base])
    assert len(changed) == len(demo_tree.commits)
    assert all(files.touches(paths) for paths in changed.values()), \
        [c for c, p in changed.items() if not files.touches(p)]
    env = {**os.environ, "GIT_INDEX_FILE": str(tmp_path / "index"), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}

    def git(*args: str, text: str | None = None) -> str:
        return proc.run(["git", "-C", str(demo_tree.path), *args], timeout=120, env=env,
                        input_text=text).stdout.strip()

    tip = demo_tree.head
    made = {}
    for path in ("Documentation/admin-guide/README.rst", "drivers/gpu/drm/i915/i915_driver.c",
                 "kernel/sys.c"):
        git("read-tree", tip)
        changed_text = git("show", f"{tip}:{path}") + "\n/* kvmlab test */\n"
        blob = git("hash-object", "-w", "--stdin", text=changed_text)
        git("update-index", "--cacheinfo", f"100644,{blob},{path}")
        tip = made[path] = git("commit-tree", git("write-tree"), "-p", tip, "-m", f"touch {path}")
    got = repo.changed_paths(tip, [demo_tree.head])
    assert {made[p]: files.touches(got[made[p]]) for p in made} == {
        made["Documentation/admin-guide/README.rst"]: False,
        made["drivers/gpu/drm/i915/i915_driver.c"]: False,
        made["kernel/sys.c"]: True,
    }
