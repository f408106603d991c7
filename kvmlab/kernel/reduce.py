"""Config minimization, oracle half: the smallest part of a full config's
difference to kvmlab's base config that still gives the crash.

The static half (:mod:`kvmlab.kernel.minimize`) drops what the crash cannot
need by rule. What is left is still far bigger than kvmlab's bootable base:
drivers, file systems, network protocols, debug options. Here the reproducer
is the judge. The first candidate is the base with only the *suspects* of the
full config on (the sanitizer the crash's title names, e.g. KASAN with its
sub-options); when that does not crash, the difference is halved in the full
config's order (menu order: a parent option comes before its children, so a
half keeps most of a subsystem together), and a half that still crashes
becomes the difference, until a test budget runs out or neither half alone
crashes. A test is a kernel build and VM runs: the caller's ``test`` decides.

Nothing here builds or boots; :mod:`kvmlab.jobs.minimizing` gives ``test``.
The answer is a config that crashed (by construction), or None: nothing
smaller than the full config was seen to crash, keep the full one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvmlab.text import counted

#: Tests (kernel builds with VM runs) one minimization may spend.
DEFAULT_BUDGET = 6

_OFF = ("n", "")


@dataclass(frozen=True)
class Trial:
    """One test of a candidate config."""

    label: str
    added: int
    """Options of the full config's difference set in it (suspects included)."""
    crashed: bool
    seconds: float
    note: str = ""
    """Why it did not crash when it was not a clean no (``did not build``)."""

    def describe(self) -> str:
        verdict = "crashed" if self.crashed else f"no crash{f' ({self.note})' if self.note else ''}"
        return f"{self.label} (+{self.added} options): {verdict} [{self.seconds:.0f}s]"

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "added": self.added, "crashed": self.crashed,
                "seconds": round(self.seconds, 1), "note": self.note}


@dataclass(frozen=True)
class Reduction:
    """What the oracle found: ``config`` (None: keep the full config)."""

    config: dict[str, str] | None
    difference: int
    """Options the full config has on beyond the base (suspects included)."""
    suspects: tuple[str, ...]
    kept: tuple[str, ...]
    """Options of the difference in the answer (suspects included)."""
    trials: tuple[Trial, ...]

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.trials)

    def summary(self) -> str:
        """One line for the log."""
        tests = f"{counted(len(self.trials), 'test')}, {self.seconds:.0f}s"
        if not self.difference:
            return "the full config adds nothing to the base: kept as it is"
        if self.config is None:
            return (f"nothing smaller than the full config crashed ({tests}): the full config is kept "
                    f"({self.difference} options beyond the base)")
        return (f"base + {len(self.kept)} of the {self.difference} options the full config adds still "
                f"crashes ({tests})" + (f"; suspects: {', '.join(self.suspects)}" if self.suspects else ""))

    def to_json(self) -> dict[str, Any]:
        return {"difference": self.difference, "suspects": list(self.suspects), "kept": list(self.kept),
                "minimized": self.config is not None, "trials": [t.to_json() for t in self.trials],
                "seconds": round(self.seconds, 1)}


def difference(base: Mapping[str, str], full: Mapping[str, str]) -> list[str]:
    """Options ``full`` sets on (``y``, ``m`` or a value) that ``base`` does not
    have the same way, in ``full``'s order. What ``full`` turns off is not
    taken: the base stays bootable."""
    return [k for k, v in full.items() if v not in _OFF and base.get(k) != v]


def suspects_of(options: Sequence[str], names: Sequence[str]) -> list[str]:
    """The options among ``options`` that ``names`` (``KASAN``) cover: the
    option itself and the ones named under it (``CONFIG_KASAN_INLINE``)."""
    out = []
    for k in options:
        bare = k.removeprefix("CONFIG_")
        if any(bare == n or bare.startswith(f"{n}_") for n in names):
            out.append(k)
    return out


def candidate(base: Mapping[str, str], full: Mapping[str, str], keep: Sequence[str]) -> dict[str, str]:
    """The base with the ``keep`` options as ``full`` has them."""
    out = dict(base)
    for k in keep:
        out[k] = full[k]
    return out


def reduce(
    base: Mapping[str, str],
    full: Mapping[str, str],
    suspects: Sequence[str],
    test: Callable[[dict[str, str], str], tuple[bool, str]],
    *,
    budget: int = DEFAULT_BUDGET,
    on_trial: Callable[[Trial], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Reduction:
    """Halve ``full``'s difference to ``base`` with ``test`` as the judge, in
    at most ``budget`` tests. ``suspects`` (option names without ``CONFIG_``)
    go into every candidate. ``test(config, label)`` builds and runs one
    candidate: (crashed with the target's title, a note when it did not);
    ``on_trial`` hears each trial as it ends."""
    if budget < 1:
        raise ValueError(f"a minimization budget of {budget} tests: it must be at least 1")
    diff = difference(base, full)
    sus = suspects_of(diff, suspects)
    rest = [k for k in diff if k not in sus]
    trials: list[Trial] = []
    if not diff:
        return Reduction(None, 0, tuple(sus), (), ())

    def run(keep: list[str], label: str) -> bool:
        t0 = clock()
        crashed, note = test(candidate(base, full, [*sus, *keep]), label)
        trial = Trial(label, len(sus) + len(keep), crashed, clock() - t0, "" if crashed else note)
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
        return crashed

    if run([], "base + suspects" if sus else "base"):
        return Reduction(candidate(base, full, sus), len(diff), tuple(sus), tuple(sus), tuple(trials))
    current = rest
    found: list[str] | None = None
    step = 0
    while len(trials) < budget and len(current) > 1:
        step += 1
        half = len(current) // 2
        first, second = current[:half], current[half:]
        if run(first, f"step {step}: first half ({len(first)} of {len(current)})"):
            current = found = first
            continue
        if len(trials) >= budget:
            break
        if run(second, f"step {step}: second half ({len(second)} of {len(current)})"):
            current = found = second
            continue
        break  # each half needs something of the other: stop at the last crashing one
    if found is None:
        return Reduction(None, len(diff), tuple(sus), tuple(diff), tuple(trials))
    kept = [*sus, *found]
    return Reduction(candidate(base, full, kept), len(diff), tuple(sus), tuple(kept), tuple(trials))
