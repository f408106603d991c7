"""The crash report value, and recognising two crashes of one bug."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from kvmlab.oops import parser, rules

#: Parts of a title that differ between two crashes of one bug (addresses,
#: numbers, task names of the fuzzer, source lines, IPs), in this order.
_VOLATILE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"syz-executor\.?[0-9]+((/|:)[0-9]+)?"), "syz-executor"),
    (re.compile(r"syzkaller[0-9]+((/|:)[0-9]+)?"), "syzkaller"),
    (re.compile(r"([^a-zA-Z0-9])(?:0x)?[0-9a-f]{6,}"), r"\1ADDR"),
    (re.compile(r"([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})"), "IP"),
    (re.compile(r"(\.\w+)(:[0-9]+)+"), r"\1:LINE"),
    (re.compile(r"([a-zA-Z][a-zA-Z0-9_.]+)\+0x[0-9a-z]+/0x[0-9a-z]+"), r"\1"),
    (re.compile(r"CPU#[0-9]+"), "CPU"),
    (re.compile(r"(\W)(\d+)(\W|$)"), r"\1NUM\3"),
    (re.compile(r"(\d+){7,}"), "NUM"),
)
_ANY_VOLATILE = re.compile("|".join(f"(?:{p.pattern})" for p, _r in _VOLATILE))
_MAX_TITLE = 120
_FRAME_OF_TITLE = re.compile(r".* in ((?:<[a-zA-Z0-9_: ]+>)?[a-zA-Z0-9_:]+)")
_CONSOLE_HANGUP = "serialport: VM disconnected."


def normalize_title(title: str) -> str:
    """The title with volatile parts replaced and whitespace / control characters cleaned."""
    for pattern, repl in _VOLATILE if _ANY_VOLATILE.search(title) else ():
        if pattern.search(title) is None:
            continue
        while True:
            new = pattern.sub(repl, title)
            if new == title:
                break
            title = new
    title = title[:_MAX_TITLE]
    if title.isascii() and title.isprintable() and "  " not in title:
        return title.strip()
    out: list[str] = []
    prev = " "
    for ch in title[:_MAX_TITLE]:
        if ch == "\t":
            ch = " "
        elif ch < " " or ch >= "\x7f":
            continue
        if ch == " " and prev == " ":
            continue
        out.append(ch)
        prev = ch
    return "".join(out).strip()


@dataclass(frozen=True)
class Report:
    """One crash found in a console text.

    ``title`` is in syzbot's words (``general protection fault in tcp_cleanup_ulp``);
    ``alt_titles`` are other titles the same bug may show up under;
    ``type`` is syzbot's class (``DoS``, ``HANG``, ``LEAK``, ``LOCKDEP``,
    ``KASAN-USE-AFTER-FREE-READ``, ``WARNING``, ``NULL-POINTER-DEREFERENCE``,
    ``UNKNOWN``...); ``corrupted`` says the title cannot be fully trusted
    (truncated or interleaved report); ``frame`` is the function the title
    blames ("" if none); ``report`` the report text cut out of the log (without
    timestamps); ``start``/``end`` its offsets in the console text.
    """

    title: str
    alt_titles: tuple[str, ...]
    type: str
    corrupted: bool
    frame: str
    report: str
    start: int
    end: int
    corrupted_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["alt_titles"] = list(self.alt_titles)
        return d


def parse(text: str) -> Report | None:
    """The first crash that counts in a whole console text, or None."""
    raw = parser.parse_raw(text)
    if raw is None:
        return None
    title = normalize_title(raw.title)
    alts = tuple(dict.fromkeys(a for a in (normalize_title(t) for t in raw.alt_titles) if a != title))
    m = _FRAME_OF_TITLE.match(title)
    corrupted, reason = raw.corrupted, raw.corrupted_reason
    if _CONSOLE_HANGUP in text:
        corrupted, reason = True, reason or "console connection lost"
    return Report(
        title=title,
        alt_titles=alts,
        type=rules.title_type(title),
        corrupted=corrupted,
        frame=m.group(1) if m else "",
        report=raw.report,
        start=raw.start,
        end=raw.end,
        corrupted_reason=reason,
    )


# -- same bug? -------------------------------------------------------------------

_KASAN_ACCESS = re.compile(r"^KASAN: (?:slab-)?([a-z-]+?)(?: (?:Read|Write))?( in .*|)$")
_KFENCE_ACCESS = re.compile(r"^KFENCE: ([a-z- ]+?)(?: (?:read|write))?( in .*|)$")


def _kind(title: str) -> str:
    """The title without its frame: what kind of crash."""
    i = title.rfind(" in ")
    return title[:i] if i >= 0 else title


def _keys(title: str) -> set[str]:
    keys = {title}
    # "KASAN: slab-use-after-free Write in f" and "KASAN: use-after-free Read in f"
    # are one bug reached on two paths.
    for pattern, fmt in ((_KASAN_ACCESS, "KASAN: {} {}"), (_KFENCE_ACCESS, "KFENCE: {} {}")):
        m = pattern.match(title)
        if m:
            keys.add(fmt.format(m.group(1), m.group(2).removeprefix(" ")))
    return keys


def signature(crash: Report | str) -> frozenset[str]:
    """Keys under which a crash is filed: its title, alt titles and their
    access-kind-neutral forms. Two crashes share a key when they are the same bug."""
    if isinstance(crash, str):
        titles: tuple[str, ...] = (normalize_title(crash),)
    else:
        titles = (crash.title, *crash.alt_titles)
    keys: set[str] = set()
    for t in titles:
        keys |= _keys(t)
    return frozenset(keys)


def _is_corrupted(crash: Report | str) -> bool:
    if isinstance(crash, Report):
        return crash.corrupted or crash.title.endswith(" in corrupted")
    return crash.endswith(" in corrupted")


def same_bug(a: Report | str, b: Report | str) -> bool:
    """Whether two crashes (reports or titles) are one bug.

    True when their :func:`signature` keys meet. A corrupted report names no
    trustworthy frame, so it matches any crash of the same kind (title without
    the ``in <frame>`` part): bisection would rather keep a truncated report of
    its bug than call it a different one.
    """
    if signature(a) & signature(b):
        return True
    if _is_corrupted(a) or _is_corrupted(b):
        ta = a.title if isinstance(a, Report) else normalize_title(a)
        tb = b.title if isinstance(b, Report) else normalize_title(b)
        return bool({_kind(k) for k in _keys(ta)} & {_kind(k) for k in _keys(tb)})
    return False
