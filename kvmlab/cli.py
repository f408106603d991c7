"""kvmlab's command line: a thin layer over the library.

Each subcommand lives in a module of :mod:`kvmlab.commands` that exports
``register(subparsers)``; the module sets ``func`` on its parser, a callable
taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from kvmlab import cache, exitcodes, owner, signals
from kvmlab.config import cache_dir, load_config
from kvmlab.errors import InfraError, KvmlabError, UserError

log = logging.getLogger(__name__)

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "kvmlab.commands.doctor",
    "kvmlab.commands.vm",
    "kvmlab.commands.boot",
    "kvmlab.commands.sessions",
    "kvmlab.commands.kernel",
    "kvmlab.commands.demo_tree",
    "kvmlab.commands.image",
    "kvmlab.commands.report",
    "kvmlab.commands.repro",
    "kvmlab.commands.bisect",
    "kvmlab.commands.show",
    "kvmlab.commands.demo",
    "kvmlab.commands.cache",
    "kvmlab.commands.host",
)

#: Commands after which the cache is kept under its limit (they fill it).
FILLS_CACHE = frozenset({"repro", "bisect", "demo", "kernel", "boot", "image", "vm"})


def version() -> str:
    """kvmlab's version: the installed distribution's, else the source tree's."""
    try:
        return importlib.metadata.version("kvmlab")
    except importlib.metadata.PackageNotFoundError:
        from kvmlab import __version__

        return __version__


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage is a ``--help``
    away) and exit with the bad-input status of the command: 2, or for a
    command that passes a guest command's status on, its own reserved one
    (set as ``bad_input_status`` on that command's parser)."""

    bad_input_status: int = exitcodes.BAD_INPUT

    def error(self, message: str) -> NoReturn:
        self.exit(self.bad_input_status, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """As argparse's, but arguments left over are refused with the
        command's own bad-input status (argparse refuses them at the top)."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            status = getattr(ns, "bad_input_status", self.bad_input_status)
            prog = f"{self.prog} {ns.kvmlab_command}" if getattr(ns, "kvmlab_command", None) else self.prog
            self.exit(status, f"{prog}: error: unrecognized arguments: {' '.join(extras)} "
                      f"(see {prog} --help)\n")
        return ns


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kvmlab",
        description="Reproduce and bisect Linux kernel crashes in QEMU/KVM virtual machines.",
        epilog="Exit statuses: 0 done; 1 the kernel's verdict when it is no or none (per command); "
        "2 bad input; 3 kvmlab's or the host's failure; 130/143 interrupted (boot and vm run: see "
        "their --help).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"kvmlab {version()}")
    sub = parser.add_subparsers(dest="kvmlab_command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING
    if verbosity == 1:
        level = logging.INFO
    elif verbosity >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s: %(name)s: %(message)s", stream=sys.stderr)
    # Our own info lines (progress, the accel fallback) are always shown.
    logging.getLogger("kvmlab").setLevel(min(level, logging.INFO))
    # paramiko logs every refused connection while a guest boots as an
    # ERROR with a traceback; kvmlab reports what matters itself.
    if verbosity < 2:
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (one line, said already)
        return e.code if isinstance(e.code, int) else exitcodes.BAD_INPUT
    _setup_logging(args.verbose)
    # SIGTERM unwinds like Ctrl-C does, so every cleanup path runs: VMs
    # stopped, builds' process groups killed, temp dirs removed (kvmlab.signals;
    # for the whole command, main thread only).
    signals.reset_stop()
    with contextlib.suppress(Exception):  # never a reason to fail the command
        owner.reap_tempdirs()
    root = cache_dir()
    try:
        with signals.unwinding(), (cache.in_use(root) if getattr(args, "holds_cache", True)
                                   else contextlib.nullcontext()):
            rc = _run(args)
    finally:
        signals.reset_stop()
    if args.kvmlab_command in FILLS_CACHE and rc in (exitcodes.OK, exitcodes.VERDICT):
        _keep_cache_small(root, getattr(args, "conf", None))
    return rc


def _keep_cache_small(root: Path, conf: Path | None) -> None:
    """The cache's size limit, after a command that fills it (quietly skipped
    when another kvmlab runs or the config cannot be read: it is no reason to
    fail a command that is done)."""
    try:
        limit = int(load_config(conf).cache.max_size_gb * 2**30)
        cache.auto_prune(root, limit)
    except Exception as e:
        log.debug("cache: not pruned: %s", e)


def _say(line: str) -> None:
    """One line on stderr; a stderr that is gone is no reason for a traceback."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def _os_error(e: OSError) -> str:
    """An OSError in one line naming the file (the disk-full case first)."""
    where = f"{e.filename}: " if e.filename else ""
    what = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: {where}{what}"
    return f"{where}{what}"


def _stdout_gone() -> int:
    """stdout's reader went away (``| head``): stop quietly, like SIGPIPE
    would, and keep Python from complaining when it flushes at exit."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return exitcodes.BROKEN_PIPE


def _run(args: argparse.Namespace) -> int:
    """Run the command; every way it can end becomes one line (or none) and a
    status of the contract (:mod:`kvmlab.exitcodes`). A command that passes a
    guest command's status on returns it as it is; only kvmlab's own
    failures here take its reserved statuses."""
    own = exitcodes.for_pass_through if getattr(args, "passthrough", False) else (lambda s: s)
    try:
        rc: int = args.func(args)
        sys.stdout.flush()
        return rc
    except UserError as e:
        _say(f"kvmlab: error: {e}")
        return own(exitcodes.BAD_INPUT)
    except InfraError as e:
        _say(f"kvmlab: infrastructure error: {e}")
        return own(exitcodes.OURS)
    except KvmlabError as e:
        _say(f"kvmlab: error: {e}")
        return own(exitcodes.OURS)
    except BrokenPipeError:
        return _stdout_gone()
    except OSError as e:
        # The host's: a full disk, a cache directory gone read-only.
        _say(f"kvmlab: infrastructure error: {_os_error(e)}")
        return own(exitcodes.OURS)
    except KeyboardInterrupt:
        _say("kvmlab: interrupted")
        return exitcodes.INTERRUPTED
    except signals.Terminated as e:
        _say(f"kvmlab: terminated ({signal.Signals(e.signum).name}); everything it started is stopped")
        return e.exit_status
    except Exception as e:  # a bug of kvmlab's: one line, the traceback with -vv
        log.debug("internal error", exc_info=True)
        _say(f"kvmlab: internal error: {type(e).__name__}: {e} (a bug; -vv shows the traceback)")
        return own(exitcodes.OURS)


if __name__ == "__main__":
    sys.exit(main())
