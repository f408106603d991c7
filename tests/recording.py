"""Recorded runs made again for the demo tree of the machine running the tests.

A recording (a real bisection's journal, ``meta.json``, ``result.json`` and
log) names demo commits by id, and those ids depend on the kernel source the
demo tree was made from: Debian updates ``linux-source-6.1`` with every
stable point release. A recording therefore carries ``recording.json``: the
source it was made from and the subject of every commit it names (the demo
history's subjects are unique and do not depend on the source). :func:`rekey`
copies a recording with each id replaced by the id of the commit with the
same subject in the current demo tree (the base by its tag), and says when
the sources differ.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from kvmlab import proc
from kvmlab.kernel.demo_tree import DemoTree

_HASH = re.compile(r"\b[0-9a-f]{40}\b")


@dataclass(frozen=True)
class Rekeyed:
    path: Path
    ids: dict[str, str]
    """Recorded commit id -> the current demo tree's."""
    note: str
    """Why the ids changed ('' when the recording was made from this source)."""


def subjects(demo: DemoTree) -> dict[str, str]:
    """Subject -> commit id of every commit after the demo's base."""
    out = proc.run(["git", "-C", str(demo.path), "log", "--format=%H%x00%s", f"{demo.base}..{demo.head}"],
                   timeout=60).stdout
    by_subject: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, subject = line.partition("\0")
        if subject in by_subject:
            raise AssertionError(f"demo tree {demo.path}: two commits have the subject {subject!r}")
        by_subject[subject] = sha
    return by_subject


def rekey(recorded: Path, dest: Path, demo: DemoTree) -> Rekeyed:
    """Copy the recording at ``recorded`` to ``dest`` with every commit id it
    names replaced by the current demo tree's (see the module docstring).
    Fails naming the id when the recording names a commit ``recording.json``
    does not describe, or a subject the demo tree no longer has."""
    meta = json.loads((recorded / "recording.json").read_text())
    current = subjects(demo)
    ids = {meta["base"]: demo.base}
    for old, subject in meta["commits"].items():
        if subject not in current:
            raise AssertionError(f"{recorded}: commit {old[:12]} ({subject!r}) has no counterpart in the "
                                 f"demo tree {demo.path}")
        ids[old] = current[subject]
    shutil.copytree(recorded, dest)
    for f in sorted(dest.iterdir()):
        if f.name == "recording.json":
            continue
        text = f.read_text()
        unknown = set(_HASH.findall(text)) - set(ids)
        if unknown:
            raise AssertionError(f"{f.name} of {recorded} names {sorted(unknown)[0]}, which recording.json "
                                 "does not describe")
        for old, new in ids.items():
            text = text.replace(old, new).replace(old[:12], new[:12])
        f.write_text(text)
    return Rekeyed(dest, ids, _note(meta.get("source", {}), demo))


def _note(recorded: dict[str, str], demo: DemoTree) -> str:
    now = demo.source
    if now is not None and recorded.get("base_tree") and recorded["base_tree"] == now.base_tree:
        return ""
    made = recorded.get("package") or "an unknown source"
    current = now.describe() if now else "a source the demo tree did not record"
    return (f"the recording was made from {made} (Linux {recorded.get('version', '?')}); this demo tree "
            f"from {current}: commit ids re-keyed by subject")
