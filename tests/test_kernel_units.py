"""Unit tests of the kernel builder's pure parts: configs, compiler table, log
parsing, demo history data. No builds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kvmlab.errors import ConfigError
from kvmlab.kernel import compilers
from kvmlab.kernel.builder import build_key, ccache_counts, first_error
from kvmlab.kernel.config import (
    DEFAULT_FRAGMENTS_DIR,
    ConfigRequest,
    available_fragments,
    config_hash,
    dropped_options,
    load_fragment,
    merge,
    parse_config,
    render_config,
)
from kvmlab.kernel.demo_tree import (
    DemoSource,
    DemoTree,
    Edit,
    apply_edit,
    load_history,
    source_differs,
    strip_debian_gitignore,
)

pytestmark = pytest.mark.unit


def test_parse_config_handles_set_unset_and_comments() -> None:
    text = "# header\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=0x10\n\nCONFIG_A=n\n"
    assert parse_config(text) == {"CONFIG_A": "n", "CONFIG_B": "n", "CONFIG_C": '"x y"', "CONFIG_D": "0x10"}


def test_parse_config_names_bad_line() -> None:
    with pytest.raises(ConfigError, match=r"frag:2: not a kernel config line"):
        parse_config("CONFIG_A=y\nFOO=1\n", source="frag")


def test_merge_later_wins_and_render_roundtrips() -> None:
    merged = merge([{"CONFIG_A": "y", "CONFIG_B": "y"}, {"CONFIG_A": "n", "CONFIG_C": "8"}])
    assert merged == {"CONFIG_B": "y", "CONFIG_A": "n", "CONFIG_C": "8"}
    assert parse_config(render_config(merged)) == merged
    assert "# CONFIG_A is not set" in render_config(merged)


def test_dropped_options_normalises_values() -> None:
    requested = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "0x10", "CONFIG_D": "y", "CONFIG_E": "n"}
    final = {"CONFIG_A": "y", "CONFIG_C": "16", "CONFIG_D": "n", "CONFIG_E": "n"}
    assert [str(d) for d in dropped_options(requested, final)] == ["CONFIG_D=y (got n)"]


def test_config_hash_ignores_comments_and_order() -> None:
    a = "# Linux/x86 6.1 Kernel Configuration\nCONFIG_A=y\n# CONFIG_B is not set\n"
    b = "# CONFIG_B is not set\n# other header\nCONFIG_A=y\n"
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash("CONFIG_A=y\nCONFIG_B=y\n")


def test_shipped_fragments_parse_and_include_the_required_ones() -> None:
    names = available_fragments()
    for want in ("base", "kasan", "smp", "preempt", "debug"):
        assert want in names
    base = load_fragment("base").options
    for opt in ("CONFIG_SERIAL_8250_CONSOLE", "CONFIG_VIRTIO_NET", "CONFIG_VIRTIO_BLK", "CONFIG_EXT4_FS",
                "CONFIG_DEVTMPFS_MOUNT", "CONFIG_BLK_DEV_INITRD", "CONFIG_KALLSYMS", "CONFIG_PACKET",
                "CONFIG_INIT_ON_FREE_DEFAULT_ON"):
        assert base[opt] == "y", opt
    assert load_fragment("kasan").options["CONFIG_KASAN"] == "y"


def test_unknown_fragment_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown config fragment 'nope' \(known in .*base"):
        ConfigRequest.from_fragments(["base", "nope"]).requested()


def test_config_request_full_config_with_fragments_on_top(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ConfigRequest()
    cfg = tmp_path / "my.config"
    cfg.write_text("CONFIG_A=y\nCONFIG_KASAN=n\n")
    assert ConfigRequest.from_file(cfg).requested() == {"CONFIG_A": "y", "CONFIG_KASAN": "n"}
    layered = ConfigRequest.from_file(cfg, ["kasan"])
    assert layered.requested()["CONFIG_KASAN"] == "y" and layered.requested()["CONFIG_A"] == "y"
    # The request's name (part of the cache's request key) carries the
    # config's hash: another config, another key.
    other = tmp_path / "other.config"
    other.write_text("CONFIG_A=m\n")
    assert ConfigRequest.from_file(cfg).describe().startswith("config my.config@")
    assert ConfigRequest.from_file(cfg).describe() != ConfigRequest.from_file(other).describe()
    assert layered.describe().endswith("+kasan")
    assert ConfigRequest.from_fragments(["base", "kasan"]).describe() == "base,kasan"


def test_config_changes_summary_counts_toolchain_options() -> None:
    from kvmlab.kernel.config import Dropped, is_toolchain_option, summarize_changes

    assert is_toolchain_option("CONFIG_CC_VERSION_TEXT") and is_toolchain_option("CONFIG_CLANG_VERSION")
    assert not is_toolchain_option("CONFIG_KASAN")
    line = summarize_changes([Dropped("CONFIG_CLANG_VERSION", "150006", "0"),
                              Dropped("CONFIG_CC_IS_CLANG", "y", "n"), Dropped("CONFIG_TUN", "y", "n")])
    assert line == "1 option changed: CONFIG_TUN=y (got n); 2 tool-chain options follow this compiler"


def test_compiler_table_ranges(tmp_path: Path) -> None:
    rules = compilers.load_table(DEFAULT_FRAGMENTS_DIR / "compilers.yaml")
    assert compilers.choose(rules, (4, 19)).cc == "gcc-11"
    assert compilers.choose(rules, (5, 10)).package == "gcc-11"
    assert compilers.choose(rules, (6, 1)).cc == "gcc-12"
    bad = tmp_path / "c.yaml"
    bad.write_text("compilers:\n  - cc: gcc\n    sinse: '4.1'\n")
    with pytest.raises(ConfigError, match=r"unknown key 'sinse'"):
        compilers.load_table(bad)
    clang = tmp_path / "clang.yaml"
    clang.write_text("compilers:\n  - cc: clang-15\n    since: '6.0'\n  - cc: gcc-12\n")
    rule = compilers.choose(compilers.load_table(clang), (6, 1))
    assert rule.llvm and rule.package == "clang-15 lld-15 llvm-15"
    assert not compilers.choose(compilers.load_table(clang), (5, 4)).llvm


def test_missing_compiler_names_the_package() -> None:
    from kvmlab.errors import HostToolError

    with pytest.raises(HostToolError,
                       match=r"'clang-99' is not installed.*apt-get install clang-99 lld-99 llvm-99"):
        compilers.resolve("clang-99")
    with pytest.raises(HostToolError, match=r"apt-get install gcc-7$"):
        compilers.resolve("gcc-7")


def test_kernel_version_from_makefile() -> None:
    assert compilers.kernel_version("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\n") == (6, 1)


def test_compiler_resolve_reads_version() -> None:
    cc = compilers.resolve("gcc")
    # syzbot's compiler string: the compiler's and the linker's versions.
    assert cc.version.startswith("gcc") and "\n" not in cc.version and ", GNU ld" in cc.version
    assert not cc.llvm


def test_first_error_prefers_compiler_error() -> None:
    log = (
        "  CC      kernel/panic.o\n"
        "/src/kernel/panic.c:407:17: error: implicit declaration of function 'foo' [-Werror=...]\n"
        "  407 |   foo(1);\n"
        "make[3]: *** [scripts/Makefile.build:250: kernel/panic.o] Error 1\n"
    )
    assert first_error(log).startswith("/src/kernel/panic.c:407:17: error: implicit declaration")
    link = "ld: vmlinux.o: undefined reference to `bar'\nmake: *** [x] Error 1\n"
    assert first_error(link).startswith("ld:")


def test_ccache_counts() -> None:
    log = "# a.c\ncache_miss\ndirect_cache_miss\n# b.c\ndirect_cache_hit\n# c.c\npreprocessed_cache_hit\n"
    assert ccache_counts(log) == (2, 1)


def test_build_key_depends_on_all_three() -> None:
    k = build_key("t", "c", "gcc 12")
    assert k != build_key("t2", "c", "gcc 12") != build_key("t", "c2", "gcc 12")
    assert k != build_key("t", "c", "gcc 8")


def test_apply_edit_needs_exactly_one_match() -> None:
    assert apply_edit("a b c", Edit("f", "b", "B")) == "a B c"
    with pytest.raises(ConfigError, match="found 2 times"):
        apply_edit("b b", Edit("f", "b", "B"))


def test_strip_debian_gitignore() -> None:
    text = "*.o\n\n#\n# Debian packaging: ignore everything at the top level, since ...\n#\n/*\n!/debian/\n"
    assert strip_debian_gitignore(text) == "*.o\n"
    assert strip_debian_gitignore("*.o\n") == "*.o\n"


def test_demo_history_shape() -> None:
    h = load_history()
    assert len(h.steps) >= 42
    marks = [m for s in h.steps for m in s.marks]
    assert sorted(marks) == ["breaks", "culprit", "fixes", "flaky_culprit"]
    idx = {m: i for i, s in enumerate(h.steps) for m in s.marks}
    assert 2 <= idx["fixes"] - idx["breaks"] <= 3
    assert idx["fixes"] < idx["culprit"] < idx["flaky_culprit"]
    assert len({e.file for s in h.steps for e in s.edits}) >= 10
    for name, bug in h.bugs.items():
        assert name in idx
        assert (Path(__file__).parent.parent / "kvmlab/kernel/demo" / bug.reproducer).is_file()


def test_demo_tree_info_round_trips_its_source_and_reads_older_files(tmp_path: Path) -> None:
    tree = tmp_path / "linux-demo"
    tarball = tmp_path / "src.tar"
    tarball.write_bytes(b"one source")
    src = DemoSource(str(tarball), "6.1.192", "ab" * 20, sha256=hashlib.sha256(b"one source").hexdigest())
    demo = DemoTree(tree, "b" * 40, "h" * 40, "c" * 40, "f" * 40, [], "x" * 40, ["h" * 40], source=src)
    demo.info_path.write_text(json.dumps(demo.to_json()))
    assert DemoTree.load(tree) == demo
    assert source_differs(demo, tarball) == ""
    tarball.write_bytes(b"the next point release")
    assert "is not the source this demo tree was made from" in source_differs(demo, tarball)
    older = demo.to_json()
    del older["source"]
    demo.info_path.write_text(json.dumps(older))
    assert DemoTree.load(tree).source is None


def test_build_progress_in_a_log_file_is_one_line_per_phase_and_a_minute(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from kvmlab.kernel.builder import Progress
    from kvmlab.ui import ticker as mod

    clock = [0.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: clock[0])
    ticker = mod.BuildTicker()
    assert not ticker.tty  # pytest captures stderr
    for t, phase, objs in [(0, "config", 0), (5, "compile", 1), (30, "compile", 200), (66, "compile", 410),
                           (70, "compile", 420), (130, "compile", 800), (131, "done", 800)]:
        clock[0] = float(t)
        ticker(Progress(phase, objs, "  CC  x.o", float(t)))
    assert capsys.readouterr().err.splitlines() == [
        "kvmlab: config (0 s)", "kvmlab: compile (1 objects, 5 s)", "kvmlab: compile (410 objects, 66 s)",
        "kvmlab: compile (800 objects, 130 s)", "kvmlab: done (131 s)",
    ]
