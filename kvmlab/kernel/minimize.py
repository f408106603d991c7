"""Config minimization, static half: what a full ``.config`` can drop for a bug
whose crash cannot need it.

A full config (syzbot's) turns on every sanitizer and debug check; a bug
found by one of them needs that one, not the others, and no bug's title needs
DWARF. The rules are data (``kernel_configs/minimize.yaml``, on the fragments'
search path so a user's directory can replace it): per rule the options it
turns off, and a regular expression of the crash titles that need them. A
rule with ``titles`` applies only when the target's title is known and does
not match; a rule without applies to every bug. The result is the full
config's text with those options turned off (``# CONFIG_X is not set``); the
builder's ``olddefconfig`` then drops what depended on them.

The second half of minimization (bisecting the rest of the difference to
kvmlab's base config with the reproducer as the oracle) is not done here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmlab import checks
from kvmlab.errors import ConfigError
from kvmlab.kernel.config import parse_config
from kvmlab.text import counted

TABLE_NAME = "minimize.yaml"

_KEYS = {"name", "titles", "why", "disable", "enable"}
_OPTION = re.compile(r"^(?!CONFIG_)[A-Z0-9_]+$")


@dataclass(frozen=True)
class Rule:
    name: str
    why: str
    disable: tuple[str, ...]
    enable: tuple[str, ...] = ()
    titles: re.Pattern[str] | None = None
    """Crash titles that need what the rule turns off; None: no bug does."""

    def applies(self, title: str | None) -> bool:
        if self.titles is None:
            return True
        return title is not None and self.titles.search(title) is None


@dataclass(frozen=True)
class Drop:
    """A rule that changed the config: the options it found on and turned off."""

    rule: str
    why: str
    options: tuple[str, ...]
    under: tuple[str, ...] = ()
    """Options named after one of ``options`` (``KFENCE_SAMPLE_INTERVAL``
    under ``KFENCE``): left out of the config, Kconfig gives them their
    defaults (they depend on what was turned off)."""

    def describe(self) -> str:
        more = f" and {counted(len(self.under), 'option')} under them" if self.under else ""
        return f"{self.rule} ({', '.join(self.options)}{more}): {self.why}"

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "why": self.why, "options": list(self.options), "under": list(self.under)}


@dataclass(frozen=True)
class Minimized:
    text: str
    drops: tuple[Drop, ...]
    title: str | None

    def summary(self) -> str:
        """One line for the log."""
        kept = "" if self.title else " (no target title known: every sanitizer kept)"
        if not self.drops:
            return "nothing to drop" + kept
        parts = [d.describe() for d in self.drops]
        return "dropped " + "; ".join(parts) + kept

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "dropped": [d.to_json() for d in self.drops]}


def load_rules(path: Path) -> list[Rule]:
    """Load and validate a rules table; a bad entry is one ConfigError naming
    the file, the entry and the key."""
    out = []
    for where, entry in checks.load_table(path, "config minimization table", "rules", _KEYS):
        for key in ("name", "why"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(f"{where}: {key!r} is required (a string)")
        lists = {}
        for key in ("disable", "enable"):
            v = entry.get(key, [])
            if not isinstance(v, list) or not all(isinstance(o, str) and _OPTION.match(o) for o in v):
                raise ConfigError(f"{where}: {key!r} must be a list of option names (KASAN, "
                                  "not CONFIG_KASAN)")
            lists[key] = tuple(v)
        if not lists["disable"]:
            raise ConfigError(f"{where}: 'disable' is required (a non-empty list)")
        titles = None
        if "titles" in entry:
            try:
                titles = re.compile(str(entry["titles"]))
            except re.error as e:
                raise ConfigError(f"{where}: 'titles' is not a regular expression: {e}") from None
        out.append(Rule(entry["name"], entry["why"], lists["disable"], lists["enable"], titles))
    return out


def minimize(text: str, title: str | None, rules: Sequence[Rule], *, source: str = "config") -> Minimized:
    """``text`` with what the rules drop for a crash titled ``title`` turned off."""
    options = parse_config(text, source=source)
    on = {k for k, v in options.items() if v in ("y", "m")}
    off: set[str] = set()
    on_now: set[str] = set()
    gone: set[str] = set()
    drops = []
    for r in rules:
        if not r.applies(title):
            continue
        found = tuple(o for o in r.disable if f"CONFIG_{o}" in on)
        if not found:
            continue
        named = {f"CONFIG_{o}" for o in (*r.disable, *r.enable)}
        under = tuple(k.removeprefix("CONFIG_") for k in options
                      if k not in named and any(k.startswith(f"CONFIG_{o}_") for o in r.disable))
        drops.append(Drop(r.name, r.why, found, under))
        off.update(f"CONFIG_{o}" for o in r.disable)
        on_now.update(f"CONFIG_{o}" for o in r.enable)
        gone.update(f"CONFIG_{o}" for o in under)
    if not drops:
        return Minimized(text, (), title)
    gone -= on_now
    lines = []
    for line in text.splitlines():
        name = _option_of(line)
        if name in off or name in on_now or name in gone:
            continue
        lines.append(line)
    lines += [f"# {o} is not set" for o in sorted(off - on_now)] + [f"{o}=y" for o in sorted(on_now)]
    return Minimized("\n".join(lines) + "\n", tuple(drops), title)


_LINE = re.compile(r"^(?:# )?(CONFIG_[A-Za-z0-9_]+)(?:=| is not set)")


def _option_of(line: str) -> str | None:
    m = _LINE.match(line.strip())
    return m.group(1) if m else None
