"""Relevance of a commit to the build: the dependency-file reader, the rules,
the folded commit graph, and bisections over throwaway histories where most
commits touch files the build never reads (issue 25, point 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmlab.bisect import CommitGraph, LogWriter, Outcome, bisect
from kvmlab.bisect.graph import fold
from kvmlab.kernel.relevance import (
    BuildFiles,
    parse_cmd,
    read_build_dir,
    read_inputs,
    tree_path,
    write_inputs,
)
from kvmlab.outcome import BuildOutcome
from tests.relevance_history import BUILT, NOT_BUILT, RelevanceTester, make_path_history

pytestmark = pytest.mark.unit

_CMD = """\
cmd_kernel/sys.o := gcc -Wp,-MMD,kernel/.sys.o.d -nostdinc -c -o kernel/sys.o ../src/kernel/sys.c

source_kernel/sys.o := ../src/kernel/sys.c

deps_kernel/sys.o := \\
  ../src/include/linux/compiler-version.h \\
    $(wildcard include/config/CC_VERSION_TEXT) \\
  ../src/include/linux/kconfig.h \\
  include/generated/autoconf.h \\
  /usr/lib/gcc/x86_64-linux-gnu/12/include/stdarg.h \\
  /abs/src/arch/x86/include/asm/unistd.h \\

kernel/sys.o: $(deps_kernel/sys.o)

$(deps_kernel/sys.o):
"""


def test_parse_cmd_takes_source_and_deps() -> None:
    assert parse_cmd(_CMD) == [
        "../src/kernel/sys.c", "../src/include/linux/compiler-version.h", "../src/include/linux/kconfig.h",
        "include/generated/autoconf.h", "/usr/lib/gcc/x86_64-linux-gnu/12/include/stdarg.h",
        "/abs/src/arch/x86/include/asm/unistd.h",
    ]
    assert parse_cmd("cmd_vmlinux := ld -o vmlinux\n") == []
    assert parse_cmd("deps_x.o := a.h b.h\n") == ["a.h", "b.h"]


def test_tree_path() -> None:
    obj, src = Path("/abs/obj"), Path("/abs/src")
    assert tree_path("../src/kernel/sys.c", obj=obj, src=src) == "kernel/sys.c"
    assert tree_path("/abs/src/mm/slub.c", obj=obj, src=src) == "mm/slub.c"
    assert tree_path("include/generated/autoconf.h", obj=obj, src=src) is None  # in the object dir
    assert tree_path("/usr/include/stdio.h", obj=obj, src=src) is None
    assert tree_path("/abs/srcother/x.c", obj=obj, src=src) is None


def test_read_build_dir_and_inputs_file(tmp_path: Path) -> None:
    src, obj = tmp_path / "src", tmp_path / "obj"
    (obj / "kernel").mkdir(parents=True)
    (obj / "kernel" / ".sys.o.cmd").write_text(_CMD)
    (obj / ".vmlinux.cmd").write_text("cmd_vmlinux := ld\n")
    (obj / "kernel" / "sys.o.cmd").write_text("source_x := ../src/not/a/dotfile.c\n")  # not Kbuild's name
    got = read_build_dir(obj, src)
    assert got == {"kernel/sys.c", "include/linux/compiler-version.h", "include/linux/kconfig.h"}
    write_inputs(tmp_path / "inputs.txt", got)
    assert read_inputs(tmp_path / "inputs.txt") == got


@pytest.mark.parametrize(("path", "relevant"), [
    ("kernel/sys.c", True),                                 # read by the build
    ("include/linux/sched.h", True),
    ("kernel/new_file.c", False),                           # not built until a Makefile says so
    ("kernel/Makefile", True),                              # Kconfig/Makefile/Kbuild: always
    ("drivers/gpu/drm/i915/Kconfig", True),
    ("drivers/gpu/drm/i915/Makefile", True),
    ("arch/arm64/Kbuild", True),
    ("scripts/link-vmlinux.sh", True),                      # tools the build runs
    ("arch/x86/entry/syscalls/syscall_64.tbl", True),       # a make-rule input next to built files
    ("kernel/sys.rst", False),                              # documentation next to built files
    ("drivers/gpu/drm/i915/i915_drv.c", False),             # a driver not in the config
    ("arch/arm64/kernel/setup.c", False),                   # another architecture
    ("Documentation/admin-guide/README.rst", False),
    ("tools/perf/builtin-top.c", False),
])
def test_relevant_paths(path: str, relevant: bool) -> None:
    read = {"kernel/sys.c", "include/linux/sched.h", "arch/x86/entry/syscalls/common.c"}
    files = BuildFiles(frozenset(read))
    assert files.relevant(path) is relevant
    assert files.touches(["Documentation/x.rst", path]) is relevant
    assert not files.touches([])  # an empty commit changes nothing


def test_objtool_sources_are_relevant_once_the_build_made_objtool() -> None:
    without = BuildFiles(frozenset({"kernel/sys.c"}))
    made = BuildFiles(frozenset({"kernel/sys.c", "tools/arch/x86/include/asm/insn.h"}))
    for path in ("tools/objtool/check.c", "tools/lib/subcmd/run-command.c"):
        assert not without.relevant(path) and made.relevant(path)
    assert not made.relevant("tools/perf/builtin-top.c")


def _graph(rows: list[tuple[str, tuple[str, ...]]], tip: str) -> CommitGraph:
    return CommitGraph.from_parents([(h, ps, h) for h, ps in rows], tip=tip, boundary=["g"])


def test_fold_keeps_ancestry_between_kept_commits() -> None:
    # g - a - b - m - d (tip), and b's sibling branch x - y merged at m.
    g = _graph([("a", ("g",)), ("b", ("a",)), ("x", ("a",)), ("y", ("x",)), ("m", ("b", "y")),
                ("d", ("m",))], tip="d")
    f = fold(g, {"a", "y", "d"})
    assert [c.hash for c in f.commits] == ["a", "y", "d"]
    assert f.commits[f.index["y"]].parents == ("a",)
    assert f.commits[f.index["d"]].parents == ("a", "y")  # through b and through the merge
    for c in ("a", "y", "d"):
        assert set(f.members(f.closure_of(c))) == set(g.members(g.closure_of(c))) & {"a", "y", "d"}
    assert [c.hash for c in fold(g, set()).commits] == ["d"]  # the tip always stays
    root = fold(g, {"b", "d"})
    assert root.commits[0].parents == ("g",)  # a dropped root keeps its out-of-range parent


def _mixed(n: int, built_at: dict[int, str]) -> list[list[str]]:
    """Commit i touches a file the build does not read, except at ``built_at``."""
    return [[built_at[i]] if i in built_at else [NOT_BUILT[i % len(NOT_BUILT)]] for i in range(n + 1)]


@pytest.mark.parametrize("policy", ["adaptive", "syzbot"])
def test_culprit_in_a_built_file_with_fewer_builds(tmp_path: Path, policy: str) -> None:
    n = 60
    built_at = {7: BUILT[0], 19: BUILT[1], 33: BUILT[2], 41: BUILT[3], 52: BUILT[4]}
    hist = make_path_history(tmp_path / "repo", _mixed(n, built_at))
    runs: dict[bool, tuple[int, int]] = {}
    for relevance in (True, False):
        tester = RelevanceTester(hist, culprit="33")
        lines: list[str] = []
        res = bisect(hist.repo, tester, bad=hist.h[str(n)], good=hist.h["0"], policy=policy,
                     log=LogWriter(lines.append), verify=False, relevance=relevance)
        text = "\n".join(lines)
        assert res.outcome is Outcome.FOUND and res.culprit == hist.h["33"], text
        runs[relevance] = (res.builds, res.vm_runs)
        if relevance:
            # The bad tip (60) is irrelevant too: the 5 built commits and the tip remain.
            assert f"kvmlab: 5 of {n} commits in the range are relevant to the build" in text
            relevant = {hist.h[str(i)] for i in built_at}
            assert set(tester.built) <= relevant | {hist.h[str(n)], hist.h["0"]}, text
            assert res.relevance is not None and res.relevance.relevant == 5
            data = json.loads(json.dumps(res.to_json()))
            assert data["relevance"]["commits"] == n and len(data["relevance"]["irrelevant"]) == n - 5
            assert "the culprit changes no file" not in text
        else:
            assert "relevant to the build" not in text and res.relevance is None
    assert runs[True][0] < runs[False][0], runs


@pytest.mark.parametrize("policy", ["adaptive", "syzbot"])
@pytest.mark.parametrize("culprit_path", ["drivers/gpu/drm/i915/Kconfig", "arch/x86/Makefile"])
def test_kconfig_or_makefile_culprit_is_exact(tmp_path: Path, policy: str, culprit_path: str) -> None:
    """A change to a Kconfig or Makefile the dependency files do not name is
    still a candidate (it can turn a driver on): the bisection names it."""
    n = 40
    hist = make_path_history(tmp_path / "repo", _mixed(n, {9: BUILT[0], 23: culprit_path, 31: BUILT[1]}))
    tester = RelevanceTester(hist, culprit="23")
    lines: list[str] = []
    res = bisect(hist.repo, tester, bad=hist.h[str(n)], good=hist.h["0"], policy=policy,
                 log=LogWriter(lines.append), verify=False)
    assert res.culprit == hist.h["23"], "\n".join(lines)
    assert res.relevance is not None and res.relevance.relevant == 3


def test_merges_are_relevant_through_either_parent(tmp_path: Path) -> None:
    """A side branch with the culprit (in a built file) and documentation,
    merged into a mainline of irrelevant commits: the culprit on the branch is
    named; a merge of a documentation-only branch is folded away."""
    n = 30
    commits = _mixed(n, {4: BUILT[5]})
    side = (10, [["Documentation/side.rst"], [BUILT[0]], ["tools/side/tool.c"], [BUILT[1]]], 20)
    hist = make_path_history(tmp_path / "repo", commits, side=side)
    for culprit in ("b2", "b4", "4"):
        tester = RelevanceTester(hist, culprit=culprit)
        lines: list[str] = []
        res = bisect(hist.repo, tester, bad=hist.h[str(n)], good=hist.h["0"], log=LogWriter(lines.append),
                     verify=False)
        assert res.culprit == hist.h[culprit], "\n".join(lines)
        assert res.relevance is not None
        # 4, b2, b4, and the merge 20 (its diff against the mainline parent is the branch's).
        assert res.relevance.relevant == 4
        assert hist.h["b1"] in res.relevance.irrelevant and hist.h["20"] not in res.relevance.irrelevant


def test_doc_only_merge_is_folded(tmp_path: Path) -> None:
    n = 20
    hist = make_path_history(tmp_path / "repo", _mixed(n, {5: BUILT[0], 15: BUILT[1]}),
                             side=(8, [["Documentation/side.rst"], ["tools/side/tool.c"]], 12))
    tester = RelevanceTester(hist, culprit="15")
    res = bisect(hist.repo, tester, bad=hist.h[str(n)], good=hist.h["0"], verify=False)
    assert res.culprit == hist.h["15"]
    assert res.relevance is not None and hist.h["12"] in res.relevance.irrelevant
    assert res.relevance.relevant == 2


def test_same_kernel_binary_is_one_test(tmp_path: Path) -> None:
    """Commits that touch a built file with comments only build the same
    kernel as their parent: once that kernel crashed, their runs are its runs,
    not run again (clean runs are never reused)."""
    n = 30
    built_at = {i: "kernel/comments.c" for i in range(1, n + 1)} | {17: BUILT[0]}
    hist = make_path_history(tmp_path / "repo", _mixed(n, built_at))
    totals = {}
    for relevance in (True, False):
        tester = RelevanceTester(hist, culprit="17")
        lines: list[str] = []
        res = bisect(hist.repo, tester, bad=hist.h[str(n)], good=hist.h["0"], log=LogWriter(lines.append),
                     verify=False, relevance=relevance)
        text = "\n".join(lines)
        assert res.culprit == hist.h["17"], text
        totals[relevance] = tester.vm_runs
        assert ("builds the same kernel binary as" in text) is relevance
        if relevance:
            reused = [e for e in res.evidence.values() if e.same_as]
            assert reused and all(res.evidence[e.same_as].target_crashes for e in reused if e.same_as)
            assert all(hist.repo.is_ancestor(hist.h["17"], e.commit) for e in reused)
            assert res.vm_runs == tester.vm_runs  # reused runs are not counted twice
    assert totals[True] < totals[False], totals


def test_relevance_unknown_bisects_everything(tmp_path: Path) -> None:
    n = 12
    hist = make_path_history(tmp_path / "repo", _mixed(n, {6: BUILT[0]}))
    tester = RelevanceTester(hist, culprit="6", with_inputs=False)
    lines: list[str] = []
    res = bisect(hist.repo, tester, bad=hist.h[str(n)], good=hist.h["0"], log=LogWriter(lines.append),
                 verify=False)
    assert res.culprit == hist.h["6"]
    assert res.relevance is None
    assert f"relevance to the build unknown (no build listed the files it read): bisecting all {n} commits" \
        in "\n".join(lines)


def test_changed_paths_of_a_range(tmp_path: Path) -> None:
    hist = make_path_history(tmp_path / "repo", [[], [BUILT[0]], [], [NOT_BUILT[0], BUILT[1]]],
                             side=None)
    got = hist.repo.changed_paths(hist.h["3"], [hist.h["0"]])
    assert got == {hist.h["1"]: frozenset({BUILT[0]}), hist.h["2"]: frozenset(),
                   hist.h["3"]: frozenset({NOT_BUILT[0], BUILT[1]})}


def test_no_relevance_option_reaches_the_job() -> None:
    from kvmlab.cli import build_parser
    from kvmlab.commands.bisect import bisect_fields

    args = build_parser().parse_args(["bisect", "--tree", "/t", "--bad", "HEAD", "--no-relevance"])
    assert bisect_fields(args)["relevance"] is False
    args = build_parser().parse_args(["bisect", "--tree", "/t", "--bad", "HEAD"])
    assert "relevance" not in bisect_fields(args)


def test_irrelevant_tip_named_only_with_a_warning(tmp_path: Path) -> None:
    """Nothing in the range touches the build and yet the tip crashes where its
    parent did not: the tip (always kept) is all that is left, and the result
    says it cannot be right."""
    n = 8
    hist = make_path_history(tmp_path / "repo", _mixed(n, {}))
    tester = RelevanceTester(hist, culprit=str(n))
    res = bisect(hist.repo, tester, bad=hist.h[str(n)], good=hist.h["0"], verify=False)
    assert res.relevance is not None and res.relevance.relevant == 0
    assert res.culprit == hist.h[str(n)]
    assert any("changes no file the build reads" in w for w in res.warnings)


def test_resumed_bisection_folds_the_same_range(tmp_path: Path) -> None:
    """Killed after two builds and run again with its journal: the same
    commits are relevant, nothing journaled is built again, same culprit."""
    n = 40
    hist = make_path_history(tmp_path / "repo", _mixed(n, {5: BUILT[0], 12: BUILT[1], 20: BUILT[2],
                                                           28: BUILT[3], 35: BUILT[4]}))

    class Killed(Exception):
        pass

    class Dies(RelevanceTester):
        def build(self, commit: str) -> BuildOutcome:
            if len(self.built) == 2:
                raise Killed(commit)
            return super().build(commit)

    journal = tmp_path / "journal.jsonl"
    first = Dies(hist, culprit="20")
    with pytest.raises(Killed):
        bisect(hist.repo, first, bad=hist.h[str(n)], good=hist.h["0"], journal=journal, verify=False)
    again = RelevanceTester(hist, culprit="20")
    lines: list[str] = []
    res = bisect(hist.repo, again, bad=hist.h[str(n)], good=hist.h["0"], journal=journal, verify=False,
                 log=LogWriter(lines.append))
    assert res.culprit == hist.h["20"]
    assert not set(first.built) & set(again.built)
    assert f"kvmlab: 5 of {n} commits in the range are relevant to the build" in "\n".join(lines)
