"""Find the first crash in a kernel console text and give it a title.

The steps, all pure:

1. :func:`crash_start` finds the first line that carries an oops header from
   :data:`~kvmlab.oops.rules.OOPSES` and is not one of its look-alikes. One
   regex over all headers (factored by common prefixes) scans the text in C,
   about 1-2 µs per KB, so it can run on every chunk of a live console stream.
2. The report is cut out around it: a few lines before it from the same
   printk context, then the lines after it from the same context (``[ T123]``
   task or ``[ C0]`` CPU caller ids, when the kernel prints them), up to the
   next report when there is no caller id to separate interleaved output.
   Lines are picked with regex scans over the text, not a Python loop per
   line, which keeps parsing at about 20 MB/s.
3. The earliest-matching :class:`~kvmlab.oops.rules.TitleFormat` of that oops
   makes the title; its :class:`~kvmlab.oops.rules.StackFormat` picks the
   guilty frame, skipping frames that are never the culprit.
4. The report is *corrupted* when its title cannot be trusted: the header was
   lost, a stack trace has no frames, or other output got into the title.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from kvmlab.oops import rules, rust_demangle
from kvmlab.oops.rules import STACK, Oops, StackFormat, TitleFormat

_CONSOLE = "console"
"""Context of lines with a timestamp but no caller id."""

#: Text another writer left on the console line before the kernel's prefix:
#: the serial console is shared with userspace, and a shell prompt ("/ # ",
#: "syzkaller login: ") or a terminal query ("\x1b[6n") written without a
#: newline gets the next kernel line appended to it. The kernel's timestamp
#: is the first bracket on such a line; other brackets may only open ANSI
#: escape sequences. (The "** N printk messages dropped **" and "<N>" level
#: prefixes of the kernel itself are covered too.)
_FOREIGN = r"(?:[^[\n\x1b]|\x1b(?:\[[0-9;?]*[ -/]*[@-~])?)*"
_PFX = _FOREIGN + r"\[ *[0-9]+\.[0-9]+\]"
_LINE_PREFIX = re.compile(_PFX + r"(\[ *(?:C|T)[0-9]+\])? ")
_TASK_CONTEXT = re.compile(r"\[ *T[0-9]+\]")
_QUESTIONABLE = re.compile(r"(\[\<[0-9a-f]+\>\])? \? ")
#: A header on a line cut short by printk and replayed whole on the next line
#: is not a report start: the replayed line is.
_REPLAY = re.compile(r"\n[^\n]*\*\* replaying previous printk message \*\*")

_HEADERS = tuple(sorted({o.header for o in rules.OOPSES}))


def _trie_pattern(words: Sequence[str]) -> str:
    """One regex for a set of literals, factored by common prefixes, so that
    the search tests one character per position instead of every literal."""
    if len(words) == 1:
        return re.escape(words[0])
    groups: dict[str, list[str]] = {}
    optional = False
    for w in words:
        if w:
            groups.setdefault(w[0], []).append(w[1:])
        else:
            optional = True
    alts = [re.escape(c) + _trie_pattern(rest) for c, rest in sorted(groups.items())]
    body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
    return f"(?:{body})?" if optional else body


_ANY_HEADER = re.compile(_trie_pattern(_HEADERS))

_PANIC_SYNCING = "Kernel panic - not syncing"
_CIRCULAR = "WARNING: possible circular locking dependency detected"
_SKIP_LINE = "Disabling lock debugging due to kernel taint"
_NMI_ALL = "Sending NMI from CPU"
_CORRUPTED_TITLE = re.compile(r"\[ *[0-9]+\.[0-9]+\]")


@dataclass(frozen=True)
class RawReport:
    """What the parser found, before title normalisation."""

    title: str
    alt_titles: tuple[str, ...]
    corrupted: bool
    corrupted_reason: str
    report: str
    start: int
    end: int


# -- finding report starts -----------------------------------------------------


def _line_bounds(text: str, pos: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return start, len(text) if end < 0 else end


def _truncated_by_replay(text: str, line_end: int) -> bool:
    return _REPLAY.match(text, line_end) is not None


def iter_oops_lines(text: str, pos: int = 0, end: int | None = None) -> Iterator[tuple[int, int, Oops]]:
    """Every (line start, line end, oops) of a crash line in ``text[pos:end]``, in order.

    One regex over all headers finds candidate lines at C speed; only lines
    holding a header are looked at more closely.
    """
    stop = len(text) if end is None else end
    while True:
        m = _ANY_HEADER.search(text, pos, stop)
        if m is None:
            return
        ls, le = _line_bounds(text, m.start())
        pos = le + 1
        found = _first_oops_on_line(text[ls:le].rstrip("\r"))
        if found is not None and not _truncated_by_replay(text, le):
            yield ls, le, found


def _first_oops_on_line(line: str) -> Oops | None:
    # In table order: the first kind whose header is on the line and that is
    # not one of its look-alikes.
    for oops, not_crash in _NOT_CRASH:
        if oops.header in line and (not_crash is None or not_crash.search(line) is None):
            return oops
    return None


_NOT_CRASH = tuple(
    (o, re.compile("|".join(f"(?:{r.pattern})" for r in o.not_crash)) if o.not_crash else None)
    for o in rules.OOPSES
)


def crash_start(text: str) -> int | None:
    """Offset of the start of the line where the first crash report begins, or None.

    Cheap enough for every chunk of a live console stream (a few µs per KB of
    text without a crash). Offsets refer to ``text``; a caller that feeds a
    growing buffer should re-check from the start of the last incomplete line.
    """
    for start, _end, _oops in iter_oops_lines(text):
        return start
    return None


# -- cutting the report out ----------------------------------------------------


def _context(line: str) -> str:
    m = _LINE_PREFIX.match(line)
    if m is None:
        return ""
    return m.group(1) or _CONSOLE


def _strip_prefix(line: str, context: str) -> tuple[str, bool]:
    """The line without its timestamp, and whether it is a ``?`` (unreliable) frame."""
    m = _LINE_PREFIX.match(line) if context else None
    if m is None:
        return line, False
    line = line[m.end() :]
    if "<EOI>" not in line:
        if _QUESTIONABLE.search(line):
            return line[line.find(" ? ") + 2 :], True
        if line.endswith(" (unreliable)"):  # powerpc
            return line[:-13], True
    return line, False


def _min_lines(oops_line: str) -> int:
    # KMSAN reports are short; a panic after fewer lines than this is part of the report.
    return 16 if "BUG: KMSAN:" in oops_line else 22


@dataclass
class _Cut:
    prefix: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    body_end: int = 0
    """Number of ``body`` lines that make the report (all of them with caller
    ids; without, those before a second report starts)."""
    end: int = 0
    """Offset in the text just after the last line of those."""


def _cut_report(text: str, start: int, context: str) -> _Cut:
    cut = _Cut()
    has_caller = context not in ("", _CONSOLE)
    # Lines before the report from the same context often say what led to it
    # (the kernel's "sysrq: Trigger a crash", a fault injection, a lockdep hint).
    max_prefix = 50 if _TASK_CONTEXT.fullmatch(context) else 5
    # Look back a bounded window (about 40 lines per wanted line), not the whole log.
    window = text.rfind("\n", 0, max(0, start - 4000 * max_prefix)) + 1
    earlier = [
        r for r in _context_lines(text, window, start - 1 if start > 0 else 0, context) if r and r != "\r"
    ]
    cut.prefix = earlier[-max_prefix:]

    # Where a second report (or an info message with its own stack) starts:
    # without caller ids nothing else separates it from the first.
    _s, first_end = _line_bounds(text, start)
    second = len(text)
    for ls, _le, _oops in () if has_caller else iter_oops_lines(text, first_end + 1):
        line = text[ls:_le]
        if not any(r.search(line) for r in rules.NOT_A_NEW_REPORT):
            second = ls
            break
    for marker in () if has_caller else rules.INFO_WITH_STACK:
        i = text.find(marker, first_end + 1, second)
        if i >= 0:
            second = text.rfind("\n", 0, i) + 1
    stop = second

    oops_line = text[start:first_end]
    min_lines = _min_lines(oops_line)
    cut.end = first_end
    _fast_body(cut, text, start, first_end, stop, context, min_lines)
    return cut


_CONSOLE_LINES = re.compile(r"^" + _PFX + r" (.*)$", re.M)
_BARE_LINES = re.compile(r"^(?!" + _PFX + r"(?:\[ *(?:C|T)[0-9]+\])? )(.*)$", re.M)


@lru_cache(maxsize=64)
def _caller_lines(context: str, cpus: bool) -> re.Pattern[str]:
    """Lines of ``context`` (and, with ``cpus``, of every CPU context)."""
    ctx = re.escape(context) + (r"|\[ *C[0-9]+\]" if cpus else "")
    return re.compile(r"^" + _PFX + "(?:" + ctx + r") (.*)$", re.M)


def _context_lines(text: str, pos: int, end: int, context: str, cpus: bool = False) -> list[str]:
    """Lines of ``context`` (with ``cpus``: and of all CPU contexts) in
    ``text[pos:end]``, with their prefixes and unreliable (``?``) frames stripped."""
    if context == "":
        rests = _BARE_LINES.findall(text, pos, end)
    elif context == _CONSOLE:
        rests = _CONSOLE_LINES.findall(text, pos, end)
    else:
        rests = _caller_lines(context, cpus).findall(text, pos, end)
    if "\r" in text:
        rests = [r.rstrip("\r") for r in rests]
    if context and rests:
        region = text[pos:end]
        if " ? " in region:
            # the "?" marker may follow an optional [<address>]
            rests = [r for r in rests if " ? " not in r or "<EOI>" in r]
        if " (unreliable)" in region:
            rests = [r for r in rests if not r.endswith(" (unreliable)")]
    return rests


def _nmi_line_end(text: str, start: int, first_end: int, stop: int, context: str) -> int:
    """End of the first report line announcing a backtrace of all CPUs, or -1."""
    if context in ("", _CONSOLE):
        return -1  # no CPU contexts to tell apart
    i = text.find(_NMI_ALL, start, stop)
    while i >= 0:
        ls, le = _line_bounds(text, i)
        if ls == start or _context(text[ls:le]) == context:
            return first_end + 1 if ls == start else le + 1
        i = text.find(_NMI_ALL, le, stop)
    return -1


def _fast_body(cut: _Cut, text: str, start: int, first_end: int, stop: int, context: str,
               min_lines: int) -> None:  # fmt: skip
    """The report body: the oops line, then the lines of ``context`` in
    ``text[first_end:stop]``, found with C-level regex scans.

    After a line of the report says it backtraces all CPUs ("Sending NMI from
    CPU"), the other CPUs' lines belong to the report whatever their context.
    Debugging noise ("Disabling lock debugging") is dropped; a panic or a
    lockdep splat set off by a report long enough already is cut off (with
    panic_on_warn the panic only repeats the report's stack)."""
    first, _q = _strip_prefix(text[start:first_end].rstrip("\r"), context)
    nmi = _nmi_line_end(text, start, first_end, stop, context)
    if nmi < 0:
        rests = _context_lines(text, first_end + 1, stop, context)
    else:
        rests = _context_lines(text, first_end + 1, nmi, context)
        rests += _context_lines(text, nmi, stop, context, cpus=True)
    cut_at = -1
    region = text[first_end:stop]
    if _PANIC_SYNCING in region or _CIRCULAR in region:
        for i in range(max(0, min_lines - 1), len(rests)):
            r = rests[i]
            if _PANIC_SYNCING in r or _CIRCULAR in r:
                # The panic_on_warn panic (or a lockdep splat caused by oops
                # printing) only repeats the stack of a report long enough already.
                cut_at = i
                break
    if cut_at >= 0:
        i = text.find(rests[cut_at], first_end, stop)
        cut.end = text.rfind("\n", 0, i) if i > 0 else stop
        rests = rests[:cut_at]
    elif rests and context not in ("", _CONSOLE):
        # the end of the last line of this context
        cut.end = _line_bounds(text, max(start, text.rfind(context, start, stop)))[1]
    elif rests:
        cut.end = stop - 1 if stop > 0 and text[stop - 1] == "\n" else stop
    if _SKIP_LINE in region:
        rests = [r for r in rests if _SKIP_LINE not in r]
    cut.body = [first, *rests]
    cut.body_end = len(cut.body)


# -- titles ---------------------------------------------------------------------------


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+")


class _Skipper:
    """Matches frame names against skip patterns: plain names through one
    prefix-factored regex (an alternation of 200 literals would try each at
    every offset), the few real regexes through another."""

    def __init__(self, patterns: Sequence[str]) -> None:
        plain = sorted({p for p in patterns if _PLAIN_NAME.fullmatch(p)})
        other = [p for p in patterns if not _PLAIN_NAME.fullmatch(p)]
        self._plain = re.compile(_trie_pattern(plain)) if plain else None
        self._other = re.compile("|".join(other)) if other else None

    def search(self, name: str) -> bool:
        return bool(
            (self._plain is not None and self._plain.search(name))
            or (self._other is not None and self._other.search(name))
        )


@lru_cache(maxsize=256)
def _skip_re(extra: tuple[str, ...]) -> _Skipper:
    return _Skipper(rules.SKIP_FRAMES + extra)


_SYSCALL_PREFIX = re.compile("|".join(rules.STRIP_FRAME_PREFIXES))


def _strip_syscall_prefix(frame: str) -> str:
    if _SYSCALL_PREFIX.match(frame) is None:
        return frame
    best = frame
    for p in rules.STRIP_FRAME_PREFIXES:
        if frame.startswith(p) and len(frame) - len(p) < len(best):
            best = frame[len(p) :]
    return best


_HANG_BUCKETS = (("rtnl_lock", ""), ("synchronize_rcu", "synchronize_rcu"),
                 ("synchronize_srcu", "synchronize_rcu"), ("synchronize_net", "synchronize_rcu"),
                 ("synchronize_sched", "synchronize_rcu"))  # fmt: skip
_HANG_SKIP = ("sched", "_lock", "_slowlock", "down", "rwsem", "completion", "kthread", "wait", "synchronize",
              "context_switch", "__switch_to", "cancel_delayed_work", "rcu_barrier")  # fmt: skip


def _hang_frame(frames: Sequence[str]) -> tuple[str, int]:
    """Hung tasks are victims: group the common waits (RCU grace periods, rtnl)
    together, otherwise name the first frame that is not a wait primitive."""
    for i, frame in enumerate(frames):
        for anchor, bucket in _HANG_BUCKETS:
            if anchor in frame:
                return bucket or frame, i
    for i, frame in enumerate(frames):
        if not any(s in frame for s in _HANG_SKIP):
            return frame, i
    return "", -1


class _Frames:
    """Candidate frames of one stack section; skip patterns are applied lazily,
    since usually only the first few frames are ever looked at."""

    def __init__(self, skip: _Skipper) -> None:
        self.skip = skip
        self.raw: list[str] = []

    def add(self, match: re.Match[str] | None) -> None:
        if match is not None:
            self.raw.extend(g for g in match.groups() if g is not None)

    def __iter__(self) -> Iterator[str]:
        """Frames that may be blamed, in order."""
        skip = self.skip
        for name in self.raw:
            if name.startswith(("_Z", "_R", "__R")):
                name = demangle(name)
            if not _skipped(skip, name):
                yield name


_MANGLED_NAME = re.compile(r"_ZN?L?((?:[0-9]+[A-Za-z_$][A-Za-z0-9_$]*)+)")
_SOURCE_NAME = re.compile(r"([0-9]+)")
_RUST_HASH = re.compile(r"h[0-9a-f]{16}")


def demangle(name: str) -> str:
    """The plain name of a C++ (or legacy Rust) function symbol, without
    parameters: ``_Z8fakeNameiii`` -> ``fakeName``, ``_ZN3foo3barEv`` -> ``foo::bar``;
    Rust v0 (``_R``) names as :mod:`~kvmlab.oops.rust_demangle` reads them.
    Names this simple reader does not understand come back unchanged."""
    if name.startswith(("_R", "__R")):
        return rust_demangle.demangle(name)
    m = _MANGLED_NAME.match(name)
    if m is None:
        return name
    parts: list[str] = []
    s, i = m.group(1), 0
    nested = name.startswith(("_ZN", "_ZNL"))
    while i < len(s):
        n = _SOURCE_NAME.match(s, i)
        if n is None:
            break
        length = int(n.group(1))
        start = n.end()
        if length == 0 or start + length > len(s):
            return name
        parts.append(s[start : start + length])
        i = start + length
        if not nested:
            break
    if nested and len(parts) > 1 and _RUST_HASH.fullmatch(parts[-1]):
        parts.pop()
    return "::".join(parts) if parts else name


@lru_cache(maxsize=65536)
def _skipped(skip: _Skipper, name: str) -> bool:
    return skip.search(name)


def _key_frame(frames: _Frames, stack: StackFormat) -> tuple[str, str]:
    """(canonical, raw) guilty frame of one stack section; ("", "") if none."""
    if stack.extractor == "stall":
        # Stalls loop over several functions: name the stall by the function
        # that entered the loop (the frame above a generic dispatcher such as
        # a syscall entry, the workqueue or a timer), not by a random frame
        # inside it. Lazily: only the frames down to that dispatcher matter.
        prev, prev_raw = "", ""
        for raw in frames:
            name = _strip_syscall_prefix(raw)
            if rules.STALL_ANCHOR.search(name):
                if "smp_call_function" in name:
                    return "smp_call_function", raw
                return (prev, prev_raw) if prev else (name, raw)
            prev, prev_raw = name, raw
        return "", ""
    if stack.extractor == "hang":
        return _pick(frames, _hang_frame)
    for raw in frames:
        return _strip_syscall_prefix(raw), raw
    return "", ""


def _pick(frames: _Frames, how: Callable[[Sequence[str]], tuple[str, int]]) -> tuple[str, str]:
    raw = list(frames)
    if not raw:
        return "", ""
    frame, i = how([_strip_syscall_prefix(f) for f in raw])
    return (frame, raw[i]) if frame else ("", "")


def _frame_line(ln: str) -> re.Match[str] | None:
    m = rules.FRAME_LINES[0].search(ln)
    if m is None and " from " in ln:
        m = rules.FRAME_LINES[1].search(ln)
    return m


_CORRUPTING_M = re.compile(rules.CORRUPTING_LINE.pattern, re.M)
_X86_FRAMES = re.compile(rules.FRAME_LINES[0].pattern, re.M)

#: :data:`rules.STACK_START` as patterns with a literal start (a regex
#: alternation, or a lookbehind, would make the search test every offset).
_STACK_KEYS = tuple(
    re.compile(r.pattern.removeprefix("[^k] ")) if r.pattern.startswith("[^k] ") else r
    for r in rules.STACK_START
)


#: A literal each stack-start key contains: a C-speed ``str.find`` rules most keys out.
_LITERALS = ("Call ", "Allocated", "Freed", "backtrace", "Backtrace:", "Uninit was stored")
_KEY_LITERALS = tuple(next(lit for lit in _LITERALS if lit in p.pattern) for p in _STACK_KEYS)


def _key_search(key: int, text: str, pos: int, endpos: int) -> int:
    """Offset of the first match of stack-start key ``key`` in ``text[pos:endpos]``, or -1."""
    if text.find(_KEY_LITERALS[key], pos, endpos) < 0:
        return -1
    pattern = _STACK_KEYS[key]
    needs_space = pattern is not rules.STACK_START[key]
    while True:
        m = pattern.search(text, pos, endpos)
        if m is None:
            return -1
        i = m.start()
        # kmemleak's " backtrace:", not lockdep's "stack backtrace:"
        if not needs_space or (i >= 2 and text[i - 1] == " " and text[i - 2] not in "k\n"):
            return i - 1 if needs_space else i
        pos = i + 1


def _first_stack_start(text: str, pos: int) -> int:
    """Offset of the first stack start at or after ``pos`` (``len(text)`` if none)."""
    best = len(text)
    for key in range(len(_STACK_KEYS)):
        i = _key_search(key, text, pos, best)
        if i >= 0:
            best = i
    return best


def _line_after(text: str, pos: int) -> int:
    """Offset of the line after the one holding ``pos``."""
    e = text.find("\n", pos)
    return len(text) if e < 0 else e + 1


def _stack_frames(text: str, parts: Sequence[rules.Part], skip: _Skipper,
                  stack: StackFormat) -> tuple[list[tuple[str, str]], bool]:  # fmt: skip
    """Walk ``parts`` over the lines of ``text``: one guilty frame per stack section.

    A regex part takes the first line it matches; a :data:`STACK` part takes
    the frames of the lines up to the next stack start (or up to the line the
    part after it matches). A fault-injection stack line in the way spoils the
    report. Each section is scanned with one regex call, not line by line.
    """
    results: list[tuple[str, str]] = []
    frames = _Frames(skip)
    ok = True
    n_stacks = 0
    pos = 0
    pi = 0
    n = len(text)
    while True:
        if pi == len(parts) or (parts[pi] is STACK and n_stacks > 0):
            canonical, rawf = _key_frame(frames, stack)
            if not canonical:
                canonical, rawf, ok = "corrupted", "corrupted", False
            results.append((canonical, rawf))
            frames = _Frames(skip)
        if pi == len(parts):
            break
        part = parts[pi]
        bad = _CORRUPTING_M.search(text, pos) if "should_fail" in text else None
        bad_at = bad.start() if bad is not None else n
        if part is STACK:
            n_stacks += 1
            at = _first_stack_start(text, pos)
            end = text.rfind("\n", 0, at) + 1 if at < n else n
            nxt = parts[pi + 1] if pi + 1 < len(parts) else None
            nm = nxt.search(text, pos, end) if isinstance(nxt, re.Pattern) else None
            if nm is not None:
                end = text.rfind("\n", 0, nm.start()) + 1
            if bad_at < end:
                end, nm = text.rfind("\n", 0, bad_at) + 1, None
                ok = False
            if " from " in text[pos:end]:
                for groups in rules.FRAME_LINES_M.findall(text, pos, end):
                    frames.raw.extend(g for g in groups if g)
            else:
                frames.raw.extend(_X86_FRAMES.findall(text, pos, end))
            if nm is not None:
                frames.add(nm)
                pi += 1
            pos = _line_after(text, end) if end < n else n
        else:
            assert isinstance(part, re.Pattern)
            m = part.search(text, pos)
            line_start = text.rfind("\n", 0, m.start()) + 1 if m is not None else n
            if bad_at < line_start:
                ok = False
                pos = _line_after(text, bad_at)
            elif m is not None:
                frames.add(m)
                pos = _line_after(text, m.start())
            else:
                pos = n
        pi += 1
    return results, ok


def _extract_frames(stack: StackFormat, text: str) -> tuple[list[tuple[str, str]], bool]:
    skip = _skip_re(stack.skip)
    frames, ok = _stack_frames(text, stack.parts, skip, stack)
    if ok or not stack.parts2:
        return frames, ok
    return _stack_frames(text, stack.parts2, skip, stack)


def _fmt(fmt: str, args: Sequence[str]) -> str:
    try:
        return fmt.format(*args)
    except IndexError:
        return fmt


@dataclass(frozen=True)
class _Description:
    title: str
    alt_titles: tuple[str, ...]
    corrupted_reason: str
    fmt: TitleFormat | None
    matched_at: int = -1
    """Where the earliest title regex matched (-1: none did)."""


def _spans_lines(pattern: re.Pattern[str]) -> bool:
    return any(s in pattern.pattern for s in ("\\n", "\n", "\\s", "[\\s\\S]"))


#: Title regexes that may match across lines (the rest match within one line).
_MULTILINE_TITLES = frozenset(id(f.title) for o in rules.OOPSES for f in o.formats if _spans_lines(f.title))


def _describe(report: str, oops: Oops) -> _Description:
    """Title the report with the oops shape whose title regex matches earliest."""
    # The oops line usually holds the earliest match: look there first, and
    # at the whole report only if no shape matches on it. (Equivalent to
    # searching the whole report each time: a match on a later line cannot
    # start earlier.)
    first_end = report.find("\n")
    first_end = first_end if first_end >= 0 else len(report)
    desc = _describe_in(report, oops, first_end)
    if 0 <= desc.matched_at <= first_end:
        return desc
    return _describe_in(report, oops, len(report))


def _describe_in(report: str, oops: Oops, endpos: int) -> _Description:
    best_pos = len(report) + 1
    title = ""
    alts: list[str] = []
    reason = ""
    chosen: TitleFormat | None = None
    matched_title = False
    for f in oops.formats:
        m = f.title.search(report, 0, len(report) if id(f.title) in _MULTILINE_TITLES else endpos)
        if m is None or m.start() > best_pos or (m.start() == best_pos and title):
            continue
        if m.start() < best_pos:
            title, alts, chosen, best_pos = "", [], None, m.start()
        matched_title = True
        if f.report is not None:
            m = f.report.search(report)
            if m is None:
                continue
        prefix = [g or "" for g in m.groups()]
        frames: list[tuple[str, str]] = []
        reason = ""
        if f.stack is not None:
            frames, ok = _extract_frames(f.stack, report[m.start() :])
            if not ok:
                reason = "extracted no frames"
        title = _fmt(f.fmt, prefix + [c for c, _ in frames])
        alts = [_fmt(a, prefix + [c for c, _ in frames]) for a in f.alt]
        # The same titles with the frame spelled as printed, and with each
        # syscall-wrapper prefix stripped on its own: other kernels inline
        # the wrappers differently.
        raws = [r for _, r in frames]
        strippable = (
            [p for p in rules.STRIP_FRAME_PREFIXES if any(r.startswith(p) for r in raws)]
            if any(_SYSCALL_PREFIX.match(r) for r in raws)
            else []
        )
        for p in ("", *strippable):
            names = [r.removeprefix(p) for r in raws] if p else raws
            alt_title = _fmt(f.fmt, prefix + names)
            if alt_title != title:
                alts.append(alt_title)
            alts.extend(_fmt(a, prefix + names) for a in f.alt)
        chosen = f
        if best_pos == 0:
            break  # no later shape can match earlier
    if not title:
        if matched_title:
            reason = "matched title but not report regexp"
        i = report.find(oops.header)
        if i < 0:
            return _Description("", (), reason, None, best_pos if matched_title else -1)
        e = report.find("\n", i)
        title = report[i : e if e >= 0 else len(report)]
    if not reason and chosen is not None and chosen.corrupted:
        reason = "report format is marked as corrupted"
    return _Description(title, tuple(dict.fromkeys(alts)), reason, chosen, best_pos if matched_title else -1)


def _trace_window(text: str, pos: int, context: str, raw: bool) -> list[str]:
    """Up to 16 report lines from the one at ``pos`` on (when ``raw``: console
    lines of ``context``, prefixes and unreliable frames stripped)."""
    e = text.find("\n", pos)
    e = len(text) if e < 0 else e
    first = text[pos:e].rstrip("\r")
    if not raw:
        size = 4096
        while True:
            lines = text[pos : pos + size].split("\n", 16)
            if len(lines) > 16 or pos + size >= len(text):
                return lines[:16]
            size *= 4
    first, _q = _strip_prefix(first, _context(first))
    size = 4096
    while True:
        end = min(len(text), e + 1 + size)
        rest = _context_lines(text, e + 1, end, context)
        if len(rest) >= 15 or end == len(text):
            return [first, *rest[:15]]
        size *= 4


def _corruption(
    title: str,
    report: str,
    fmt: TitleFormat | None,
    context: str,
    text: str = "",
    pos: int = -1,
    report_end: int = -1,
) -> str:
    """Why the title of a well-formed-looking report still cannot be trusted ("" if it can).

    ``report`` is the report with prefixes stripped. Without caller ids the
    report ends where a second one starts, but a stack trace of the first may
    run on; ``text[pos:]`` (``pos`` >= 0) is then the console text from the
    report start on (``report_end`` where the report's part of it ends),
    looked at where the report is too short.
    """
    if _CORRUPTED_TITLE.search(title):
        return "title contains a timestamp"
    if fmt is None or fmt.no_stack_trace:
        return ""
    has_trace = False
    for key in range(len(_STACK_KEYS)):
        at = _key_search(key, report, 0, len(report))
        after = [] if at < 0 else _trace_window(report, report.rfind("\n", 0, at) + 1, context, False)
        if pos >= 0 and len(after) < 16 and report_end < len(text) - 1:
            at = _key_search(key, text, pos if at >= 0 else report_end, len(text))
            after = [] if at < 0 else _trace_window(text, text.rfind("\n", 0, at) + 1, context, True)
        if at < 0:
            continue
        if len(after) < 4:
            return "call trace is missed"
        found = False
        for ln in after[1:]:
            if rules.STACK_START_ANY.search(ln):
                break
            if "(stack is not available)" in ln or _frame_line(ln) is not None:
                found = has_trace = True
                break
        if not found:
            return "no frames in a stack trace"
    return "" if has_trace else "no stack trace in report"


def parse_raw(text: str) -> RawReport | None:
    """The first crash in ``text`` with its raw (not yet normalised) title."""
    for start, first_end, oops in iter_oops_lines(text):
        context = _context(text[start:first_end].rstrip("\r"))
        cut = _cut_report(text, start, context)
        body = "\n".join(cut.body[: cut.body_end]) + "\n"
        desc = _describe(body, oops)
        if not desc.title:
            body = text[start : cut.end]
            desc = _describe(body, oops)
            if not desc.title:
                continue
        reason = desc.corrupted_reason
        if not reason:
            if context in ("", _CONSOLE):
                reason = _corruption(desc.title, body, desc.fmt, context, text, start, cut.end)
            else:
                reason = _corruption(desc.title, "\n".join(cut.body), desc.fmt, context)
        report = "\n".join([*cut.prefix, *cut.body[: cut.body_end]]) + "\n"
        return RawReport(desc.title, desc.alt_titles, bool(reason), reason, report, start, cut.end)
    return None
