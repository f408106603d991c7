"""Known build fixes for older kernels (issue 25 point 3): the data table,
and applying fixes over a throwaway git history with a fake build that fails
the way an old kernel fails with today's compilers."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.bisect import LogWriter, bisect
from kvmlab.bisect.journal import build_from_json, build_to_json
from kvmlab.errors import ConfigError
from kvmlab.git import Repo
from kvmlab.kernel.config import find_data_file
from kvmlab.kernel.fixes import TABLE_NAME, BuildFix, build_with_fixes, load_table, matching
from kvmlab.outcome import BuildOutcome, BuildStatus
from tests.relevance_history import BUILT, RelevanceTester, make_path_history

pytestmark = pytest.mark.unit

_ENV = {"GIT_AUTHOR_NAME": "A", "GIT_AUTHOR_EMAIL": "a@example.org", "GIT_COMMITTER_NAME": "C",
        "GIT_COMMITTER_EMAIL": "c@example.org", "GIT_AUTHOR_DATE": "2019-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2019-01-01T00:00:00Z", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent",
        "GIT_CONFIG_NOSYSTEM": "1"}
REALLOC = "util.h:56:23: error: pointer 'ptr' may be used after 'realloc' [-Werror=use-after-free]"
YYLLOC = "/usr/bin/ld: dtc-parser.tab.o: multiple definition of `yylloc'; dtc-lexer.lex.o: first defined here"


def git(path: Path, *args: str) -> str:
    return proc.run(["git", "-C", str(path), *args], timeout=60, env=_ENV).stdout.strip()


def _commit(path: Path, title: str, files: dict[str, str]) -> str:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", title)
    return git(path, "rev-parse", "HEAD")


@pytest.fixture
def old_tree(tmp_path: Path) -> dict[str, str]:
    """``old`` builds with neither fix, ``mid`` is the breakage of the second,
    ``fix1``/``fix2`` the upstream fixes, ``new`` builds as it is."""
    path = tmp_path / "linux"
    path.mkdir()
    git(path, "init", "-q", "-b", "master")
    h = {"path": str(path)}
    h["old"] = _commit(path, "v4.19", {"tools/lib/subcmd/subcmd-util.h": "realloc broken\n",
                                       "scripts/dtc/dtc-lexer.l": "YYLTYPE yylloc;\n", "Makefile": "v\n"})
    h["mid"] = _commit(path, "kernel: more", {"kernel/sys.c": "x\n"})
    h["fix1"] = _commit(path, "libsubcmd: Fix use-after-free for realloc(..., 0)",
                        {"tools/lib/subcmd/subcmd-util.h": "realloc fixed\n"})
    h["fix2"] = _commit(path, "scripts/dtc: Remove redundant YYLOC global declaration",
                        {"scripts/dtc/dtc-lexer.l": "\n"})
    h["new"] = _commit(path, "v5.7", {"kernel/sys.c": "y\n"})
    return h


class FakeBuild:
    """Fails like a gcc-12 build of an old kernel: libsubcmd first, then dtc's link."""

    def __init__(self, tree: Path, logs: Path) -> None:
        self.tree, self.logs = tree, logs
        self.built: list[str] = []

    def __call__(self, rev: str) -> BuildOutcome:
        self.built.append(rev)
        util = git(self.tree, "show", f"{rev}:tools/lib/subcmd/subcmd-util.h")
        lexer = git(self.tree, "show", f"{rev}:scripts/dtc/dtc-lexer.l")
        error = REALLOC if "broken" in util else YYLLOC if "yylloc" in lexer else ""
        if not error:
            return BuildOutcome(rev, BuildStatus.OK, compiler="gcc-12", artifacts={"bzImage": "/x"},
                                duration=10.0)
        self.logs.mkdir(exist_ok=True)
        log = self.logs / f"{rev}.log"
        log.write_text(f"  CC      something.o\n{error}\nmake: *** [Makefile] Error 2\n")
        return BuildOutcome(rev, BuildStatus.FAILED, compiler="gcc-12", error=error,
                            artifacts={"build.log": str(log)}, log_tail=error, duration=5.0)


def _table(h: dict[str, str], *, after: str | None = None) -> list[BuildFix]:
    return [BuildFix("libsubcmd: Fix use-after-free for realloc(..., 0)", h["fix1"],
                     re.compile(r"pointer .* may be used after .realloc.")),
            BuildFix("scripts/dtc: Remove redundant YYLOC global declaration", h["fix2"],
                     re.compile(r"multiple definition of .yylloc."), after=after)]


def test_fixes_applied_in_rounds_until_it_builds(old_tree: dict[str, str], tmp_path: Path) -> None:
    tree = Path(old_tree["path"])
    build = FakeBuild(tree, tmp_path / "logs")
    said: list[str] = []
    out = build_with_fixes(Repo(tree), old_tree["old"], build, _table(old_tree), say=said.append)
    assert out.status is BuildStatus.OK
    assert out.commit == old_tree["old"]  # the asked-for commit, built with the fixes on top
    assert out.fixes == (f"{old_tree['fix1']} libsubcmd: Fix use-after-free for realloc(..., 0)",
                         f"{old_tree['fix2']} scripts/dtc: Remove redundant YYLOC global declaration")
    assert len(build.built) == 3  # as it is, with the first fix, with both
    patched = build.built[-1]
    assert git(tree, "rev-parse", f"{patched}~2") == old_tree["old"]
    # old's tree with the two fixes' changes only (not mid's kernel/sys.c).
    assert "kernel/sys.c" not in git(tree, "ls-tree", "-r", "--name-only", patched).split()
    assert git(tree, "show", f"{patched}:scripts/dtc/dtc-lexer.l") == ""
    assert git(tree, "show", f"{patched}:tools/lib/subcmd/subcmd-util.h") == "realloc fixed"
    assert git(tree, "branch", "--list") == "* master"  # no branch made, no checkout changed
    assert git(tree, "rev-parse", "HEAD") == old_tree["new"]
    assert [line.split(":")[0] for line in said] == ["kvmlab"] * 2
    assert "applying the known fix" in said[0] and old_tree["fix1"][:12] in said[0]


def test_a_commit_that_builds_gets_no_fix(old_tree: dict[str, str], tmp_path: Path) -> None:
    tree = Path(old_tree["path"])
    build = FakeBuild(tree, tmp_path / "logs")
    out = build_with_fixes(Repo(tree), old_tree["new"], build, _table(old_tree))
    assert out.status is BuildStatus.OK and out.fixes == () and build.built == [old_tree["new"]]


def test_fix_not_applied_before_its_breakage(old_tree: dict[str, str], tmp_path: Path) -> None:
    """With ``after``, the dtc fix is only for commits that contain the
    breakage (``mid`` here): ``old`` keeps its failure, with the reason said."""
    tree = Path(old_tree["path"])
    build = FakeBuild(tree, tmp_path / "logs")
    said: list[str] = []
    out = build_with_fixes(Repo(tree), old_tree["old"], build, _table(old_tree, after=old_tree["mid"]),
                           say=said.append)
    assert out.status is BuildStatus.FAILED and out.fixes == ()
    assert out.commit == old_tree["old"] and out.error == REALLOC  # the commit's own failure
    assert any("predates the breakage" in line for line in said)
    assert any("still does not build with the known fixes" in line for line in said)


def test_fix_commit_missing_from_the_tree(old_tree: dict[str, str], tmp_path: Path) -> None:
    tree = Path(old_tree["path"])
    build = FakeBuild(tree, tmp_path / "logs")
    said: list[str] = []
    table = [BuildFix("libsubcmd: Fix use-after-free for realloc(..., 0)", "1" * 40,
                      re.compile("may be used after"))]
    out = build_with_fixes(Repo(tree), old_tree["old"], build, table, say=said.append)
    assert out.status is BuildStatus.FAILED and out.fixes == () and len(build.built) == 1
    assert said == [f"kvmlab: known build fix 111111111111 (\"{table[0].title}\") not applied to "
                    f"{old_tree['old'][:12]}: the fix commit is not in this tree (fetch mainline to use it)"]


def test_unknown_error_gets_no_fix(old_tree: dict[str, str]) -> None:
    assert matching(_table(old_tree), "error: implicit declaration of function 'foo'") == []
    assert [f.commit for f in matching(_table(old_tree), f"x\n{YYLLOC}\n")] == [old_tree["fix2"]]


def test_shipped_table_loads() -> None:
    table = load_table(find_data_file(TABLE_NAME))
    assert len(table) >= 4
    assert all(re.fullmatch(r"[0-9a-f]{40}", f.commit) for f in table)
    assert matching(table, REALLOC) and matching(table, YYLLOC)


@pytest.mark.parametrize(("entry", "message"), [
    ("  - {title: t, commit: %s, error: e, colour: red}\n", "unknown key 'colour'"),
    ("  - {title: t, commit: abc123, error: e}\n", "'commit' must be a full 40-hex commit hash"),
    ("  - {title: t, commit: %s, error: '('}\n", "'error' is not a regular expression"),
    ("  - {commit: %s, error: e}\n", "'title' is required"),
])
def test_bad_table_is_one_error(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / TABLE_NAME
    path.write_text("fixes:\n" + (entry % ("a" * 40) if "%s" in entry else entry))
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        load_table(path)
    assert str(path) in str(e.value) and "fixes[0]" in str(e.value)


def test_fixes_survive_the_journal() -> None:
    b = BuildOutcome("c" * 40, BuildStatus.OK, fixes=("f" * 40 + " a fix",))
    assert build_from_json(build_to_json(b)) == b
    assert build_from_json({"commit": "c", "status": "ok"}).fixes == ()


def test_bisection_log_names_the_fixes(tmp_path: Path) -> None:
    hist = make_path_history(tmp_path / "repo", [[], [BUILT[0]], [BUILT[1]], [BUILT[2]], [BUILT[3]]])
    fix = "f" * 40 + " objtool: a fix"

    class Fixed(RelevanceTester):
        def build(self, commit: str) -> BuildOutcome:
            out = super().build(commit)
            return dataclasses.replace(out, fixes=(fix,)) if commit == hist.h["2"] else out

    lines: list[str] = []
    res = bisect(hist.repo, Fixed(hist, culprit="2"), bad=hist.h["4"], good=hist.h["0"],
                 log=LogWriter(lines.append), verify=False)
    assert res.culprit == hist.h["2"]
    at = lines.index(f"testing commit {hist.h['2']} with gcc (GCC) 12.2.0")
    assert lines[at + 1] == (f"kvmlab: built with the known build fix {fix} applied (it does not build with "
                             "this tool-chain as it is)")
