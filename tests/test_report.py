# ruff: noqa: E501  (console lines are quoted whole, as the kernel prints them)
"""kvmlab.oops: crash detection, titles, types, corruption, same-bug matching.

Real logs: tests/fixtures/report/*.log, captured from this host's Debian 6.1
kernel by tests/fixtures/report/capture.sh, and demo-null-deref.log, the serial
console of the project's demo kernel (allnoconfig-based 6.1) running the
reproducer of its planted NULL-pointer bug, and lkdtm-*.log, reports of every
kind (WARNING, kernel BUG, hung task, soft lockup, lockdep, ...) that a kvmlab
built debug kernel printed on demand through LKDTM (capture-lkdtm.sh). Edge cases: small logs written
here in the kernel's own formats (x86-64, 6.x), each pinning one rule.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from kvmlab.oops import Report, crash_start, normalize_title, parse, same_bug, signature

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "report"


def log(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def must_parse(text: str) -> Report:
    rep = parse(text)
    assert rep is not None, "no crash found"
    return rep


# -- captured logs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("sysrq-crash.log", "kernel panic: sysrq triggered crash"),
        ("no-root.log", "kernel panic: VFS: Unable to mount root fs on unknown-block(NUM,NUM)"),
        ("kill-init.log", "kernel panic: Attempted to kill init!"),
    ],
)
def test_captured_panics(name: str, title: str) -> None:
    text = (FIXTURES / name).read_text()
    rep = must_parse(text)
    assert rep.title == title
    assert rep.type == "DoS"
    assert not rep.corrupted
    assert text[rep.start :].startswith("[")  # a line start
    assert "Kernel panic - not syncing" in text[rep.start : rep.end]
    # the report is the console text without timestamps, with its call trace
    assert "Call Trace:" in rep.report
    assert "[    " not in rep.report
    assert rep.start == crash_start(text)


# Real reports from LKDTM on a kvmlab-built 6.1 kernel (base,debug,lkdtm), captured
# by tests/fixtures/report/capture-lkdtm.sh: title, type, and the guilty frame.
# gcc inlined lkdtm_HUNG_TASK, lkdtm_SPINLOCKUP and most of lkdtm_SOFTLOCKUP's
# caller chain into direct_entry(.cold), so syzkaller's rules land there: a hung
# task takes the first frame that is not scheduling or locking; a soft lockup
# the frame before the first syscall-level anchor (vfs_write); "lock held when
# returning" the function named in the held lock's "at:".
LKDTM = [
    ("lkdtm-warning.log", "WARNING in lkdtm_WARNING", "WARNING", "lkdtm_WARNING"),
    ("lkdtm-bug.log", "kernel BUG in lkdtm_BUG", "BUG", "lkdtm_BUG"),
    ("lkdtm-exception.log", "BUG: unable to handle kernel NULL pointer dereference in lkdtm_EXCEPTION",
     "NULL-POINTER-DEREFERENCE", "lkdtm_EXCEPTION"),
    ("lkdtm-hung-task.log", "INFO: task hung in direct_entry", "HANG", "direct_entry"),
    ("lkdtm-soft-lockup.log", "BUG: soft lockup in full_proxy_write", "HANG", "full_proxy_write"),
    ("lkdtm-lock-held.log", "WARNING: lock held when returning to user space in direct_entry",
     "LOCKDEP", "direct_entry"),
    ("lkdtm-refcount.log", "WARNING: refcount bug in lkdtm_REFCOUNT_INC_OVERFLOW", "REFCOUNT_WARNING",
     "lkdtm_REFCOUNT_INC_OVERFLOW"),
    ("lkdtm-panic.log", "kernel panic: dumptest", "DoS", None),
]


@pytest.mark.parametrize(("name", "title", "kind", "frame"), LKDTM, ids=[c[0] for c in LKDTM])
def test_captured_lkdtm_reports(name: str, title: str, kind: str, frame: str | None) -> None:
    text = (FIXTURES / name).read_text()
    assert "lkdtm: Performing direct entry" in text  # the capture did provoke it
    rep = must_parse(text)
    assert (rep.title, rep.type) == (title, kind)
    if frame is not None:
        assert rep.frame == frame
    assert not rep.corrupted
    assert rep.start == crash_start(text)


@pytest.mark.parametrize("prefix", ["", "../src/", "/build/linux-6.1/"])
def test_path_rules_see_through_build_dir_prefixes(prefix: str) -> None:
    # The captured kernel BUG, as if list debugging had fired: the kernel
    # prints __FILE__ as the build handed it to the compiler.
    text = (FIXTURES / "lkdtm-bug.log").read_text()
    assert "kernel BUG at drivers/misc/lkdtm/bugs.c:" in text or "kernel BUG at ../src/drivers/" in text
    text = re.sub(r"kernel BUG at \S+:\d+!", f"kernel BUG at {prefix}lib/list_debug.c:62!", text)
    assert must_parse(text).title.startswith("BUG: corrupted list in ")


def test_captured_sysrq_crash_keeps_the_lines_that_led_to_it() -> None:
    rep = must_parse((FIXTURES / "sysrq-crash.log").read_text())
    assert "sysrq: Trigger a crash" in rep.report
    assert " sysrq_handle_crash+0x" in rep.report


def test_captured_backtrace_of_all_cpus_is_not_a_crash() -> None:
    # sysrq-l prints "NMI backtrace for cpu N" with call traces, and
    # "INFO: NMI handler ... took too long to run": neither is a crash.
    text = (FIXTURES / "sysrq-backtrace.log").read_text()
    assert "Call Trace:" in text and "INFO: NMI handler" in text
    assert parse(text) is None
    assert crash_start(text) is None


# -- kinds of crash, written in the kernel's formats ------------------------------

GPF = log("""
    [   75.212015][ T5123] general protection fault, probably for non-canonical address 0xdffffc0000000002: 0000 [#1] SMP
    [   75.213180][ T5123] KASAN: null-ptr-deref in range [0x0000000000000010-0x0000000000000017]
    [   75.213920][ T5123] CPU: 1 PID: 5123 Comm: syz-executor.3 Not tainted 6.1.0 #1
    [   75.214700][ T5123] RIP: 0010:tcp_cleanup_ulp+0x2c/0xa0
    [   75.215210][ T5123] Code: 41 54 55 53 48 89 fb e8 a1 b2 c3 fd 48 8d bb 10 <80> 3c 02 00
    [   75.215900][ T5123] RSP: 0018:ffffc90003fdfa98 EFLAGS: 00010202
    [   75.216500][ T5123] Call Trace:
    [   75.216700][ T5123]  <TASK>
    [   75.216900][ T5123]  tcp_v4_destroy_sock+0xfa/0x920
    [   75.217100][ T5123]  ? lock_sock_nested+0x3a/0xf0
    [   75.217300][ T5123]  inet_csk_destroy_sock+0x152/0x3a0
    [   75.217500][ T5123]  __tcp_close+0xd16/0x1150
    [   75.217700][ T5123]  tcp_close+0x2d/0xc0
    [   75.217900][ T5123]  inet_release+0xde/0x1c0
    [   75.218100][ T5123]  __sock_release+0xc7/0x230
    [   75.218300][ T5123]  sock_close+0x10/0x20
    [   75.218500][ T5123]  __fput+0x317/0xa30
    [   75.218700][ T5123]  task_work_run+0x19f/0x240
    [   75.218900][ T5123]  </TASK>
    """)

NULL_DEREF = log("""
    [   12.000001] BUG: kernel NULL pointer dereference, address: 0000000000000000
    [   12.000002] #PF: supervisor write access in kernel mode
    [   12.000003] #PF: error_code(0x0002) - not-present page
    [   12.000004] PGD 0 P4D 0
    [   12.000005] Oops: 0002 [#1] PREEMPT SMP NOPTI
    [   12.000006] CPU: 0 PID: 77 Comm: demo Not tainted 6.1.0-demo #1
    [   12.000007] RIP: 0010:demo_null_write+0x11/0x30
    [   12.000008] Code: 00 00 0f 1f 44 00 00 31 c0 <c7> 00 2a 00 00 00 c3
    [   12.000009] RSP: 0018:ffffc9000033fe50 EFLAGS: 00010246
    [   12.000010] Call Trace:
    [   12.000011]  <TASK>
    [   12.000012]  demo_write+0x52/0x80
    [   12.000013]  vfs_write+0xc7/0x3f0
    [   12.000014]  ksys_write+0x6b/0xf0
    [   12.000015]  do_syscall_64+0x5d/0x90
    [   12.000016]  entry_SYSCALL_64_after_hwframe+0x6e/0xd8
    [   12.000017]  </TASK>
    [   12.000018] ---[ end trace 0000000000000000 ]---
    """)

KASAN_UAF = log("""
    [   40.100000] ==================================================================
    [   40.100001] BUG: KASAN: slab-use-after-free in demo_uaf_read+0x54/0x70
    [   40.100002] Read of size 8 at addr ffff888012345678 by task demo/99
    [   40.100003]
    [   40.100004] CPU: 0 PID: 99 Comm: demo Not tainted 6.1.0-demo #1
    [   40.100005] Call Trace:
    [   40.100006]  <TASK>
    [   40.100007]  dump_stack_lvl+0x44/0x5c
    [   40.100008]  print_report+0x17a/0x47b
    [   40.100009]  kasan_report+0xbb/0xf0
    [   40.100010]  demo_uaf_read+0x54/0x70
    [   40.100011]  __x64_sys_demo_uaf+0x12/0x20
    [   40.100012]  do_syscall_64+0x5d/0x90
    [   40.100013]  </TASK>
    [   40.100014]
    [   40.100015] Allocated by task 99:
    [   40.100016]  kasan_save_stack+0x22/0x40
    [   40.100017]  __kmalloc+0x4a/0x100
    [   40.100018]  demo_alloc+0x20/0x40
    [   40.100019]
    [   40.100020] Freed by task 99:
    [   40.100021]  kasan_save_stack+0x22/0x40
    [   40.100022]  kfree+0x8a/0x120
    [   40.100023]  demo_free+0x20/0x40
    [   40.100024] ==================================================================
    """)

WARN_REFCOUNT = log("""
    [  300.000001] ------------[ cut here ]------------
    [  300.000002] refcount_t: underflow; use-after-free.
    [  300.000003] WARNING: CPU: 1 PID: 4242 at lib/refcount.c:28 refcount_warn_saturate+0x13a/0x1a0
    [  300.000004] Modules linked in:
    [  300.000005] CPU: 1 PID: 4242 Comm: demo Not tainted 6.1.0-demo #1
    [  300.000006] RIP: 0010:refcount_warn_saturate+0x13a/0x1a0
    [  300.000007] Code: 0f 0b e9 3e ff ff ff
    [  300.000008] Call Trace:
    [  300.000009]  <TASK>
    [  300.000010]  demo_put_ref+0x3c/0x50
    [  300.000011]  demo_release+0x11/0x20
    [  300.000012]  __fput+0x317/0xa30
    [  300.000013]  </TASK>
    [  300.000014] ---[ end trace 0000000000000000 ]---
    """)

WARN_PLAIN = log("""
    [    5.500000] WARNING: CPU: 0 PID: 1 at drivers/demo/demo.c:42 demo_probe+0x2a/0x60
    [    5.500001] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0-demo #1
    [    5.500002] RIP: 0010:demo_probe+0x2a/0x60
    [    5.500003] Call Trace:
    [    5.500004]  <TASK>
    [    5.500005]  really_probe+0xdb/0x380
    [    5.500006]  driver_probe_device+0x1e/0x90
    [    5.500007]  </TASK>
    [    5.500008] ---[ end trace 0000000000000000 ]---
    """)

HUNG_TASK = log("""
    [  491.000001] INFO: task kworker/0:2:123 blocked for more than 143 seconds.
    [  491.000002]       Not tainted 6.1.0-demo #1
    [  491.000003] "echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.
    [  491.000004] task:kworker/0:2     state:D stack:0     pid:123   ppid:2      flags:0x00004000
    [  491.000005] Call Trace:
    [  491.000006]  <TASK>
    [  491.000007]  __schedule+0x2e9/0x8a0
    [  491.000008]  schedule+0x5d/0xe0
    [  491.000009]  schedule_preempt_disabled+0x14/0x30
    [  491.000010]  __mutex_lock.constprop.0+0x3a3/0x6c0
    [  491.000011]  demo_flush_stats+0x1c/0x60
    [  491.000012]  process_one_work+0x1c7/0x380
    [  491.000013]  </TASK>
    """)

LOCKDEP = log("""
    [   60.000001] ======================================================
    [   60.000002] WARNING: possible circular locking dependency detected
    [   60.000003] 6.1.0-demo #1 Not tainted
    [   60.000004] ------------------------------------------------------
    [   60.000005] demo/321 is trying to acquire lock:
    [   60.000006] ffff888010001000 (&dev->lock){+.+.}-{3:3}, at: demo_ioctl+0x45/0x120
    [   60.000007]
    [   60.000008] but task is already holding lock:
    [   60.000009] ffff888010002000 (&ctx->mutex){+.+.}-{3:3}, at: demo_ctx_enter+0x20/0x50
    [   60.000010]
    [   60.000011] which lock already depends on the new lock.
    [   60.000012]
    [   60.000013] the existing dependency chain (in reverse order) is:
    [   60.000014]
    [   60.000015] -> #1 (&ctx->mutex){+.+.}-{3:3}:
    [   60.000016]        __mutex_lock+0x9d/0x8e0
    [   60.000017]        demo_open+0x30/0x80
    [   60.000018]
    [   60.000019] stack backtrace:
    [   60.000020] CPU: 0 PID: 321 Comm: demo Not tainted 6.1.0-demo #1
    [   60.000021] Call Trace:
    [   60.000022]  <TASK>
    [   60.000023]  dump_stack_lvl+0x44/0x5c
    [   60.000024]  __lock_acquire+0x1234/0x2000
    [   60.000025]  lock_acquire+0xc2/0x2b0
    [   60.000026]  demo_ioctl+0x45/0x120
    [   60.000027]  </TASK>
    """)

LEAK = log("""
    [  120.000001] kmemleak: 1 new suspected memory leaks (see /sys/kernel/debug/kmemleak)
    BUG: memory leak
    unreferenced object 0xffff888012340000 (size 64):
      comm "demo", pid 55, jiffies 4294937296 (age 13.200s)
      hex dump (first 32 bytes):
        00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
      backtrace:
        [<ffffffff8150a6b1>] kmalloc_trace+0x21/0x90
        [<ffffffff8200a0b2>] demo_make_node+0x32/0x90
        [<ffffffff8200a1c3>] demo_ioctl+0x83/0x120
    """)


@pytest.mark.parametrize(
    ("text", "title", "kind", "frame"),
    [
        (GPF, "general protection fault in tcp_cleanup_ulp", "DoS", "tcp_cleanup_ulp"),
        (
            NULL_DEREF,
            "BUG: unable to handle kernel NULL pointer dereference in demo_null_write",
            "NULL-POINTER-DEREFERENCE",
            "demo_null_write",
        ),
        (
            KASAN_UAF,
            "KASAN: slab-use-after-free Read in demo_uaf_read",
            "KASAN-USE-AFTER-FREE-READ",
            "demo_uaf_read",
        ),
        # The WARN fired in a refcount helper: the culprit is its caller.
        (WARN_REFCOUNT, "WARNING: refcount bug in demo_put_ref", "REFCOUNT_WARNING", "demo_put_ref"),
        (WARN_PLAIN, "WARNING in demo_probe", "WARNING", "demo_probe"),
        # Scheduler and mutex frames are where every hung task waits, not why.
        (HUNG_TASK, "INFO: task hung in demo_flush_stats", "HANG", "demo_flush_stats"),
        (LOCKDEP, "possible deadlock in demo_ioctl", "LOCKDEP", "demo_ioctl"),
        # kmemleak prints without timestamps; allocation frames are skipped.
        (LEAK, "memory leak in demo_make_node", "LEAK", "demo_make_node"),
    ],
)
def test_titles(text: str, title: str, kind: str, frame: str) -> None:
    rep = must_parse(text)
    assert (rep.title, rep.type) == (title, kind)
    if frame is not None:
        assert rep.frame == frame
    assert not rep.corrupted, rep.corrupted_reason


def test_bad_access_alt_title() -> None:
    assert "bad-access in tcp_cleanup_ulp" in must_parse(GPF).alt_titles
    assert "bad-access in demo_uaf_read" in must_parse(KASAN_UAF).alt_titles


def test_syscall_wrapper_prefixes_are_stripped() -> None:
    text = KASAN_UAF.replace("demo_uaf_read+0x54/0x70\n", "__do_sys_demo_uaf+0x54/0x70\n", 1).replace(
        "in demo_uaf_read", "in __do_sys_demo_uaf"
    )
    rep = must_parse(text)
    assert rep.title == "KASAN: slab-use-after-free Read in demo_uaf"
    assert "KASAN: slab-use-after-free Read in __do_sys_demo_uaf" in rep.alt_titles


def test_questionable_frames_are_skipped() -> None:
    # "? lock_sock_nested" sits between the RIP and the first real frame
    rep = must_parse(GPF)
    assert "lock_sock_nested" not in rep.report


def test_captured_demo_null_deref_after_a_shell_prompt() -> None:
    # The kernel's oops line follows busybox's "/ # " prompt and its cursor
    # query "\x1b[6n" on the same console line; the call trace holds only
    # syscall entry frames, so the RIP frame is the guilty one.
    text = (FIXTURES / "demo-null-deref.log").read_text()
    rep = must_parse(text)
    assert rep.title == "BUG: unable to handle kernel NULL pointer dereference in comm_digest_compute"
    assert rep.type == "NULL-POINTER-DEREFERENCE"
    assert rep.frame == "comm_digest_compute"
    assert not rep.corrupted, rep.corrupted_reason
    assert "bad-access in comm_digest_compute" in rep.alt_titles
    assert text[rep.start :].startswith("/ # \x1b[6n[    4.484936] BUG: kernel NULL pointer dereference")
    assert rep.start == crash_start(text)
    assert "\nBUG: kernel NULL pointer dereference, address: 0000000000000000\n" in rep.report
    assert " __x64_sys_prctl+0xf3/0x5b0\n" in rep.report
    assert "/ # " not in rep.report and "[    4." not in rep.report


RIP_ONLY_SYSCALL_TRACE = log(
    """
    [    4.484936] BUG: kernel NULL pointer dereference, address: 0000000000000000
    [    4.485296] #PF: supervisor read access in kernel mode
    [    4.485439] #PF: error_code(0x0000) - not-present page
    [    4.486040] Oops: 0000 [#1]
    [    4.486288] CPU: 0 PID: 43 Comm: repro Not tainted 6.1.192 #5
    [    4.487477] RIP: 0010:demo_fn.SUFFIX+0x0/0x20
    [    4.489866] RSP: 0018:ffff888002307ef0 EFLAGS: 00000202
    [    4.491768] Call Trace:
    [    4.493009]  <TASK>
    [    4.493819]  __x64_sys_prctl+0xf3/0x5b0
    [    4.495088]  do_syscall_64+0x3c/0x90
    [    4.495217]  entry_SYSCALL_64_after_hwframe+0x4b/0xb5
    [    4.495511] RIP: 0033:0x439ebd
    [    4.497738] RAX: ffffffffffffffda RBX: 00007ffca1af9aa8 RCX: 0000000000439ebd
    [    4.498677]  </TASK>
    [    4.498824] CR2: 0000000000000000
    [    4.499233] ---[ end trace 0000000000000000 ]---
    [    4.504579] Kernel panic - not syncing: Fatal exception
    """
)


@pytest.mark.parametrize("suffix", ["isra.0", "constprop.0", "part.0", "cold", "isra.0.cold"])
def test_rip_frame_with_compiler_suffix_and_only_skipped_trace_frames(suffix: str) -> None:
    rep = must_parse(RIP_ONLY_SYSCALL_TRACE.replace("SUFFIX", suffix))
    assert rep.title == "BUG: unable to handle kernel NULL pointer dereference in demo_fn"
    assert rep.frame == "demo_fn"
    assert not rep.corrupted, rep.corrupted_reason


@pytest.mark.parametrize(
    "before",
    ["/ # ", "/ # \x1b[6n", "syzkaller login: ", "\x1b[0m\x1b[1;32mroot@vm\x1b[0m:~# ", "<4>"],
)
def test_foreign_text_before_the_kernel_prefix(before: str) -> None:
    # Userspace shares the serial console: what it left on the line without a
    # newline precedes the kernel's timestamp, on any line of the report.
    lines = RIP_ONLY_SYSCALL_TRACE.replace("SUFFIX", "part.0").splitlines()
    lines[0] = before + lines[0]
    lines[9] = before + lines[9]  # a frame line
    text = "[    4.1] init done\n" + "\n".join(lines) + "\n"
    rep = must_parse(text)
    assert rep.title == "BUG: unable to handle kernel NULL pointer dereference in demo_fn"
    assert not rep.corrupted, rep.corrupted_reason
    assert rep.start == text.index(before + "[    4.484936]") == crash_start(text)
    assert before not in rep.report


def test_a_bracket_before_the_timestamp_is_not_a_prefix() -> None:
    # Only ANSI escape sequences may open a bracket before the timestamp: a
    # line "[x] [  4.1] ..." is not a console line of the kernel's.
    text = RIP_ONLY_SYSCALL_TRACE.replace("SUFFIX", "part.0").replace(
        "[    4.493819]  __x64_sys_prctl", "[x] [    4.493819]  __x64_sys_prctl"
    )
    rep = must_parse(text)
    assert "__x64_sys_prctl" not in rep.report
    assert rep.frame == "demo_fn"


# -- prefixes, interleaving, truncation ------------------------------------------------


def test_task_context_separates_interleaved_output() -> None:
    lines = GPF.splitlines()
    noise = [f"[   75.2{i:05d}][ T9999] net_ratelimit: 3 callbacks suppressed WARNING:" for i in range(5)]
    mixed = []
    for i, line in enumerate(lines):
        mixed.append(line)
        if 3 <= i < 8:
            mixed.append(noise[i - 3])
    rep = must_parse("\n".join(mixed) + "\n")
    assert rep.title == "general protection fault in tcp_cleanup_ulp"
    assert "T9999" not in rep.report and "net_ratelimit" not in rep.report
    assert not rep.corrupted


def test_cpu_context_prefix() -> None:
    text = "".join(line.replace("[ T5123]", "[    C1]") + "\n" if line else "\n" for line in GPF.splitlines())
    rep = must_parse(text)
    assert rep.title == "general protection fault in tcp_cleanup_ulp"


def test_log_without_timestamps() -> None:
    text = "".join(line[line.index("] ") + 2 :] + "\n" for line in NULL_DEREF.splitlines())
    rep = must_parse(text)
    assert rep.title == "BUG: unable to handle kernel NULL pointer dereference in demo_null_write"
    assert not rep.corrupted


def test_truncated_report_is_corrupted() -> None:
    # The console stopped right after "Call Trace:": the title names the RIP
    # frame, but the report cannot be trusted.
    text = NULL_DEREF[: NULL_DEREF.index("[   12.000011]")]
    rep = must_parse(text)
    assert rep.title.startswith("BUG: unable to handle kernel NULL pointer dereference in")
    assert rep.corrupted


def test_lost_header_gives_corrupted_title() -> None:
    # x86 prints "BUG: unable to handle kernel" and the rest in two printk()s.
    text = "[   1.0] BUG: unable to handle kernel\n[   1.1] Oops: 0000 [#1] SMP\n"
    rep = must_parse(text)
    assert rep.title == "BUG: unable to handle kernel"
    assert rep.corrupted


def test_panic_after_report_is_not_its_title() -> None:
    # panic_on_warn: the report is the WARNING, not the panic that follows it
    text = WARN_PLAIN + "[    5.600000] Kernel panic - not syncing: panic_on_warn set ...\n"
    assert must_parse(text).title == "WARNING in demo_probe"


def test_only_a_panic_left_is_corrupted() -> None:
    text = "[    9.0] Kernel panic - not syncing: Fatal exception\n"
    rep = must_parse(text)
    assert (rep.title, rep.corrupted) == ("kernel panic: Fatal exception", True)


def test_replayed_printk_line_starts_the_report() -> None:
    text = "[  584.319520][   T31] INFO: t\n** replaying previous printk message **\n" + HUNG_TASK.replace(
        "[  491.", "[  584."
    ).replace("] ", "][   T31] ", 100)
    rep = must_parse(text)
    assert rep.title == "INFO: task hung in demo_flush_stats"
    assert rep.start == text.index("[  584.000001]")


def test_first_crash_counts() -> None:
    rep = must_parse(WARN_PLAIN + GPF)
    assert rep.title == "WARNING in demo_probe"
    assert "tcp_cleanup_ulp" not in rep.report  # cut before the second report
    assert rep.end <= len(WARN_PLAIN)


NOT_CRASHES = [
    "WARNING: /etc/ssh/moduli does not exist, using fixed modulus\n",
    "[    1.0] INFO: lockdep is turned off.\n",
    "[    2.0] ODEBUG: object is on stack, but not annotated\n",
    "[    3.0] traps: demo[123] general protection fault ip:7f00 sp:7ffd error:0 in libc.so.6[7f00+1000]\n",
    "[    4.0] skb_panic: text:ffffffff8 len:0\n",
    "[    5.0] EXT4-fs (sda1): WARNING: mounting unchecked fs\n",
    "[    6.0] INFO: NMI handler (perf_event_nmi_handler) took too long to run: 1.2 msecs\n",
    "[    7.0] BUG: no syscalls can create resource fd\n",
]


@pytest.mark.parametrize("text", NOT_CRASHES)
def test_lines_that_look_like_crashes_but_are_not(text: str) -> None:
    assert parse(text) is None
    assert crash_start(text) is None


def test_no_crash_in_clean_boot() -> None:
    head = (FIXTURES / "sysrq-crash.log").read_text()
    head = head[: head.index("sysrq: Trigger a crash")]
    assert parse(head) is None


# -- streaming ---------------------------------------------------------------------------


def test_crash_start_on_a_stream() -> None:
    boot = (FIXTURES / "sysrq-backtrace.log").read_text()
    stream = boot + NULL_DEREF
    seen = ""
    found = None
    for i in range(0, len(stream), 512):
        seen += stream[i : i + 512]
        found = crash_start(seen)
        if found is not None:
            break
    assert found == len(boot)


# -- same bug ---------------------------------------------------------------------------


def test_same_bug() -> None:
    assert same_bug(
        "KASAN: use-after-free Read in demo_uaf_read", "KASAN: slab-use-after-free Write in demo_uaf_read"
    )
    assert same_bug(must_parse(GPF), "general protection fault in tcp_cleanup_ulp")
    # the alt title joins a GPF and a KASAN report on one function
    gpf_in_demo = must_parse(GPF.replace("tcp_cleanup_ulp", "demo_uaf_read"))
    assert same_bug(gpf_in_demo, must_parse(KASAN_UAF))
    assert not same_bug("WARNING in demo_probe", "WARNING in demo_remove")
    assert not same_bug("WARNING in demo_probe", "INFO: task hung in demo_probe")


def test_same_bug_with_a_corrupted_report() -> None:
    corrupted = must_parse(NULL_DEREF[: NULL_DEREF.index("[   12.000011]")])
    assert corrupted.corrupted
    assert same_bug(corrupted, "BUG: unable to handle kernel NULL pointer dereference in other_func")
    assert not same_bug(corrupted, "WARNING in demo_probe")


def test_signature_and_normalisation() -> None:
    assert normalize_title("WARNING in foo  at 0xffff888012345678 on CPU#3 line 42") == (
        "WARNING in foo at ADDR on CPU line NUM"
    )
    sig = signature("KASAN: slab-out-of-bounds Write in demo_fn")
    assert "KASAN: slab-out-of-bounds Write in demo_fn" in sig
    assert "KASAN: out-of-bounds in demo_fn" in sig


def test_report_json_round_trip_fields() -> None:
    d = must_parse(GPF).to_json()
    assert d["title"] == "general protection fault in tcp_cleanup_ulp"
    assert isinstance(d["alt_titles"], list)
    assert {"type", "corrupted", "frame", "report", "start", "end"} <= d.keys()


def test_cxx_frames_are_demangled() -> None:
    from kvmlab.oops.parser import demangle

    assert demangle("_Z8fakeNameiii") == "fakeName"
    assert demangle("_ZN3foo3barEv") == "foo::bar"
    assert demangle("tcp_close") == "tcp_close"
    text = WARN_PLAIN.replace("demo_probe+0x2a/0x60", "_Z10demo_probev+0x2a/0x60")
    assert must_parse(text).title == "WARNING in demo_probe"


def test_serial_crlf_line_endings() -> None:
    # a serial console gives "\r\n"; offsets still refer to the text as given
    text = "[    0.1] booting\r\n" + GPF.replace("\n", "\r\n")
    rep = must_parse(text)
    assert rep.title == "general protection fault in tcp_cleanup_ulp"
    assert not rep.corrupted
    assert "\r" not in rep.report
    assert rep.start == text.index("[   75.212015]") == crash_start(text)


def test_empty_and_junk_input() -> None:
    assert parse("") is None
    assert parse("\x00\xff" * 100) is None
    assert crash_start("") is None
    rep = must_parse("BUG:")
    assert (rep.title, rep.corrupted) == ("BUG: corrupted", True)
