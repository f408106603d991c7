# ruff: noqa: E501  (console lines are quoted whole, as the kernel prints them)
"""kvmlab.oops.rust_demangle: Rust v0 (RFC 2603) symbol names.

Every symbol here is built by hand from the RFC's grammar. Back-references
(``B<base62>_``) count from just after ``_R``; the comment beside each case
shows the offset it points at. base-62: ``_`` is 0, ``<n>_`` is n + 1.
"""

from __future__ import annotations

import random
import textwrap
import time

import pytest

from kvmlab.oops import parse
from kvmlab.oops.parser import demangle as parser_demangle
from kvmlab.oops.rust_demangle import demangle

pytestmark = pytest.mark.unit


CASES = [
    # -- plain paths: crate roots (with and without a disambiguator hash) and nesting
    ("_RNvC4demo4main", "demo::main"),
    ("_RNvNtCs1234_4demo3net4send", "demo::net::send"),
    ("_RNvNtNtCsAbC_4demo3net3tcp7connect", "demo::net::tcp::connect"),
    # an identifier that starts with "_" or a digit needs the "_" separator
    ("_RNvCs9_7___rustc17rust_begin_unwind", "__rustc::rust_begin_unwind"),
    ("_RNvC4demo3__2d", "demo::_2d"),
    ("_RNvC4demo2_2d", "demo::2d"),
    # -- inherent impl: B2_ -> offset 3, the "NtC4demo6widget" after "NvM"
    ("_RNvMNtC4demo6widgetNtB2_6Widget3new", "<demo::widget::Widget>::new"),
    # with an impl disambiguator "s0_": B5_ -> offset 6
    ("_RNvMs0_NtC4demo6widgetNtB5_6Widget4drop", "<demo::widget::Widget>::drop"),
    # -- trait impl: "s_" disambiguator, B4_ -> offset 5
    (
        "_RNvXs_NtC4demo5shapeNtB4_6CircleNtNtC4core3fmt7Display3fmt",
        "<demo::shape::Circle as core::fmt::Display>::fmt",
    ),
    # trait impl for a reference type: B2_ -> offset 3 ("NtC4demo1a")
    ("_RNvXNtC4demo1aRNtB2_1SNtNtC4core3fmt5Debug3fmt", "<&demo::a::S as core::fmt::Debug>::fmt"),
    # a trait's own (default) method: <T as Trait>
    ("_RNvYNtC4demo4UnitNtC4demo5Greet5hello", "<demo::Unit as demo::Greet>::hello"),
    # -- generic arguments: "::<...>" on a function, "<...>" inside a type
    ("_RINvNtC3std3mem7size_ofjE", "std::mem::size_of::<usize>"),
    ("_RNvMNtC5alloc3vecINtB2_3VechE4push", "<alloc::vec::Vec<u8>>::push"),
    ("_RINvC4demo3mapNtC4demo3KeyINtC4demo3BoxlEE", "demo::map::<demo::Key, demo::Box<i32>>"),
    # -- closures and shims
    ("_RNCNvC4demo4main0", "demo::main::{closure#0}"),
    ("_RNCNvC4demo4mains_0", "demo::main::{closure#1}"),
    ("_RNCNCNvC4demo4main00", "demo::main::{closure#0}::{closure#0}"),
    ("_RNSNvC4demo4main6vtable", "demo::main::{shim:vtable#0}"),
    ("_RNCNvMNtC4demo6widgetNtB4_6Widget3run0", "<demo::widget::Widget>::run::{closure#0}"),
    # lowercase (implementation-specific) namespaces print their name, if any
    ("_RNvNgC4demo5inner4leaf", "demo::inner::leaf"),
    ("_RNvNgC4demo04leaf", "demo::leaf"),
    # -- back-references to a type: Bd_ -> offset 14, the "Tlm" tuple
    ("_RINvC4demo4pairTlmEBd_E", "demo::pair::<(i32, u32), (i32, u32)>"),
    # -- types
    (
        "_RINvC4demo1fRShQmPuOaAhj4_TbEzeE",
        "demo::f::<&[u8], &mut u32, *const (), *mut i8, [u8; 4], (bool,), !, str>",
    ),
    (
        "_RINvC4demo1fTEFEuFUKCjEyFK7stdcallEuE",
        'demo::f::<(), fn(), unsafe extern "C" fn(usize) -> u64, extern "stdcall" fn()>',
    ),
    ("_RINvC4demo1fFG_RL0_hEuE", "demo::f::<for<'a> fn(&'a u8)>"),
    ("_RINvC4demo1fRL_hE", "demo::f::<&u8>"),
    ("_RINvC4demo1fL_E", "demo::f::<'_>"),
    ("_RINvC4demo1fDNtC4core3AnyEL_E", "demo::f::<dyn core::Any>"),
    (
        "_RINvC4demo1fDNtNtC4core4iter8Iteratorp4ItemhNtC4core4SendEL_E",
        "demo::f::<dyn core::iter::Iterator<Item = u8> + core::Send>",
    ),
    # -- const generics
    ("_RINvC4demo5arrayKj10_Kb1_Kc61_Kan5_KpE", "demo::array::<16, true, 'a', -5, _>"),
    # -- punycode identifiers ("gödel" is "gdel-5qa")
    ("_RNvC4demou8gdel_5qa", "demo::gödel"),
    # -- the instantiating crate is not shown; a leading extra "_" is accepted
    ("_RNvC4demo4mainC4core", "demo::main"),
    ("__RNvC4demo4main", "demo::main"),
    # -- ThinLTO's ".llvm.<hash>" is dropped, other suffixes are kept
    ("_RNvC4demo4main.llvm.1234ABCD", "demo::main"),
    ("_RNvC4demo4main.cold", "demo::main.cold"),
]


@pytest.mark.parametrize(("mangled", "want"), CASES)
def test_demangle(mangled: str, want: str) -> None:
    assert demangle(mangled) == want
    # the parser's own demangle() hands "_R" names over
    assert parser_demangle(mangled) == want


UNCHANGED = [
    "_R",  # nothing
    "_RAX",  # a register, not a symbol
    "_RNvC4demo",  # truncated: no item name
    "_RNvC4demo4mai",  # truncated inside an identifier
    "_RNvMNtC4demo6widgetNtB2_6Widget",  # truncated: the impl has no item
    "_RINvC4demo1fh",  # generic args without their "E"
    "_RNvC4demo4mainQ",  # trailing garbage
    "_RNvCx4demo4main",  # a crate root without an identifier
    "_RQC4demo",  # not a path tag
    "_RB_",  # back-reference to itself
    "_RNvB9_1a",  # back-reference forwards
    "_R0NvC4demo4main",  # an encoding version other than v0
    "_RINvC4demo1fKbx_E",  # bool constant with a non-hex digit
    "_RINvC4demo1fKb2_E",  # bool constant out of range
    "_RINvC4demo1fRL1_hE",  # a lifetime that no binder bound
    "_RINvC4demo1fDNtC4core3AnyEE",  # dyn without its lifetime
    "_R.cold",  # a suffix and no path
    "tcp_close",  # not a Rust name at all
    "_ZN3foo3barE",
]


@pytest.mark.parametrize("mangled", UNCHANGED)
def test_malformed_names_come_back_unchanged(mangled: str) -> None:
    assert demangle(mangled) == mangled


def test_deep_nesting_is_refused_not_crashed() -> None:
    deep = "_RINvC4demo1f" + "R" * 5000 + "hE"
    assert demangle(deep) == deep


def test_backref_bomb_stays_cheap() -> None:
    # each tuple holds the previous type twice: 2**40 "u8"s if expanded
    body = "INvC4demo1f"
    prev = len(body)
    body += "h"
    for _ in range(40):
        here = len(body)
        ref = "B" + _base62(prev) + "_"
        body += "T" + ref + ref + "E"
        prev = here
    body += "E"
    started = time.process_time()
    assert demangle("_R" + body) == "_R" + body
    assert time.process_time() - started < 1.0


def test_random_junk_never_raises() -> None:
    rng = random.Random(2603)
    alphabet = "_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for _ in range(3000):
        name = "_R" + "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        assert isinstance(demangle(name), str)
    # and mutations of valid symbols
    for mangled, _want in CASES:
        for _ in range(30):
            i = rng.randrange(2, len(mangled))
            name = mangled[:i] + rng.choice(alphabet) + mangled[i + 1 :]
            assert isinstance(demangle(name), str)
            assert isinstance(demangle(mangled[:i]), str)


def _base62(n: int) -> str:
    """The digits of base-62 number n (n >= 1), without the closing "_"."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    n -= 1
    out = ""
    while True:
        out = digits[n % 62] + out
        n //= 62
        if n == 0:
            return out


# A Rust panic in a kernel module as x86-64 6.12 prints it: the panic message,
# then the BUG() that rust_begin_unwind ends in, with Rust v0 names in the trace.
# In _RNvXs0_NtCsq7_8demo_drv6device..., B5_ points at offset 6 ("NtCsq7_8demo_drv6device").
RUST_PANIC = """\
[   41.100001][ T1234] rust_kernel: panicked at drivers/misc/demo_drv/device.rs:88:17:
[   41.100001][ T1234] attempt to add with overflow
[   41.100950][ T1234] ------------[ cut here ]------------
[   41.101322][ T1234] kernel BUG at rust/helpers/bug.c:7!
[   41.102011][ T1234] Oops: invalid opcode: 0000 [#1] PREEMPT SMP KASAN PTI
[   41.102500][ T1234] CPU: 1 UID: 0 PID: 1234 Comm: demo-client Not tainted 6.12.0-demo #1
[   41.102900][ T1234] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[   41.103300][ T1234] RIP: 0010:rust_helper_BUG+0x8/0x10
[   41.103700][ T1234] Code: 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90 f3 0f 1e fa 0f 1f 44 00 00 <0f> 0b 66 0f 1f 44 00 00
[   41.104100][ T1234] RSP: 0018:ffffc90000e47a10 EFLAGS: 00010246
[   41.104500][ T1234] RAX: 0000000000000040 RBX: ffff888104c1a000 RCX: 0000000000000000
[   41.104900][ T1234] Call Trace:
[   41.105000][ T1234]  <TASK>
[   41.105100][ T1234]  _RNvCs1a2b3c_7___rustc17rust_begin_unwind+0x15b/0x160
[   41.105200][ T1234]  ? __cfi__RNvCs1a2b3c_7___rustc17rust_begin_unwind+0x10/0x10
[   41.105300][ T1234]  _RNvNtCsk1_4core9panicking9panic_fmt+0x84/0x90
[   41.105400][ T1234]  ? __cfi__RNvNtCsk1_4core9panicking9panic_fmt+0x10/0x10
[   41.105500][ T1234]  _RNvNtNtCsk1_4core9panicking11panic_const24panic_const_add_overflow+0xb2/0xc0
[   41.105600][ T1234]  _RNvXs0_NtCsq7_8demo_drv6deviceNtB5_6DeviceNtNtCsz_6kernel10miscdevice10MiscDevice5ioctl+0x3a1/0x4f0
[   41.105700][ T1234]  ? _raw_spin_lock+0x8c/0x120
[   41.105800][ T1234]  _RNvMNtCsq7_8demo_drv6deviceNtB2_6Device8dispatch+0x77/0x100
[   41.105900][ T1234]  __x64_sys_ioctl+0x18f/0x210
[   41.106000][ T1234]  do_syscall_64+0xf3/0x230
[   41.106100][ T1234]  entry_SYSCALL_64_after_hwframe+0x77/0x7f
[   41.106200][ T1234]  </TASK>
"""


def test_rust_panic_title_names_the_demangled_frame() -> None:
    rep = parse(textwrap.dedent(RUST_PANIC))
    assert rep is not None
    want = "<demo_drv::device::Device as kernel::miscdevice::MiscDevice>::ioctl"
    assert rep.title == "attempt to add with overflow in " + want
    assert rep.frame == want
    assert not rep.corrupted
