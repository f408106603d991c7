"""Demangle Rust *v0* symbol names (RFC 2603, the ``_R`` scheme).

Rust code in the kernel is built with ``-Csymbol-mangling-version=v0``, so a
crash report's call trace shows frames such as
``_RNvMs3_NtCs1234_11rust_binder7processNtB5_7Process10update_ref``. syzbot
titles name them the way ``rustc-demangle``'s alternate format does, without
the crates' disambiguator hashes: ``<rust_binder::process::Process>::update_ref``.

This is a small recursive-descent reader written from the RFC's grammar::

    symbol      = "_R" path [instantiating-crate] [vendor-suffix]
    path        = "C" ident                      crate root
                | "M" impl-path type             <T>
                | "X" impl-path type path        <T as Trait>
                | "Y" type path                  <T as Trait>
                | "N" namespace path ident       prefix::name, {closure#N}, ...
                | "I" path {generic-arg} "E"     prefix::<A, B>
                | backref
    impl-path   = [disambiguator] path
    ident       = [disambiguator] ["u"] decimal ["_"] bytes
    generic-arg = lifetime | type | "K" const
    type        = basic | path | "A" type const | "S" type | "T" {type} "E"
                | "R" [lifetime] type | "Q" [lifetime] type | "P" type | "O" type
                | "F" fn-sig | "D" dyn-bounds lifetime | backref
    backref     = "B" base62                     offset from just after "_R"

Whatever it cannot read comes back unchanged: :func:`demangle` never raises.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["demangle"]

_BASIC_TYPES = {
    "a": "i8",
    "b": "bool",
    "c": "char",
    "d": "f64",
    "e": "str",
    "f": "f32",
    "h": "u8",
    "i": "isize",
    "j": "usize",
    "l": "i32",
    "m": "u32",
    "n": "i128",
    "o": "u128",
    "p": "_",
    "s": "i16",
    "t": "u16",
    "u": "()",
    "v": "...",
    "x": "i64",
    "y": "u64",
    "z": "!",
}
_SIGNED = frozenset("ailnsx")
_UNSIGNED = frozenset("hjmoty")
_BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BASE62_VALUE = {c: i for i, c in enumerate(_BASE62)}
_PATH_TAGS = frozenset("CMXYNIB")

#: Bounds that keep hostile input cheap: nesting depth, parse steps (back-
#: references can make output grow exponentially) and output length.
_MAX_DEPTH = 120
_MAX_STEPS = 20_000
_MAX_OUTPUT = 4096


class _Invalid(Exception):
    """The symbol does not follow the grammar (or is too large to bother)."""


class _Reader:
    def __init__(self, text: str) -> None:
        self.s = text
        self.pos = 0
        self.depth = 0
        self.steps = 0
        #: Lifetimes bound by the enclosing ``for<...>`` binders.
        self.bound = 0

    # -- lexical --------------------------------------------------------

    def peek(self) -> str:
        return self.s[self.pos] if self.pos < len(self.s) else ""

    def next(self) -> str:
        if self.pos >= len(self.s):
            raise _Invalid
        c = self.s[self.pos]
        self.pos += 1
        return c

    def eat(self, c: str) -> bool:
        if self.pos < len(self.s) and self.s[self.pos] == c:
            self.pos += 1
            return True
        return False

    def enter(self) -> None:
        self.depth += 1
        self.steps += 1
        if self.depth > _MAX_DEPTH or self.steps > _MAX_STEPS:
            raise _Invalid

    def leave(self, out: str) -> str:
        """Close what :meth:`enter` opened; ``out`` is what it produced."""
        self.depth -= 1
        if len(out) > _MAX_OUTPUT:
            raise _Invalid
        return out

    def base62(self) -> int:
        """``_`` is 0, ``<digits>_`` is their value plus one."""
        if self.eat("_"):
            return 0
        value = 0
        while True:
            c = self.next()
            if c == "_":
                return value + 1
            digit = _BASE62_VALUE.get(c)
            if digit is None:
                raise _Invalid
            value = value * 62 + digit
            if value > 1 << 64:
                raise _Invalid

    def opt_base62(self, tag: str) -> int:
        """An optional ``<tag> base62``: 0 when absent, else the number plus one."""
        return self.base62() + 1 if self.eat(tag) else 0

    def decimal(self) -> int:
        """``0``, or digits without a leading zero (so ``04`` is 0, then 4)."""
        start = self.pos
        if self.eat("0"):
            return 0
        while self.peek() in "0123456789" and self.peek():
            self.pos += 1
        digits = self.s[start : self.pos]
        if not digits or len(digits) > 9:
            raise _Invalid
        return int(digits)

    def ident(self) -> str:
        """An undisambiguated identifier, punycode decoded."""
        puny = self.eat("u")
        length = self.decimal()
        self.eat("_")
        end = self.pos + length
        if end > len(self.s):
            raise _Invalid
        raw = self.s[self.pos : end]
        self.pos = end
        return _punycode(raw) if puny else raw

    def backref(self) -> _Reader:
        """After the ``B``: a reader positioned at the referenced offset, which
        must lie before the backref itself (so backrefs cannot loop)."""
        tag_pos = self.pos - 1
        target = self.base62()
        if target >= tag_pos:
            raise _Invalid
        self.steps += 1
        sub = _Reader(self.s)
        sub.pos, sub.depth, sub.steps, sub.bound = target, self.depth, self.steps, self.bound
        return sub

    def join_back(self, sub: _Reader) -> None:
        self.steps = sub.steps

    # -- paths ----------------------------------------------------------

    def path(self, value: bool) -> str:
        """A path; *value* selects ``f::<T>`` (expressions) over ``T<U>`` (types)."""
        self.enter()
        tag = self.next()
        if tag == "C":
            self.opt_base62("s")
            out = self.ident()
        elif tag == "M":
            self.opt_base62("s")
            self.path(False)  # where the impl is; the self type names it
            out = "<" + self.type() + ">"
        elif tag == "X":
            self.opt_base62("s")
            self.path(False)
            self_type = self.type()
            out = "<" + self_type + " as " + self.path(False) + ">"
        elif tag == "Y":
            self_type = self.type()
            out = "<" + self_type + " as " + self.path(False) + ">"
        elif tag == "N":
            out = self.nested(value)
        elif tag == "I":
            self.pos -= 1
            base, args = self.open_generics(value)
            out = base + ("::" if value else "") + "<" + ", ".join(args) + ">"
        elif tag == "B":
            sub = self.backref()
            out = sub.path(value)
            self.join_back(sub)
        else:
            raise _Invalid
        return self.leave(out)

    def nested(self, value: bool) -> str:
        ns = self.next()
        if not ns.isascii() or not ns.isalpha():
            raise _Invalid
        prefix = self.path(value)
        dis = self.opt_base62("s")
        name = self.ident()
        if ns.isupper():
            kind = {"C": "closure", "S": "shim"}.get(ns, ns)
            return prefix + "::{" + kind + (":" + name if name else "") + "#" + str(dis) + "}"
        return prefix + "::" + name if name else prefix

    def open_generics(self, value: bool) -> tuple[str, list[str]]:
        """A path split into its base and generic arguments (none unless it is
        an ``I`` path), so that a dyn trait can add its associated types."""
        if self.eat("I"):
            self.enter()
            base = self.path(value)
            args: list[str] = []
            while not self.eat("E"):
                args.append(self.generic_arg())
            self.depth -= 1
            return base, args
        if self.peek() == "B":
            self.pos += 1
            self.enter()
            sub = self.backref()
            result = sub.open_generics(value)
            self.join_back(sub)
            self.depth -= 1
            return result
        return self.path(value), []

    def generic_arg(self) -> str:
        if self.eat("L"):
            return self.lifetime(self.base62())
        if self.eat("K"):
            return self.const()
        return self.type()

    def lifetime(self, index: int) -> str:
        if index == 0:
            return "'_"
        depth = self.bound - index
        if depth < 0:
            raise _Invalid
        return "'" + chr(ord("a") + depth) if depth < 26 else "'_" + str(depth)

    def binder(self) -> tuple[str, int]:
        """An optional ``for<'a, ...>``: its text and how many lifetimes it binds."""
        count = self.opt_base62("G")
        if count == 0:
            return "", 0
        if count > 64:
            raise _Invalid
        names = [self.lifetime_name(self.bound + i) for i in range(count)]
        return "for<" + ", ".join(names) + "> ", count

    @staticmethod
    def lifetime_name(depth: int) -> str:
        return "'" + chr(ord("a") + depth) if depth < 26 else "'_" + str(depth)

    # -- types ----------------------------------------------------------

    def type(self) -> str:
        self.enter()
        tag = self.peek()
        basic = _BASIC_TYPES.get(tag)
        if basic is not None:
            self.pos += 1
            out = basic
        elif tag == "B":  # a type, which may or may not be a path
            self.pos += 1
            sub = self.backref()
            out = sub.type()
            self.join_back(sub)
        elif tag in _PATH_TAGS:
            out = self.path(False)
        else:
            self.pos += 1
            if tag == "A":
                elem = self.type()
                out = "[" + elem + "; " + self.const() + "]"
            elif tag == "S":
                out = "[" + self.type() + "]"
            elif tag == "T":
                elems: list[str] = []
                while not self.eat("E"):
                    elems.append(self.type())
                out = "(" + ", ".join(elems) + (",)" if len(elems) == 1 else ")")
            elif tag in ("R", "Q"):
                out = "&"
                if self.eat("L"):
                    index = self.base62()
                    if index:
                        out += self.lifetime(index) + " "
                out += ("mut " if tag == "Q" else "") + self.type()
            elif tag == "P":
                out = "*const " + self.type()
            elif tag == "O":
                out = "*mut " + self.type()
            elif tag == "F":
                out = self.fn_sig()
            elif tag == "D":
                out = self.dyn_bounds()
            else:
                raise _Invalid
        return self.leave(out)

    def fn_sig(self) -> str:
        binder, count = self.binder()
        self.bound += count
        out = binder
        if self.eat("U"):
            out += "unsafe "
        if self.eat("K"):
            abi = "C" if self.eat("C") else self.ident().replace("_", "-")
            out += 'extern "' + abi + '" '
        params: list[str] = []
        while not self.eat("E"):
            params.append(self.type())
        ret = self.type()
        self.bound -= count
        out += "fn(" + ", ".join(params) + ")"
        return out if ret == "()" else out + " -> " + ret

    def dyn_bounds(self) -> str:
        binder, count = self.binder()
        self.bound += count
        traits: list[str] = []
        while not self.eat("E"):
            base, args = self.open_generics(False)
            while self.eat("p"):
                name = self.ident()
                args.append(name + " = " + self.type())
            traits.append(base + ("<" + ", ".join(args) + ">" if args else ""))
        self.bound -= count
        out = "dyn " + binder + " + ".join(traits)
        if not self.eat("L"):
            raise _Invalid
        index = self.base62()
        return out + " + " + self.lifetime(index) if index else out

    # -- constants ------------------------------------------------------

    def const(self) -> str:
        self.enter()
        tag = self.next()
        if tag == "p":
            out = "_"
        elif tag == "B":
            sub = self.backref()
            out = sub.const()
            self.join_back(sub)
        elif tag in _SIGNED or tag in _UNSIGNED:
            negative = self.eat("n")
            if negative and tag not in _SIGNED:
                raise _Invalid
            value = self.hex()
            out = str(-value if negative else value)
        elif tag == "b":
            value = self.hex()
            if value > 1:
                raise _Invalid
            out = "true" if value else "false"
        elif tag == "c":
            value = self.hex()
            if value > 0x10FFFF or 0xD800 <= value < 0xE000:
                raise _Invalid
            out = _char_literal(chr(value))
        elif tag == "e":
            out = self.str_const()
        else:
            raise _Invalid  # aggregate constants (&, [], tuples, structs): rare in kernel frames
        self.depth -= 1
        return out

    def hex(self) -> int:
        start = self.pos
        while self.peek() in "0123456789abcdef" and self.peek():
            self.pos += 1
        digits = self.s[start : self.pos]
        if not self.eat("_") or len(digits) > 32:
            raise _Invalid
        return int(digits, 16) if digits else 0

    def str_const(self) -> str:
        start = self.pos
        while self.peek() in "0123456789abcdef" and self.peek():
            self.pos += 1
        digits = self.s[start : self.pos]
        if not self.eat("_") or len(digits) % 2 or len(digits) > 2 * _MAX_OUTPUT:
            raise _Invalid
        try:
            text = bytes.fromhex(digits).decode("utf-8")
        except ValueError:
            raise _Invalid from None
        return '"' + "".join(_escape(c, '"') for c in text) + '"'


def _escape(c: str, quote: str) -> str:
    if c in (quote, "\\"):
        return "\\" + c
    if c == "\n":
        return "\\n"
    if c == "\t":
        return "\\t"
    if c == "\r":
        return "\\r"
    if not c.isprintable():
        return "\\u{" + format(ord(c), "x") + "}"
    return c


def _char_literal(c: str) -> str:
    return "'" + _escape(c, "'") + "'"


def _punycode(raw: str) -> str:
    """A ``u``-identifier: RFC 3492 punycode with ``_`` as the delimiter.
    Undecodable ones stay readable as ``punycode{...}``."""
    basic, sep, deltas = raw.rpartition("_")
    encoded = basic + "-" + deltas if sep else deltas
    try:
        return encoded.encode("ascii").decode("punycode")
    except (UnicodeError, ValueError, OverflowError):
        return "punycode{" + raw + "}"


def _strip_llvm_suffix(name: str) -> str:
    """ThinLTO renames imported local symbols ``name.llvm.<digits>``: not part
    of the function's name."""
    i = name.find(".llvm.")
    if i >= 0 and all(c in "0123456789ABCDEF@" for c in name[i + 6 :]):
        return name[:i]
    return name


@lru_cache(maxsize=16384)
def demangle(name: str) -> str:
    """The readable name of a Rust v0 symbol, in ``rustc-demangle``'s alternate
    style (no crate hashes): ``_RNvNtCs1a_4core3fmt5write`` -> ``core::fmt::write``.
    A leading extra underscore (``__R``) is accepted. Names that are not v0
    symbols, or that do not follow the grammar, come back unchanged."""
    symbol = name[1:] if name.startswith("__R") else name
    if not symbol.startswith("_R"):
        return name
    symbol = _strip_llvm_suffix(symbol)
    body, suffix = symbol[2:], ""
    for i, c in enumerate(body):
        if c in ".$":
            body, suffix = body[:i], body[i:]
            break
    if not body or body[0].isdigit():  # an encoding version other than v0
        return name
    reader = _Reader(body)
    try:
        out = reader.path(True)
        if reader.peek() in _PATH_TAGS:
            reader.path(False)  # the instantiating crate: not shown
        if reader.pos != len(body):
            return name
    except (_Invalid, ValueError, RecursionError):
        return name
    return out + suffix
