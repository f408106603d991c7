"""Patch files as text: their hunks, and which hunk a ``git apply`` failure
names. Pure; applying is :meth:`kvmlab.git.repo.Repo.apply_patches`'s."""

from __future__ import annotations

import re
from dataclasses import dataclass

_FILE = re.compile(r"^\+\+\+ (?:b/)?(\S+)")
_OLD_FILE = re.compile(r"^--- (?:a/)?(\S+)")
_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")


@dataclass(frozen=True)
class Hunk:
    file: str
    number: int
    """1-based, within its file."""
    old_start: int
    header: str
    """The ``@@ -a,b +c,d @@`` part."""


def hunks(text: str) -> list[Hunk]:
    """Every hunk of a unified diff (git-format or plain), in order; files
    named as git names them (without the ``a/``, ``b/`` prefixes)."""
    out: list[Hunk] = []
    file = ""
    old = ""
    n = 0
    for line in text.splitlines():
        m = _OLD_FILE.match(line)
        if m and line.startswith("--- "):
            old = m.group(1)
            continue
        m = _FILE.match(line)
        if m:
            new = m.group(1)
            file = old if new == "/dev/null" else new
            n = 0
            continue
        m = _HUNK.match(line)
        if m and file:
            n += 1
            out.append(Hunk(file, n, int(m.group(1)), m.group(0)))
    return out


def failure(stderr: str, patch_text: str) -> str:
    """What ``git apply``'s error output says did not apply, in one phrase:
    ``kernel/sys.c hunk #2 (@@ -2345,7 +2345,8 @@)``, ``kernel/x.c does not
    exist``, or git's own first error line."""
    m = re.search(r"^error: patch failed: (.+):(\d+)$", stderr, re.M)
    if m:
        file, line = m.group(1), int(m.group(2))
        for h in hunks(patch_text):
            if h.file == file and h.old_start == line:
                return f"{file} hunk #{h.number} ({h.header})"
        return f"{file} at line {line}"
    m = re.search(r"^error: (.+): (does not exist in index|No such file or directory)$", stderr, re.M)
    if m:
        return f"{m.group(1)} does not exist in the tree"
    m = re.search(r"^error: (.+): already exists in index$", stderr, re.M)
    if m:
        return f"{m.group(1)} already exists in the tree"
    for text in stderr.splitlines():
        if text.startswith(("error: ", "fatal: ")):
            return text.split(": ", 1)[1]
    return stderr.strip().splitlines()[-1] if stderr.strip() else "git apply failed"
