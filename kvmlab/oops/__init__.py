"""Crash reports: console text to syzbot-compatible titles.

- :func:`parse` — the first crash that counts in a console text, as a :class:`Report`.
- :func:`crash_start` — cheap check for a live console stream.
- :func:`same_bug` / :func:`signature` — is this crash the bug we are chasing?
- :func:`symbolize` — ``func+0x1/0x2`` frames to ``file.c:line`` with inlined frames.
"""

from kvmlab.oops.crash import Report, normalize_title, parse, same_bug, signature
from kvmlab.oops.parser import crash_start
from kvmlab.oops.symbolize import symbolize

__all__ = ["Report", "crash_start", "normalize_title", "parse", "same_bug", "signature", "symbolize"]
