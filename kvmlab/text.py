"""Small helpers for the words kvmlab prints."""

from __future__ import annotations


def counted(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 crash``, ``2 crashes``, ``0 runs``: a count with its noun in the
    right number (``nouns`` when adding an "s" is not the plural)."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"
