"""Relevance to the build on a real kernel build: the demo tree's base build
(the suite's shared one, no extra build) lists the files its ``.cmd``
dependency files name, and the demo range's commits are classified against
it with the real git layer."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    for path in ("Documentation/admin-guide/README.rst", "drivers/gpu/drm/i915/i915_drv.c",
                 "arch/arm64/kernel/setup.c", "tools/perf/builtin-top.c", "sound/core/pcm.c"):
        assert (demo_tree.path / path).is_file(), path
        assert not files.relevant(path), path


def test_demo_range_classified(base_kernel: BuildOutcome, demo_tree: DemoTree) -> None:
    """Every commit of the demo range changes a file: the ones in code the base
    config builds are relevant, the others (drivers it does not build) not."""
    files = _files(base_kernel)
    repo = GitRepository(demo_tree.path)
    head = repo.resolve("HEAD")
    changed = repo.changed_paths(head, [demo_tree.base])
    assert len(changed) == len(repo.graph(head, [demo_tree.base]))
    relevant = {c for c, paths in changed.items() if files.touches(paths)}
    culprit = repo.resolve(demo_tree.culprit)
    assert culprit in relevant
    assert all(paths for paths in changed.values())
    # Which side each commit falls on follows from the files alone.
    for c, paths in changed.items():
        assert (c in relevant) == any(p in files.files or Path(p).name.startswith(("Kconfig", "Makefile"))
                                      or p.startswith("scripts/") for p in paths), (c, paths)
