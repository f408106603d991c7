"""Config minimization, static half (:mod:`kvmlab.kernel.minimize`): the rules
table against syzbot's real 6.1 KASAN config, the table's validation, the
job layer's request, and Kconfig's own ``olddefconfig`` on the demo tree
keeping what the rules leave."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.errors import ConfigError
from kvmlab.jobs import inputs
from kvmlab.jobs.model import BuildOptions
from kvmlab.kernel.config import find_data_file, parse_config
from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.kernel.minimize import TABLE_NAME, load_rules, minimize
from tests.test_syz_units import SYZ_DIR

SYZBOT_CONFIG = SYZ_DIR / "stable-6.1-kasan-base.config"
needs_config = pytest.mark.skipif(not SYZBOT_CONFIG.is_file(), reason=f"{SYZBOT_CONFIG} missing")
RULES = load_rules(find_data_file(TABLE_NAME))
KASAN_TITLE = "KASAN: use-after-free Read in comm_digest_compute"


def _on(text: str) -> set[str]:
    return {k.removeprefix("CONFIG_") for k, v in parse_config(text).items() if v in ("y", "m")}


@pytest.mark.unit
@needs_config
def test_a_kasan_bug_keeps_kasan_and_drops_the_other_checks_and_dwarf() -> None:
    full = SYZBOT_CONFIG.read_text()
    m = minimize(full, KASAN_TITLE, RULES)
    on = _on(m.text)
    assert {"KASAN", "FAULT_INJECTION", "DEBUG_VM"} <= on  # what the bug or its reproducer may need
    assert not on & {"PROVE_LOCKING", "LOCKDEP", "DEBUG_LOCK_ALLOC", "UBSAN", "DEBUG_ATOMIC_SLEEP",
                     "DEBUG_OBJECTS", "KFENCE", "DEBUG_INFO", "DEBUG_INFO_DWARF4"}
    assert "DEBUG_INFO_NONE" in on
    assert [d.rule for d in m.drops] == ["KFENCE", "UBSAN", "lockdep", "atomic-sleep", "debug-objects",
                                         "debug-info"]
    assert "lockdep (PROVE_LOCKING, DEBUG_LOCK_ALLOC" in m.summary()
    # What depends on them by name is left to Kconfig (not listed as "changed" then).
    lockdep = next(d for d in m.drops if d.rule == "lockdep")
    assert "LOCKDEP_BITS" in lockdep.under and "CONFIG_LOCKDEP_BITS" not in m.text
    assert "and 6 options under them" in lockdep.describe()
    # Every other line of the config is left as it was.
    dropped = {f"CONFIG_{o}" for r in RULES for o in (*r.disable, *r.enable)}
    dropped |= {f"CONFIG_{o}" for d in m.drops for o in d.under}
    kept = {k: v for k, v in parse_config(full).items() if k not in dropped}
    assert {k: v for k, v in parse_config(m.text).items() if k not in dropped} == kept


@pytest.mark.unit
@needs_config
@pytest.mark.parametrize(("title", "kasan", "lockdep"), [
    ("possible deadlock in foo_lock", False, True),
    ("WARNING: suspicious RCU usage in bar", False, True),
    ("WARNING in baz", False, False),
    ("general protection fault in qux", True, False),  # KASAN shapes a wild access into a GPF
    ("BUG: unable to handle kernel NULL pointer dereference in quux", True, False),
    (None, True, True),  # no title: no sanitizer can be ruled out
])
def test_what_a_title_keeps(title: str | None, kasan: bool, lockdep: bool) -> None:
    on = _on(minimize(SYZBOT_CONFIG.read_text(), title, RULES).text)
    assert ("KASAN" in on) is kasan
    assert ("PROVE_LOCKING" in on) is lockdep
    assert "DEBUG_INFO" not in on  # no title needs DWARF


@pytest.mark.unit
def test_a_config_with_nothing_to_drop_is_left_alone() -> None:
    text = "CONFIG_KASAN=y\nCONFIG_DEBUG_INFO_NONE=y\n# CONFIG_LOCKDEP is not set\n"
    m = minimize(text, KASAN_TITLE, RULES)
    assert m.text == text and not m.drops and m.summary() == "nothing to drop"


@pytest.mark.unit
@pytest.mark.parametrize(("table", "error"), [
    ("rules: {}", "one key 'rules' holding a list"),
    ("rules:\n  - name: x\n    why: y\n    disable: [CONFIG_KASAN]",
     "rules[0]: 'disable' must be a list of option"),
    ("rules:\n  - name: x\n    why: y\n    disable: [KASAN]\n    titles: '('", "'titles' is not a regular"),
    ("rules:\n  - name: x\n    why: y\n    disable: [KASAN]\n    colour: red", "unknown key 'colour'"),
    ("rules:\n  - name: x\n    disable: [KASAN]", "rules[0]: 'why' is required"),
])
def test_a_bad_rules_table_is_one_line_naming_the_entry(tmp_path: Path, table: str, error: str) -> None:
    path = tmp_path / "minimize.yaml"
    path.write_text(table + "\n")
    with pytest.raises(ConfigError, match=r"minimize\.yaml") as e:
        load_rules(path)
    assert error in str(e.value) and "\n" not in str(e.value)


@pytest.mark.unit
@needs_config
def test_the_job_layer_minimizes_a_full_config_unless_told_not_to() -> None:
    build = BuildOptions(kernel_config=SYZBOT_CONFIG)
    request, m = inputs.minimized_request(build, KASAN_TITLE)
    assert m is not None and m.drops
    assert request.full_config == m.text and "(minimized)" in request.describe()
    # Same bug, same config: the cache key of every step and of repro is one.
    assert inputs.minimized_request(build, KASAN_TITLE)[0].describe() == request.describe()
    # `kernel build` builds a config as given.
    assert inputs.config_request(build).full_config == SYZBOT_CONFIG.read_text()
    as_given = BuildOptions(kernel_config=SYZBOT_CONFIG, minimize=False)
    full, none = inputs.minimized_request(as_given, KASAN_TITLE)
    assert none is None and full.full_config == SYZBOT_CONFIG.read_text()
    frags, nothing = inputs.minimized_request(BuildOptions(config=("base",)), KASAN_TITLE)
    assert nothing is None and frags.fragments == ("base",)


@pytest.mark.kernel
@needs_config
def test_kconfig_keeps_what_the_rules_leave_on_the_demo_tree(demo_tree: DemoTree, tmp_path: Path) -> None:
    """olddefconfig (the builder's step) on the minimized syzbot config at the
    demo tree: KASAN and the reproducer's needs stay, what depended on the
    dropped options goes with them, nothing dropped comes back."""
    m = minimize(SYZBOT_CONFIG.read_text(), KASAN_TITLE, RULES)
    obj = tmp_path / "obj"
    obj.mkdir()
    (obj / ".config").write_text(m.text)
    make = shutil.which("make") or "make"
    proc.run([make, "-C", str(demo_tree.path), f"O={obj}", "olddefconfig"], timeout=300)
    on = _on((obj / ".config").read_text())
    assert {"KASAN", "KASAN_GENERIC", "FAULT_INJECTION", "DEBUG_INFO_NONE"} <= on
    for d in m.drops:
        assert not on & set(d.options), d.rule
    assert not on & {"PROVE_RCU", "DEBUG_LOCKDEP", "LOCK_STAT", "DEBUG_INFO_BTF"}
