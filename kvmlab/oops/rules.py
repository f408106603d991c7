# ruff: noqa: E501  (a table of kernel message regexes reads best one entry per line)
"""The kernel's crash messages and how syzbot titles each of them.

Pure data: every kind of Linux oops is an :class:`Oops` (a literal header that
starts a report on a console line, lines that carry the header but are not a
crash) with its :class:`TitleFormat` list (regex of the kernel's message ->
syzbot-style title, and where in the report the guilty frame is). The engine
that applies them lives in :mod:`kvmlab.oops.parser`.

The message formats follow the kernel sources (``lib/``, ``mm/kasan``,
``kernel/locking/lockdep.c``, ``arch/x86/mm/fault.c`` ...); the title words
follow syzbot's public dashboard, with syzkaller's ``pkg/report/linux.go`` as
the reference for which frame is the culprit.

Title formats use ``str.format`` positional fields: first the capture groups
of ``report`` (or of ``title`` when there is no ``report`` regex), then one
frame per stack-trace section of ``stack``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Marker in :attr:`StackFormat.parts`: "parse call-trace frames here".
STACK = "<stack>"

_SUBST = {
    "{{ADDR}}": r"0x[0-9a-f]+",
    "{{PC}}": r"\[\<?(?:0x)?[0-9a-f]+\>?\]",
    "{{FUNC}}": r"([a-zA-Z0-9_]+)(?:\.|\+)",
    "{{SRC}}": r"([a-zA-Z0-9-_/.]+\.[a-z]+:[0-9]+)",
    "{{TASK}}": r"[\s\S]{0,100}?",
}


def rx(pattern: str) -> re.Pattern[str]:
    """Compile ``pattern`` after expanding the ``{{PC}}``-style shorthands."""
    for key, value in _SUBST.items():
        pattern = pattern.replace(key, value)
    return re.compile(pattern)


Part = re.Pattern[str] | str
FrameExtractor = Callable[[Sequence[str]], tuple[str, int]]


@dataclass(frozen=True)
class StackFormat:
    """Where the guilty frame is: a sequence of line regexes and :data:`STACK` sections.

    A regex part consumes lines up to the first that matches it (its capture
    groups are frame candidates); a :data:`STACK` part collects frames until the
    next stack starts. ``parts2`` is tried when ``parts`` finds no frame.
    """

    parts: tuple[Part, ...]
    parts2: tuple[Part, ...] = ()
    skip: tuple[str, ...] = ()
    """Extra frame-name regexes never to blame for this kind of crash."""
    extractor: str = ""
    """``""`` (first unskipped frame), ``"stall"`` or ``"hang"``."""


@dataclass(frozen=True)
class TitleFormat:
    """One shape of one kind of crash message."""

    title: re.Pattern[str]
    fmt: str
    report: re.Pattern[str] | None = None
    alt: tuple[str, ...] = ()
    stack: StackFormat | None = None
    no_stack_trace: bool = False
    """The report legitimately has no call trace (do not call it corrupted)."""
    corrupted: bool = False
    """Matching only this shape means the report lost its real header."""


@dataclass(frozen=True)
class Oops:
    """A literal header that starts a report, with its shapes."""

    header: str
    formats: tuple[TitleFormat, ...]
    not_crash: tuple[re.Pattern[str], ...] = field(default=())
    """Lines that contain the header but are not crashes."""


# -- frames and stacks ------------------------------------------------------

RIP_FRAME = rx(
    r"(?:IP|NIP|pc |PC is at):? (?:(?:[0-9]+:)?(?:{{PC}} +){0,2}{{FUNC}}|(?:[0-9]+:)?0x[0-9a-f]+"
    r"|(?:[0-9]+:)?{{PC}} +\[< *\(null\)>\] +\(null\)|[0-9]+: +\(null\))"
)
CALL_TRACE = rx(r"(?:Call (?:T|t)race:)|(?:Backtrace:)")

#: Lines that begin a (new) stack trace inside a report.
STACK_START = (
    re.compile(r"Call (?:T|t)race"),
    re.compile(r"Allocated:"),
    re.compile(r"Allocated by task [0-9]+:"),
    re.compile(r"Freed:"),
    re.compile(r"Freed by task [0-9]+:"),
    # kmemleak's "backtrace:" (optionally with a crc), not lockdep's "stack backtrace:".
    re.compile(r"[^k] backtrace(?: \(crc [0-9a-fA-F]*\))?:"),
    re.compile(r"Backtrace:"),
    re.compile(r"Uninit was stored to memory at"),
)

STACK_START_ANY = re.compile("|".join(f"(?:{r.pattern})" for r in STACK_START))

#: One call-trace line: x86/arm64 style, and arm's "(callee) from (caller)".
FRAME_LINES = (
    rx(r"^ *(?:{{PC}} ){0,2}{{FUNC}}"),
    rx(r"^ *{{PC}} \(([a-zA-Z0-9_.]+)\) from {{PC}} \({{FUNC}}"),
)
#: Both, for scanning many lines at once (arm's first: x86's never matches its lines).
FRAME_LINES_M = re.compile(
    "|".join("(?:" + r.pattern.removeprefix("^") + ")" for r in reversed(FRAME_LINES)).join(("^ *(?:", ")")),
    re.M,
)

#: A stack from fault injection mixed into a report: the report is not to be trusted.
CORRUPTING_LINE = rx(r"^(?: \[\<?(?:0x)?[0-9a-f]+\>?\])? should_fail(?:slab)?(?:\.[a-z0-9.]+)?\+0x")

#: Syscall wrappers: the frame names a syscall by its plain name.
STRIP_FRAME_PREFIXES = (
    "SYSC_", "SyS_", "sys_", "__x64_", "__ia32_", "__arm64_", "____sys_", "___sys_", "__sys_",
    "__se_", "__se_sys_", "__do_sys_", "compat_SYSC_", "compat_SyS_", "ksys_",
)  # fmt: skip

#: Frames that are never the culprit of any crash: they report, allocate,
#: lock, copy, format or dispatch on behalf of the guilty code.
SKIP_FRAMES: tuple[str, ...] = (
    # sanitizers and the reporting machinery
    "__sanitizer", "__asan", "kasan", "hwasan", "__msan", "kmsan", "kcsan_setup_watchpoint",
    "check_memory_region", "check_heap_object", "check_object", "read_word_at_a_time",
    "(read|write)_once_.*nocheck", "print_address_description", "panic", "invalid_op",
    "report_bug", "fixup_bug", "print_report", "print_usage_bug", "do_error", r"_trap$|do_trap",
    "show_stack", "dump_stack", "walk_stack", "dump_backtrace", "warn_slowpath", "warn_alloc",
    "warn_bogus", "__warn", "print_tainted", "__fortify_report", "^get_taint$",
    "stack_trace_consume_entry", "arch_stack_walk", "stack_trace_save", "hex_dump_to_buffer",
    "print_hex_dump", "assertfail", "program_check_exception", "program_check_common",
    # memory allocation and the page cache
    "alloc_page", "k?v?(?:m|z|c)alloc", "krealloc", "kmem_cache", "allocate_slab",
    "__alloc_frozen_pages_noprof", "folio_(?:alloc|unlock)", "filemap_alloc_folio",
    "__filemap_get_folio", "find_or_create_page", "do_read_cache_folio", "read_cache_page",
    "pagecache_get_page", "grab_cache_page_write_begin", "slab_", "^kv?free$", "kfree_skb",
    "xas_(?:start|load|find)", "find_lock_entries", "truncate_inode_pages_range", "__phys_addr",
    "memdup",
    # debug objects, lockdep, locking primitives, atomics
    "debug_object", "timer_is_static_object", "work_is_static_object", "print_unlock",
    "imbalance_bug", "lockdep", "bh_enable", "bh_disable", "perf_trace", "lock_acquire",
    "lock_release", "lock_class", "mark_lock", "(reacquire|mark)_held_locks", "raw_spin_rq",
    "spin_lock", "spin_trylock", "spin_unlock", "read_lock", "read_trylock", "write_lock",
    "write_trylock", "read_unlock", "write_unlock", "^down$", "down_read", "down_write",
    "down_trylock", "up_read", "up_write", "^mutex_", "^__mutex_", "^rt_mutex_", "owner_on_cpu",
    "osq_lock", "osq_unlock", "(trace|lockdep)_(hard|soft)irq", "^(un)?lock_page",
    "atomic(64)?_(dec|inc|read|set|or|xor|and|add|sub|fetch|xchg|cmpxchg|try)",
    "(set|clear|change|test)_bit", "__wake_up", "^refcount_", "^kref_", "ref_tracker",
    "seqprop_assert", "^complete$", "wait_for_completion", "finish_wait", "cleanup_srcu_struct",
    # string, memory and user-copy helpers
    "memcpy", "memcmp", "memset", "memchr", "memmove", "strcmp", "strncmp", "strcpy", "strlcpy",
    "strncpy", "strscpy", "strlen", "strstr", "strnstr", "strnlen", "strchr", "strdup",
    "strndup", "copy_to_user", "copy_from_user", "copy_to_iter", "copy_from_iter",
    "copy_page_to_iter", "copy_page_from_iter", "copy_folio_to_iter", "^copyin$", "^copyout$",
    "put_user", "get_user", "might_fault", "might_sleep", "__might_resched",
    "extract_(user|iter)_to_sg",
    # data structures
    "list_add", "list_del", "list_replace", "list_move", "list_splice", "^rb_", "^__rb_",
    "^klist_", "rhashtable_lookup", "ida_free", "^crc\\d+", "crc_itu_t",
    # printk and formatting
    "_indirect_thunk_", "string", "pointer", "snprintf", "scnprintf", "kasprintf", "kvasprintf",
    "printk", "va_format", "dev_info", "dev_notice", "dev_warn", "dev_err", "dev_alert",
    "dev_crit", "dev_emerg",
    # timers and workqueues
    "del_timer", "flush_work", "__cancel_work_timer", "cancel_work_sync", "try_to_grab_pending",
    "flush_workqueue", "drain_workqueue", "destroy_workqueue", "queue_work", "insert_work",
    "__queue_delayed_work", "queue_delayed_work_on", "kthread_stop", "lock_timer_base",
    "__timer_delete_sync", "sk_stop_timer_sync", "__mod_timer",
    # device model teardown, usb plumbing, mmio
    "kobject_", "add_uevent_var", "get_device_parent", "device_add", "device_del",
    "device_unregister", "device_destroy", "device_release", "devres_release_all",
    "hwrng_unregister", "i2c_del_adapter", "__unregister_client", "device_for_each_child",
    "rollback_registered", "unregister_netdev", "sysfs_remove", "device_remove_file",
    "tty_unregister_device", "^put_device$", "dummy_urb_enqueue", "usb_kill_urb",
    "usb_kill_anchored_urbs", "usb_control_msg", "usb_hcd_submit_urb", "usb_submit_urb",
    "readb$", "readw$", "readl$", "readq$", "writeb$", "writew$", "writel$", "writeq$",
    "logic_in", "logic_out",
    # vfs reference dropping
    "^iput$", "^iput_final$", "^ihold$", "drop_nlink", "fast_dput", "dput", "mark_buffer_dirty",
    # arm64 fault entry
    "do_(kernel|translation)_fault", "do_mem_abort", "el1_abort", "el1h_64_sync(?:_handler)?",
)  # fmt: skip

#: Where a stall's looping code is entered from: the frame just above the first
#: of these identifies the stall better than the top of the stack does.
STALL_ANCHOR = re.compile("|".join(
    f"(?:{p})"
    for p in (
        # generic dispatchers
        "process_one_work", "do_syscall_", "do_fast_syscall_", "sysenter_dispatch",
        "tracesys_phase2", "el0_svc_handler", "invoke_syscall", "ret_fast_syscall",
        "netif_receive_skb", "do_softirq", "call_timer_fn", "_run_timers", "run_timer_softirq",
        "hrtimer_run", "run_ksoftirqd", "smpboot_thread_fn", "^kthread$", "start_secondary",
        "cpu_startup_entry", "ret_from_fork",
        # file operations
        "vfs_write", "vfs_read", "vfs_iter_read", "vfs_iter_write", "do_iter_read",
        "do_iter_write", "call_read_iter", "call_write_iter", "new_sync_read", "new_sync_write",
        "vfs_ioctl", "ksys_ioctl", "compat_ioctl", "compat_sys_ioctl", "blkdev_driver_ioctl",
        "blkdev_ioctl", "do_iter_readv_writev", "^call_mmap", "mmap_region", "do_mmap",
        "do_dentry_open", "vfs_open",
        # socket operations
        "^sock_sendmsg", "^sock_recvmsg", "^sock_release", "^__sock_release", "^setsockopt$",
        "kernel_setsockopt", "sock_common_setsockopt", "^listen$", "kernel_listen",
        "sk_common_release", "^sock_mmap", "^accept$", "kernel_accept", "^sock_do_ioctl",
        "^sock_ioctl", "^compat_sock_ioctl", "^nfnetlink_rcv_msg", "^rtnetlink_rcv_msg",
        "^netlink_dump", "^(sys_)?(socketpair|connect|ioctl)",
        # page faults and return-to-user work
        "__do_fault", "do_page_fault", "^page_fault$", "__fput", "task_work_run",
        "exit_to_usermode", "smp_call_function", "tasklet_action", "tasklet_hi_action",
    )
))  # fmt: skip

# -- the kinds of crash -----------------------------------------------------


def _trace(*skip: str, extractor: str = "") -> StackFormat:
    """Frames of the first call trace."""
    return StackFormat(parts=(CALL_TRACE, STACK), skip=skip, extractor=extractor)


def _rip_trace(*skip: str, extractor: str = "") -> StackFormat:
    """The faulting instruction's frame, then the call trace."""
    return StackFormat(parts=(RIP_FRAME, CALL_TRACE, STACK), skip=skip, extractor=extractor)


def _warning(*skip: str) -> StackFormat:
    """WARN(): the warning site from the RIP line (x86) or the interrupt frame
    (powerpc); when that is a helper to skip, the first caller in the trace."""
    site = rx("(?:" + RIP_FRAME.pattern + "|--- interrupt: [0-9]+ at {{FUNC}})")
    return StackFormat(parts=(site, STACK), parts2=(CALL_TRACE, STACK), skip=skip)


_BAD_ACCESS = ("bad-access in {0}",)
_HANG_SKIP = ("schedule",)
_KASAN_ACCESS = (
    "BUG: KASAN: ([a-z\\-]+) in {{FUNC}}(?:.*\\n)+?.*(Read|Write) (?:of size|at addr) (?:[0-9a-f]+)"
)
_INVALID_FREE = "BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in {{FUNC}}"
#: "kernel BUG at " and a path as the kernel tree names it, after whatever
#: the build put in front of it: "../src/" from an O= build whose compiler was
#: handed relative paths (ccache's basedir), an absolute build directory.
_ANY_TREE = "kernel BUG at (?:[^\\s:]*/)?"
_LOCKS_HELD_AT = "(?:.*\\n)+?.*leaving the kernel with locks still held(?:.*\\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"
_KMSAN_ORIGIN = rx("(Local variable .* created at:|Uninit was created at:)")

OOPSES: tuple[Oops, ...] = (
    Oops(
        "BUG:",
        (
            TitleFormat(
                rx("BUG: KASAN:"),
                "KASAN: {0} {2} in {3}",
                report=rx(_KASAN_ACCESS),
                alt=("bad-access in {3}",),
                stack=StackFormat(
                    parts=(rx("BUG: KASAN: (?:[a-z\\-]+) in {{FUNC}}"), CALL_TRACE, STACK),
                    # hardware tag-based KASAN reports go through the arm64 fault path
                    skip=("kernel_fault", "tag_check", "mem_abort", "^el1_", "^el1h_"),
                ),
            ),
            TitleFormat(
                rx("BUG: KASAN:"),
                "KASAN: invalid-free in {1}",
                report=rx(_INVALID_FREE),
                alt=("invalid-free in {1}",),
                stack=StackFormat(
                    parts=(rx(_INVALID_FREE), CALL_TRACE, STACK), skip=("slab_", "kfree", "vunmap", "vfree")
                ),
            ),
            TitleFormat(
                rx("BUG: KASAN: ([a-z\\-]+) on address(?:.*\\n)+?.*(Read|Write) of size ([0-9]+)"),
                "KASAN: {0} {1}",
            ),
            TitleFormat(rx("BUG: KASAN: (.*)"), "KASAN: {0}", corrupted=True),
            TitleFormat(
                rx("BUG: KMSAN: kernel-usb-infoleak"),
                "KMSAN: kernel-usb-infoleak in {1}",
                report=rx("BUG: KMSAN: kernel-usb-infoleak in {{FUNC}}"),
                alt=("KMSAN origin in {2}",),
                stack=StackFormat(
                    parts=(STACK, _KMSAN_ORIGIN, STACK),
                    skip=(
                        "alloc_skb",
                        "usb_submit_urb",
                        "usb_start_wait_urb",
                        "usb_bulk_msg",
                        "usb_interrupt_msg",
                        "usb_control_msg",
                    ),
                ),
                no_stack_trace=True,
            ),
            TitleFormat(
                rx("BUG: KMSAN:"),
                "KMSAN: {0} in {2}",
                report=rx("BUG: KMSAN: ([a-z\\-]+) in {{FUNC}}"),
                alt=("bad-access in {2}",),
                stack=StackFormat(
                    parts=(STACK, _KMSAN_ORIGIN, STACK),
                    # generic crypto code hits the uninit bytes; the bug is in its user
                    skip=(
                        "alloc_skb",
                        "netlink_ack",
                        "netlink_rcv_skb",
                        "_encrypt$",
                        "^(?:crypto|cipher|drbg|rng)_",
                    ),
                ),
                no_stack_trace=True,
            ),
            TitleFormat(rx("BUG: KCSAN:"), "KCSAN: {0}", report=rx("BUG: KCSAN: (.*)"), no_stack_trace=True),
            TitleFormat(
                rx("BUG: KFENCE: (use-after-free|out-of-bounds) (read|write) in {{FUNC}}"),
                "KFENCE: {0} {1} in {3}",
                alt=("bad-access in {3}",),
                stack=StackFormat(parts=(rx("BUG: KFENCE: (?:[a-z\\- ]+) in {{FUNC}}"), STACK)),
            ),
            TitleFormat(
                rx("BUG: KFENCE: invalid free in {{FUNC}}"),
                "KFENCE: invalid free in {1}",
                alt=("invalid-free in {1}",),
                no_stack_trace=True,
                stack=StackFormat(parts=(rx("BUG: KFENCE: (?:[a-z\\- ]+) in {{FUNC}}"), STACK)),
            ),
            TitleFormat(
                rx("BUG: KFENCE: invalid (read|write) in {{FUNC}}"),
                "KFENCE: invalid {0} in {2}",
                alt=("bad-access in {2}",),
                stack=StackFormat(parts=(rx("BUG: KFENCE: (?:[a-z\\- ]+) in {{FUNC}}"), STACK)),
            ),
            TitleFormat(
                rx("BUG: KFENCE: memory corruption in {{FUNC}}"),
                "KFENCE: memory corruption in {1}",
                no_stack_trace=True,
                stack=StackFormat(parts=(rx("BUG: KFENCE: (?:[a-z\\- ]+) in {{FUNC}}"), STACK)),
            ),
            TitleFormat(
                rx(
                    "BUG: (?:unable to handle kernel paging request|unable to handle page fault for address"
                    "|Unable to handle kernel data access)"
                ),
                "BUG: unable to handle kernel paging request in {0}",
                alt=_BAD_ACCESS,
                stack=_rip_trace(),
            ),
            TitleFormat(
                rx(
                    "BUG: (?:unable to handle kernel NULL pointer dereference|kernel NULL pointer dereference"
                    "|Kernel NULL pointer dereference)"
                ),
                "BUG: unable to handle kernel NULL pointer dereference in {0}",
                alt=_BAD_ACCESS,
                stack=_rip_trace(),
            ),
            # x86 prints this header in two printk() calls; the second may be lost.
            TitleFormat(
                rx("BUG: (?:unable to handle kernel|Unable to handle kernel)"),
                "BUG: unable to handle kernel",
                corrupted=True,
            ),
            TitleFormat(
                rx(
                    "BUG: (spinlock|rwlock) (lockup suspected|already unlocked|recursion|cpu recursion"
                    "|bad magic|wrong owner|wrong CPU|trylock failure on UP)"
                ),
                "BUG: {0} {1} in {2}",
                stack=_trace("spin_", "_lock", "_unlock"),
            ),
            TitleFormat(
                rx("BUG: soft lockup"),
                "BUG: soft lockup in {0}",
                alt=("stall in {0}",),
                stack=_rip_trace(extractor="stall"),
            ),
            TitleFormat(
                rx("BUG: .*still has locks held!"),
                "BUG: still has locks held in {0}",
                report=rx("BUG: .*still has locks held!(?:.*\\n)+?.*{{PC}} +{{FUNC}}"),
            ),
            TitleFormat(
                rx("BUG: scheduling while atomic"),
                "BUG: scheduling while atomic in {0}",
                stack=_trace("schedule"),
            ),
            TitleFormat(
                rx("BUG: lock held when returning to user space"),
                "BUG: lock held when returning to user space in {0}",
                report=rx("BUG: lock held when returning to user space" + _LOCKS_HELD_AT),
                no_stack_trace=True,
            ),
            TitleFormat(
                rx("BUG: bad unlock balance detected!"),
                "BUG: bad unlock balance in {0}",
                stack=StackFormat(parts=(rx("{{PC}} +{{FUNC}}"), CALL_TRACE, STACK)),
            ),
            TitleFormat(
                rx("BUG: held lock freed!"),
                "BUG: held lock freed in {0}",
                report=rx("BUG: held lock freed!(?:.*\\n)+?.*{{PC}} +{{FUNC}}"),
            ),
            TitleFormat(rx("BUG: Bad rss-counter state"), "BUG: Bad rss-counter state", no_stack_trace=True),
            TitleFormat(
                rx("BUG: non-zero nr_ptes on freeing mm"),
                "BUG: non-zero nr_ptes on freeing mm",
                no_stack_trace=True,
            ),
            TitleFormat(
                rx("BUG: non-zero nr_pmds on freeing mm"),
                "BUG: non-zero nr_pmds on freeing mm",
                no_stack_trace=True,
            ),
            # The fs type and block device in the message would split one bug per loop device.
            TitleFormat(
                rx("BUG: Dentry .* still in use"),
                "BUG: Dentry still in use in {0}",
                report=rx("BUG: Dentry .* still in use \\([0-9]+\\) \\[(unmount) of ([^\\]]+)\\]"),
                alt=("BUG: Dentry still in use [{0} of {1}]",),
            ),
            TitleFormat(
                rx("BUG: Bad page (state|cache)"),
                "BUG: Bad page {0} in {1}",
                stack=StackFormat(
                    parts=(rx("page last allocated"), STACK),
                    skip=(
                        "(free|put|get|update|release)_page",
                        "free_unref",
                        "^_*folio",
                        "truncate_inode_pages",
                        "page_frag_free",
                        "alloc",
                        "vmap",
                        "page_owner",
                    ),
                ),
            ),
            TitleFormat(rx("BUG: Bad page map"), "BUG: Bad page map"),
            TitleFormat(rx("BUG: workqueue lockup"), "BUG: workqueue lockup", no_stack_trace=True),
            TitleFormat(
                rx("BUG: sleeping function called from invalid context at (.*)"),
                "BUG: sleeping function called from invalid context in {1}",
                stack=_trace(),
            ),
            TitleFormat(
                rx("BUG: using ([a-z_]+)\\(\\) in preemptible"),
                "BUG: using {0}() in preemptible code in {1}",
                stack=_trace("dump_stack", "preemption", "preempt", "debug_", "processor_id", "this_cpu"),
            ),
            TitleFormat(
                rx("BUG: workqueue leaked lock or atomic"),
                "BUG: workqueue leaked lock or atomic in {0}",
                report=rx(
                    "BUG: workqueue leaked lock or atomic(?:.*\\n)+?.*last function: ([a-zA-Z0-9_]+)\\n"
                ),
                no_stack_trace=True,
            ),
            TitleFormat(
                rx("BUG: memory leak"),
                "memory leak in {0}",
                stack=StackFormat(
                    parts=(rx("backtrace(?: \\(crc [0-9a-fA-F]*\\))?:"), STACK),
                    skip=(
                        "kmemleak",
                        "mmap",
                        "kmem",
                        "slab",
                        "alloc",
                        "create_object",
                        "idr_get",
                        "list_lru_init",
                        "kasprintf",
                        "kvasprintf",
                        "pcpu_create",
                        "strdup",
                        "strndup",
                        "memdup",
                    ),
                ),
            ),
            TitleFormat(
                rx("BUG: .*stack guard page was hit at"),
                "BUG: stack guard page was hit in {0}",
                alt=("stack-overflow in {0}",),
                stack=_rip_trace(extractor="stall"),
            ),
            # arm's wording of lockdep's invalid wait context; titled like x86's
            TitleFormat(
                rx("BUG: Invalid wait context"),
                "WARNING: locking bug in {0}",
                stack=_trace("lock_sock", "release_sock"),
            ),
            TitleFormat(rx("BUG:\\s*(?:\\n|$)"), "BUG: corrupted", corrupted=True),
        ),
        (
            rx("ODEBUG:"),
            rx("Boot_DEBUG:"),
            rx("xlog_status:"),
            rx("DEBUG:"),
            rx("BUG: no syscalls can create resource"),
        ),
    ),
    Oops(
        "WARNING:",
        (
            TitleFormat(
                rx("WARNING: .*lib/debugobjects\\.c.* (?:debug_print|debug_check|at)"),
                "WARNING: ODEBUG bug in {0}",
                stack=_warning(
                    "debug_",
                    "rcu",
                    "hrtimer_",
                    "timer_",
                    "work_",
                    "percpu_",
                    "vunmap",
                    "vfree",
                    "__free_",
                    "debug_check",
                    "kobject_",
                ),
            ),
            TitleFormat(
                rx("WARNING: .*mm/usercopy\\.c.* (?:usercopy_warn|at)"),
                "WARNING: bad usercopy in {0}",
                stack=_warning("usercopy", "__check"),
            ),
            TitleFormat(
                rx("WARNING: .*lib/kobject\\.c.* (?:kobject_|at)"),
                "WARNING: kobject bug in {0}",
                stack=_warning("kobject_"),
            ),
            TitleFormat(
                rx("WARNING: .*fs/proc/generic\\.c.* (?:proc_register|at)"),
                "WARNING: proc registration bug in {0}",
                stack=_warning("proc_"),
            ),
            TitleFormat(
                rx("WARNING: .*lib/refcount\\.c.* (?:refcount_|at)"),
                "WARNING: refcount bug in {0}",
                stack=_warning("refcount", "kobject_"),
            ),
            TitleFormat(
                rx("WARNING: .*kernel/locking/lockdep\\.c.*lock_"),
                "WARNING: locking bug in {0}",
                stack=_warning("lock_sock", "release_sock"),
            ),
            TitleFormat(
                rx("WARNING: .*still has locks held!"),
                "WARNING: still has locks held in {0}",
                report=rx("WARNING: .*still has locks held!(?:.*\\n)+?.*at: {{FUNC}}"),
            ),
            TitleFormat(
                rx("WARNING: Nested lock was not taken"),
                "WARNING: nested lock was not taken in {0}",
                stack=_warning(),
            ),
            TitleFormat(
                rx("WARNING: lock held when returning to user space"),
                "WARNING: lock held when returning to user space in {0}",
                report=rx("WARNING: lock held when returning to user space" + _LOCKS_HELD_AT),
                no_stack_trace=True,
            ),
            TitleFormat(
                rx("WARNING: .*mm/.*\\.c.* k?.?malloc"),
                "WARNING: kmalloc bug in {0}",
                stack=_warning("kmalloc", "krealloc", "slab", "kmem"),
            ),
            TitleFormat(
                rx("WARNING: .*mm/vmalloc.c.*__vmalloc_node"),
                "WARNING: zero-size vmalloc in {0}",
                stack=_warning(),
            ),
            TitleFormat(
                rx("WARNING: .* usb_submit_urb"),
                "WARNING in {0}/usb_submit_urb",
                stack=_warning(
                    "usb_submit_urb",
                    "usb_start_wait_urb",
                    "usb_bulk_msg",
                    "usb_interrupt_msg",
                    "usb_control_msg",
                ),
            ),
            # the short form of newer kernels: "WARNING: file.c:123 at 0x..., CPU#0"
            TitleFormat(rx("WARNING: {{SRC}} at 0x\\d+, CPU#\\d+"), "WARNING in {1}", stack=_warning()),
            TitleFormat(rx("WARNING: .* at {{SRC}} {{FUNC}}"), "WARNING in {2}", stack=_warning()),
            TitleFormat(rx("WARNING: {{SRC}} at {{FUNC}}"), "WARNING in {2}", stack=_warning()),
            TitleFormat(rx("WARNING: \\[.*\\] {{SRC}} at {{FUNC}}.*"), "WARNING in {2}", stack=_warning()),
            TitleFormat(
                rx("WARNING: possible circular locking dependency detected"),
                "possible deadlock in {0}",
                report=rx(
                    "WARNING: possible circular locking dependency detected(?:.*\\n)+?.*is trying to acquire lock"
                ),
                stack=StackFormat(
                    parts=(rx("at: (?:{{PC}} +)?{{FUNC}}"), rx("at: (?:{{PC}} +)?{{FUNC}}"), STACK),
                    # workqueue flushing takes the work item's lockdep map: not the culprit
                    skip=("process_one_work", "flush_workqueue", "drain_workqueue", "destroy_workqueue"),
                ),
            ),
            TitleFormat(
                rx("WARNING: possible irq lock inversion dependency detected"),
                "possible deadlock in {0}",
                report=rx(
                    "WARNING: possible irq lock inversion dependency detected(?:.*\\n)+?"
                    ".*just changed the state of lock(?:.*\\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"
                ),
            ),
            TitleFormat(
                rx("WARNING: .*-safe -> .*-unsafe lock order detected"),
                "possible deadlock in {0}",
                stack=StackFormat(parts=(rx("which became (?:.*) at:"), STACK)),
            ),
            TitleFormat(
                rx("WARNING: possible recursive locking detected"),
                "possible deadlock in {0}",
                report=rx(
                    "WARNING: possible recursive locking detected(?:.*\\n)+?.*is trying to acquire lock"
                    "(?:.*\\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"
                ),
            ),
            TitleFormat(
                rx("WARNING: inconsistent lock state"),
                "inconsistent lock state in {1}",
                report=rx(
                    "WARNING: inconsistent lock state(?:.*\\n)+?.*takes(?:.*\\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"
                ),
                stack=_trace(),
            ),
            TitleFormat(
                rx("WARNING: suspicious RCU usage"),
                "WARNING: suspicious RCU usage in {1}",
                report=rx("WARNING: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}"),
                stack=_trace("rcu", "kmem", "slab"),
            ),
            TitleFormat(
                rx("WARNING: kernel stack regs at [0-9a-f]+ in [^ ]* has bad '([^']+)' value"),
                "WARNING: kernel stack regs has bad '{0}' value",
                no_stack_trace=True,
            ),
            TitleFormat(
                rx("WARNING: kernel stack frame pointer at [0-9a-f]+ in [^ ]* has bad value"),
                "WARNING: kernel stack frame pointer has bad value",
                no_stack_trace=True,
            ),
            TitleFormat(
                rx("WARNING: bad unlock balance detected!"),
                "WARNING: bad unlock balance in {0}",
                stack=StackFormat(parts=(rx("{{PC}} +{{FUNC}}"), CALL_TRACE, STACK)),
            ),
            TitleFormat(
                rx("WARNING: held lock freed!"),
                "WARNING: held lock freed in {0}",
                report=rx("WARNING: held lock freed!(?:.*\\n)+?.*at:(?: {{PC}})? +{{FUNC}}"),
            ),
            TitleFormat(
                rx("WARNING: kernel stack regs .* has bad 'bp' value"),
                "WARNING: kernel stack regs has bad value",
                no_stack_trace=True,
            ),
            TitleFormat(
                rx("WARNING: kernel stack frame pointer .* has bad value"),
                "WARNING: kernel stack regs has bad value",
                no_stack_trace=True,
            ),
            TitleFormat(rx("WARNING:\\s*(?:\\n|$)"), "WARNING: corrupted", corrupted=True),
        ),
        # userspace and informational messages that say WARNING
        (
            rx("WARNING: /etc/ssh/moduli does not exist, using fixed modulus"),
            rx("WARNING: workqueue cpumask: online intersect > possible intersect"),
            rx("WARNING: [Tt]he mand mount option"),
            rx("WARNING: Unsupported flag value\\(s\\) of 0x%x in DT_FLAGS_1"),
            rx("WARNING: Unprivileged eBPF is enabled with eIBRS"),
            rx("WARNING: fbcon: Driver '(.*)' missed to adjust virtual screen size"),
            rx("WARNING: See https.* for mitigation options."),
            rx("WARNING: kernel not compiled with CPU_SRSO"),
            rx("EXT4-[Ff][Ss](?: \\(.*\\))?:"),
            re.compile("(?i:warning: .* uses (deprecated v2 capabilities|wireless extensions))"),
            rx("XFS \\(\\w+\\): WARNING"),
        ),
    ),
    Oops(
        "INFO:",
        (
            TitleFormat(
                rx("INFO: possible circular locking dependency detected"),
                "possible deadlock in {0}",
                report=rx(
                    "INFO: possible circular locking dependency detected \\](?:.*\\n)+?"
                    ".*is trying to acquire lock(?:.*\\n)+?.*at: {{PC}} +{{FUNC}}"
                ),
            ),
            TitleFormat(
                rx("INFO: possible irq lock inversion dependency detected"),
                "possible deadlock in {0}",
                report=rx(
                    "INFO: possible irq lock inversion dependency detected \\](?:.*\\n)+?"
                    ".*just changed the state of lock(?:.*\\n)+?.*at: {{PC}} +{{FUNC}}"
                ),
            ),
            TitleFormat(
                rx("INFO: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected"),
                "possible deadlock in {0}",
                report=rx(
                    "INFO: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected \\](?:.*\\n)+?"
                    ".*is trying to acquire(?:.*\\n)+?.*at: {{PC}} +{{FUNC}}"
                ),
            ),
            TitleFormat(
                rx("INFO: possible recursive locking detected"),
                "possible deadlock in {0}",
                report=rx(
                    "INFO: possible recursive locking detected \\](?:.*\\n)+?"
                    ".*is trying to acquire lock(?:.*\\n)+?.*at: {{PC}} +{{FUNC}}"
                ),
            ),
            TitleFormat(
                rx("INFO: inconsistent lock state"),
                "inconsistent lock state in {0}",
                report=rx(
                    "INFO: inconsistent lock state \\](?:.*\\n)+?.*takes(?:.*\\n)+?.*at: {{PC}} +{{FUNC}}"
                ),
            ),
            TitleFormat(
                rx("INFO: rcu_(?:preempt|sched|bh|tasks) (?:self-)?detected(?: expedited)? stall"),
                "INFO: rcu detected stall in {0}",
                alt=("stall in {0}",),
                stack=StackFormat(
                    parts=(rx("apic_timer_interrupt"), RIP_FRAME, STACK),
                    parts2=(rx("(?:apic_timer_interrupt|Exception stack|el1h_64_irq)"), STACK),
                    skip=("apic_timer_interrupt", "rcu"),
                    extractor="stall",
                ),
            ),
            TitleFormat(
                rx("INFO: trying to register non-static key"),
                "INFO: trying to register non-static key in {0}",
                stack=_trace("stack", "lock", "IRQ"),
            ),
            TitleFormat(
                rx("INFO: suspicious RCU usage"),
                "INFO: suspicious RCU usage in {1}",
                report=rx("INFO: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}"),
                stack=_trace("rcu", "kmem", "slab"),
            ),
            TitleFormat(
                rx("INFO: task {{TASK}} blocked (?:in I/O wait )?for more than [0-9]+ seconds"),
                "INFO: task hung in {0}",
                alt=("hang in {0}",),
                stack=_trace(extractor="hang"),
            ),
            TitleFormat(
                rx("INFO: task {{TASK}} can't die for more than .* seconds"),
                "INFO: task can't die in {0}",
                alt=("hang in {0}",),
                stack=_trace(*_HANG_SKIP),
            ),
            # what is left of an old-style KASAN report whose header was lost
            TitleFormat(rx("INFO: (Freed|Allocated) in (.*)"), "INFO: {0} in {1}", corrupted=True),
            TitleFormat(rx("INFO:\\s*(?:\\n|$)"), "INFO: corrupted", corrupted=True),
        ),
        (
            rx("INFO: lockdep is turned off"),
            rx("INFO: Stall ended before state dump start"),
            rx("INFO: NMI handler"),
            rx("INFO: recovery required on readonly filesystem"),
            rx("(handler|interrupt).*took too long"),
            rx("INFO: sys_.* is not present in /proc/kallsyms"),
            rx("INFO: no syscalls can create resource"),
            rx("rmt_storage:INFO:"),
            rx("_INFO:"),
        ),
    ),
    Oops(
        "Unable to handle kernel",
        (
            TitleFormat(
                rx("Unable to handle kernel (paging request|NULL pointer dereference|access to user memory)"),
                "BUG: unable to handle kernel {0} in {1}",
                alt=("bad-access in {1}",),
                stack=_rip_trace(),
            ),
        ),
    ),
    Oops(
        "general protection fault",
        (
            TitleFormat(
                rx("general protection fault.*:"),
                "general protection fault in {0}",
                alt=_BAD_ACCESS,
                stack=_rip_trace(),
            ),
        ),
        # a user process's fault, logged by show_signal_msg()
        (rx("general protection fault .* error:\\d+ in "),),
    ),
    Oops(
        "stack segment: ",
        (TitleFormat(rx("stack segment: "), "stack segment fault in {0}", stack=_rip_trace()),),
    ),
    Oops(
        "Kernel panic",
        (
            # With a smashed stack the kernel may print no symbol and no trace.
            TitleFormat(
                rx("Kernel panic - not syncing: stack-protector:"),
                "kernel panic: stack is corrupted in {0}",
                report=rx(
                    "Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: {{FUNC}}"
                ),
                no_stack_trace=True,
            ),
            TitleFormat(
                rx("Kernel panic - not syncing: stack-protector:"),
                "kernel panic: stack is corrupted in {0}",
                report=rx(
                    "Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: [a-f0-9]+"
                ),
                stack=_trace("stack_chk"),
            ),
            TitleFormat(
                rx("Kernel panic - not syncing: corrupted stack end"),
                "kernel panic: corrupted stack end in {0}",
                report=rx("Kernel panic - not syncing: corrupted stack end detected inside scheduler"),
                alt=("stack-overflow in {0}",),
                stack=_trace("schedule", "retint_kernel", extractor="stall"),
            ),
            TitleFormat(
                rx("Kernel panic - not syncing: kernel stack overflow"),
                "kernel stack overflow in {0}",
                alt=("stack-overflow in {0}",),
                stack=_trace("bad_stack", extractor="stall"),
            ),
            TitleFormat(
                rx("Kernel panic - not syncing: Attempted to kill init!"),
                "kernel panic: Attempted to kill init!",
            ),
            TitleFormat(
                rx("Kernel panic - not syncing: Couldn't open N_TTY ldisc for [^ ]+ --- error -[0-9]+"),
                "kernel panic: Couldn't open N_TTY ldisc",
            ),
            # These panics follow a BUG / WARNING / hung-task report: seen alone, the
            # report that caused them was lost.
            TitleFormat(
                rx("Kernel panic - not syncing: Fatal exception"),
                "kernel panic: Fatal exception",
                corrupted=True,
            ),
            TitleFormat(
                rx("Kernel panic - not syncing: panic_on_warn set"),
                "kernel panic: panic_on_warn set",
                corrupted=True,
            ),
            TitleFormat(
                rx("Kernel panic - not syncing: hung_task: blocked tasks"),
                "kernel panic: hung_task: blocked tasks",
                corrupted=True,
            ),
            TitleFormat(rx("Kernel panic - not syncing: (.*)"), "kernel panic: {0}"),
        ),
    ),
    Oops(
        "PANIC: double fault",
        (
            TitleFormat(
                rx("PANIC: double fault"), "PANIC: double fault in {0}", stack=StackFormat(parts=(RIP_FRAME,))
            ),
        ),
    ),
    Oops(
        "rust_kernel: panicked",
        (
            TitleFormat(
                rx("rust_kernel: panicked"),
                "{0} in {1}",
                report=rx("rust_kernel: panicked at [^\n]*?\n(.+?)\n"),
                stack=_trace(re.escape("__rustc::rust_begin_unwind")),
            ),
        ),
    ),
    Oops(
        "kernel BUG",
        (
            TitleFormat(
                rx(_ANY_TREE + "mm/usercopy.c"),
                "BUG: bad usercopy in {0}",
                stack=_trace("usercopy", "__check"),
            ),
            # list corruption is as often a use-after-free or a race as a list bug
            TitleFormat(
                rx(_ANY_TREE + "lib/list_debug.c"),
                "BUG: corrupted list in {0}",
                alt=_BAD_ACCESS,
                stack=_trace(),
            ),
            # skb helpers BUG_ON() their callers' mistakes
            TitleFormat(rx("kernel BUG at (.*)"), "kernel BUG in {1}", stack=_rip_trace("^skb_")),
        ),
    ),
    Oops("Kernel BUG", (TitleFormat(rx("Kernel BUG (.*)"), "kernel BUG {0}"),)),
    Oops(
        "BUG kmalloc-", (TitleFormat(rx("BUG kmalloc-.*: Object already free"), "BUG: Object already free"),)
    ),
    Oops(
        "divide error:",
        (TitleFormat(rx("divide error: "), "divide error in {0}", stack=StackFormat(parts=(RIP_FRAME,))),),
    ),
    # the kernel's own spelling between 5.8 and 5.9
    Oops(
        "divide_error:",
        (TitleFormat(rx("divide_error: "), "divide error in {0}", stack=StackFormat(parts=(RIP_FRAME,))),),
    ),
    Oops(
        "invalid opcode:",
        (
            TitleFormat(
                rx("invalid opcode: "), "invalid opcode in {0}", stack=StackFormat(parts=(RIP_FRAME,))
            ),
        ),
    ),
    Oops("int3:", (TitleFormat(rx("int3: "), "int3 in {0}", stack=_rip_trace()),)),
    Oops(
        "UBSAN:",
        (
            TitleFormat(
                rx("UBSAN:"),
                "UBSAN: undefined-behaviour in {0}",
                report=rx("UBSAN: Undefined behaviour in"),
                stack=_trace("ubsan", "overflow"),
            ),
            TitleFormat(
                rx("UBSAN: array-index-out-of-bounds in"),
                "UBSAN: array-index-out-of-bounds in {0}",
                alt=_BAD_ACCESS,
                stack=_trace("ubsan", "overflow"),
            ),
            TitleFormat(
                rx("UBSAN:"),
                "UBSAN: {0} in {1}",
                report=rx("UBSAN: (.*?) in"),
                stack=_trace("ubsan", "overflow"),
            ),
        ),
    ),
    Oops(
        "Booting the kernel.",
        (TitleFormat(rx("^Booting the kernel"), "unexpected kernel reboot", no_stack_trace=True),),
        # boot messages echoed back by a fuzzed mount option are not a reboot
        (rx("Parsing ELF|Decompressing Linux|Unknown parameter '"),),
    ),
    Oops(
        "unregister_netdevice: waiting for",
        (
            TitleFormat(
                rx("unregister_netdevice: waiting for (?:.*) to become free"),
                "unregister_netdevice: waiting for DEV to become free",
                no_stack_trace=True,
            ),
        ),
    ),
    Oops(
        "VFS: Close: file count is 0",
        (
            TitleFormat(
                rx("VFS: Close: file count is 0"),
                "VFS: Close: file count is zero (use-after-free)",
                no_stack_trace=True,
            ),
        ),
    ),
    Oops(
        "VFS: Busy inodes after unmount",
        (
            TitleFormat(
                rx("VFS: Busy inodes after unmount"),
                "VFS: Busy inodes after unmount (use-after-free)",
                no_stack_trace=True,
            ),
        ),
    ),
    # arm/arm64 names for the faults x86 calls page faults or GPFs
    Oops(
        "Internal error:",
        (TitleFormat(rx("Internal error:"), "Internal error in {0}", alt=_BAD_ACCESS, stack=_rip_trace()),),
    ),
    Oops(
        "Unhandled fault:",
        (TitleFormat(rx("Unhandled fault:"), "Unhandled fault in {0}", alt=_BAD_ACCESS, stack=_rip_trace()),),
    ),
    Oops(
        "Alignment trap:", (TitleFormat(rx("Alignment trap:"), "Alignment trap in {0}", stack=_rip_trace()),)
    ),
    Oops(
        "trusty: panic",
        (
            TitleFormat(
                rx("trusty: panic.* ASSERT FAILED"),
                "trusty: ASSERT FAILED: {0}",
                report=rx("trusty: panic \\(.*?\\):(?: DEBUG)? ASSERT FAILED at \\(.*?\\): (.+)"),
                no_stack_trace=True,
            ),
            TitleFormat(
                rx("trusty: panic.* ASSERT FAILED.*: *(.*)"), "trusty: ASSERT FAILED: {0}", corrupted=True
            ),
            TitleFormat(
                rx("trusty: panic"),
                "trusty: panic: {0}",
                report=rx("trusty: panic \\(.*?\\): (.+)"),
                no_stack_trace=True,
            ),
        ),
    ),
    Oops(
        "fatal error:",
        (TitleFormat(rx("fatal error:"), "go runtime error", no_stack_trace=True),),
        (rx("ALSA"), rx("fatal error: cannot create timer")),
    ),
    # failures of syzkaller's own executor and Go programs in the guest
    Oops("SYZFAIL:", (TitleFormat(rx("SYZFAIL:(.*)"), "SYZFAIL:{0}", no_stack_trace=True),)),
    Oops(
        "SYZFATAL:",
        (TitleFormat(rx("SYZFATAL:(.*)()"), "SYZFATAL:{0}", alt=("SYZFATAL{1}",), no_stack_trace=True),),
    ),
    Oops(
        "panic:",
        (
            TitleFormat(
                rx("panic: Sentry detected .* stuck task"),
                "panic: Sentry detected stuck tasks",
                no_stack_trace=True,
            ),
            TitleFormat(rx("panic:(.*)"), "panic:{0}", no_stack_trace=True),
        ),
        # kernel functions such as skb_panic print "_panic:"
        (rx("_panic:"), rx("xlog_status:"), rx("ddb\\.onpanic:"), rx("evtlog_status:")),
    ),
)

#: Lines that match an oops header but, seen inside a report, do not start a new one.
NOT_A_NEW_REPORT = (
    rx("invalid opcode: 0000"),
    rx("Kernel panic - not syncing"),
    rx("unregister_netdevice: waiting for"),
    # may come from the same fault when memory is badly corrupted
    rx("PANIC: double fault"),
    rx("Internal error:"),
)

#: Informational messages with a stack trace; one inside a report mixes stacks.
INFO_WITH_STACK = (
    "vmalloc: allocation failure:",
    "FAULT_INJECTION: forcing a failure",
    "FAULT_FLAG_ALLOW_RETRY missing",
)

# -- crash types --------------------------------------------------------------

#: Title prefix -> crash type, first match wins (syzbot's classification).
TITLE_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("KFENCE-USE-AFTER-FREE-WRITE", ("KFENCE: use-after-free write",)),
    ("KFENCE-USE-AFTER-FREE-READ", ("KFENCE: use-after-free",)),
    ("KFENCE-WRITE", ("KFENCE: invalid write", "KFENCE: out-of-bounds write")),
    ("KFENCE-READ", ("KFENCE: invalid read", "KFENCE: out-of-bounds")),
    ("KFENCE-MEMORY-CORRUPTION", ("KFENCE: memory corruption",)),
    ("KFENCE-INVALID-FREE", ("KFENCE: invalid free",)),
    ("KMSAN-UNINIT-VALUE", ("KMSAN: uninit-value",)),
    (
        "KMSAN-USE-AFTER-FREE-READ",
        (
            "KMSAN: kernel-infoleak-after-free",
            "KMSAN: kernel-usb-infoleak-after-free",
            "KMSAN: use-after-free",
        ),
    ),
    ("KMSAN-INFO-LEAK", ("KMSAN: kernel-infoleak", "KMSAN: kernel-usb-infoleak")),
    ("KASAN-NULL-POINTER-DEREFERENCE-WRITE", ("KASAN: null-ptr-deref Write",)),
    ("KASAN-NULL-POINTER-DEREFERENCE-READ", ("KASAN: null-ptr-deref Read",)),
    ("NULL-POINTER-DEREFERENCE", ("BUG: unable to handle kernel NULL pointer dereference in",)),
    (
        "KASAN-WRITE",
        tuple(
            f"KASAN: {k} Write"
            for k in (
                "global-out-of-bounds",
                "out-of-bounds",
                "slab-out-of-bounds",
                "stack-out-of-bounds",
                "user-memory-access",
                "vmalloc-out-of-bounds",
                "wild-memory-access",
            )
        ),
    ),
    (
        "KASAN-READ",
        (
            *(
                f"KASAN: {k} Read"
                for k in (
                    "global-out-of-bounds",
                    "invalid-access",
                    "out-of-bounds",
                    "slab-out-of-bounds",
                    "stack-out-of-bounds",
                    "unknown-crash",
                    "user-memory-access",
                    "vmalloc-out-of-bounds",
                    "wild-memory-access",
                )
            ),
            # no Read/Write in the title: it at least read
            "KASAN: slab-out-of-bounds",
            "KASAN: stack-out-of-bounds",
            "KASAN: wild-memory-access",
        ),
    ),
    ("KASAN-INVALID-FREE", ("KASAN: double-free or invalid-free", "KASAN: invalid-free")),
    ("KASAN-USE-AFTER-FREE-WRITE", ("KASAN: slab-use-after-free Write", "KASAN: use-after-free Write")),
    ("KASAN-USE-AFTER-FREE-READ", ("KASAN: slab-use-after-free Read", "KASAN: use-after-free")),
    ("MEMORY_SAFETY_BUG", ("BUG: corrupted list", "BUG: unable to handle kernel paging request")),
    ("REFCOUNT_WARNING", ("WARNING: refcount bug",)),
    ("MEMORY_SAFETY_UBSAN", ("UBSAN: array-index-out-of-bounds",)),
    ("KCSAN-DATARACE", ("KCSAN: data-race",)),
    ("KCSAN-ASSERT", ("KCSAN: assert: race in",)),
    (
        "LOCKDEP",
        (
            "BUG: bad unlock balance in",
            "BUG: held lock freed in",
            "BUG: rwlock",
            "BUG: spinlock",
            "BUG: still has locks held in",
            "BUG: using",
            "WARNING: bad unlock balance in",
            "WARNING: held lock freed in",
            "WARNING: lock held",
            "WARNING: locking bug in",
            "WARNING: nested lock was not taken in",
            "WARNING: still has locks held in",
            "WARNING: suspicious RCU usage in",
            "inconsistent lock state in",
            "possible deadlock in",
        ),
    ),
    (
        "ATOMIC_SLEEP",
        ("BUG: scheduling while atomic in", "BUG: sleeping function called from invalid context in"),
    ),
    ("LEAK", ("memory leak in",)),
    ("BUG", ("BUG: bad usercopy in", "kernel BUG")),
    ("WARNING", ("WARNING in",)),
    # printk()-level oddities without a better class
    (
        "UNKNOWN",
        (
            "BUG: stack guard page was hit in",
            "WARNING: corrupted",
            "WARNING: kernel stack frame pointer has bad value",
            "WARNING: kernel stack regs has bad",
        ),
    ),
    (
        "HANG",
        (
            "BUG: soft lockup in",
            "INFO: rcu detected stall in",
            "INFO: task can't die in",
            "INFO: task hung in",
        ),
    ),
    (
        "DoS",
        (
            "Alignment trap in",
            "BUG: Object already free",
            "Internal error in",
            "PANIC: double fault",
            "Unhandled fault in",
            "VFS: Busy inodes after unmount (use-after-free)",
            "VFS: Close: file count is zero (use-after-free)",
            "divide error in",
            "general protection fault in",
            "go runtime error",
            "int3 in",
            "invalid opcode in",
            "kernel panic:",
            "kernel stack overflow",
            "panic:",
            "rust_kernel panicked",
            "stack segment fault in",
            "trusty:",
            "unregister_netdevice: waiting for DEV to become free",
        ),
    ),
    ("REBOOT", ("unexpected kernel reboot",)),
    ("SYZ_FAILURE", ("SYZFAIL", "SYZFATAL:")),
    ("WARNING", ("WARNING:",)),
    ("UNKNOWN", ("BUG:", "INFO:")),
    ("KASAN-UNKNOWN", ("KASAN:",)),
    ("KFENCE-UNKNOWN", ("KFENCE:",)),
    ("KMSAN-UNKNOWN", ("KMSAN:",)),
    ("UBSAN", ("UBSAN:",)),
    ("KCSAN-UNKNOWN", ("KCSAN:",)),
)


#: All of TITLE_TYPES as one anchored regex: alternatives are tried in table
#: order, so the first class whose prefix fits wins, as in the table.
_TYPE_OF = re.compile(
    "|".join(f"(?P<t{i}>" + "|".join(map(re.escape, p)) + ")" for i, (_k, p) in enumerate(TITLE_TYPES))
)


def title_type(title: str) -> str:
    """The crash type of a title (``"UNKNOWN"`` when no class fits)."""
    m = _TYPE_OF.match(title)
    if m is None or m.lastgroup is None:
        return "UNKNOWN"
    return TITLE_TYPES[int(m.lastgroup[1:])][0]
