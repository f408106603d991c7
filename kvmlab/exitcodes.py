"""kvmlab's exit statuses: one contract for every command (the README's
*Exit statuses* table says the same).

Every command::

    0    done: what was asked is answered (the result says what it is)
    1    the kernel's verdict when it is "no" or "none", per command: repro: no
         run tested the kernel (it did not build or boot, the reproducer could
         not run, the guest stopped itself); bisect: no culprit named
    2    bad input: an option, file or value, said in one line before any work
    3    kvmlab's own or the host's failure (disk full, libvirt, qemu, SSH)
    130  interrupted (Ctrl-C); 143 SIGTERM; 129 SIGHUP
    141  stdout was closed early (``kvmlab report F | head -1``), like SIGPIPE

Commands that pass a guest command's exit status on (``boot -- CMD``,
``boot`` on the console, ``vm run -- CMD``) keep 0-255 for it, so kvmlab's
own outcomes take reserved statuses instead (:data:`PASS_THROUGH_RESERVED`),
and a guest status that is one of them is reported as
:data:`PASS_OWN_STATUS_RESERVED` with the real one on stderr::

    240  the command's own status was a reserved one (it is on stderr)
    241  the guest stopped itself (powered off, rebooted) before the command ended
    242  bad input                     243  kvmlab's or the host's failure
    244  the kernel did not boot       245  the kernel crashed (title on stderr)
    246  --timeout
    130, 143, 129  kvmlab was interrupted (Ctrl-C, SIGTERM, SIGHUP), as every command
"""

from __future__ import annotations

import signal

OK = 0
VERDICT = 1
BAD_INPUT = 2
OURS = 3
INTERRUPTED = 128 + signal.SIGINT
BROKEN_PIPE = 128 + signal.SIGPIPE

PASS_OWN_STATUS_RESERVED = 240
PASS_GUEST_STOPPED = 241
PASS_BAD_INPUT = 242
PASS_OURS = 243
PASS_BOOT_FAILED = 244
PASS_CRASHED = 245
PASS_TIMEOUT = 246

#: Statuses a pass-through command keeps for its own outcomes.
PASS_THROUGH_RESERVED = frozenset(range(PASS_OWN_STATUS_RESERVED, PASS_TIMEOUT + 1)) | {
    INTERRUPTED, 128 + signal.SIGTERM, 128 + signal.SIGHUP}


def signalled(signum: int) -> int:
    """The shell's status of a process ended by ``signum``."""
    return 128 + signum


def guest_status(status: int) -> int:
    """A guest command's exit status as a pass-through command exits with it:
    itself, unless it falls in the reserved range."""
    return PASS_OWN_STATUS_RESERVED if status in PASS_THROUGH_RESERVED else status


def for_pass_through(status: int) -> int:
    """kvmlab's own status (bad input, ours) as a pass-through command exits
    with it (an interruption keeps its 128+N)."""
    if status == BAD_INPUT:
        return PASS_BAD_INPUT
    if status == OURS:
        return PASS_OURS
    return status
