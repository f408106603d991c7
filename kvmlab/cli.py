"""kvmlab's command line: a thin layer over the library.

Each subcommand lives in a module of :mod:`kvmlab.commands` that exports
``register(subparsers)``; the module sets ``func`` on its parser, a callable
taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import signal
import sys
from collections.abc import Sequence

from kvmlab import signals
from kvmlab.errors import InfraError, KvmlabError, UserError

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
)


def version() -> str:
    """kvmlab's version: the installed distribution's, else the source tree's."""
    try:
        return importlib.metadata.version("kvmlab")
    except importlib.metadata.PackageNotFoundError:
        from kvmlab import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvmlab",
        description="Reproduce and bisect Linux kernel crashes in QEMU/KVM virtual machines.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"kvmlab {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
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
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    # SIGTERM unwinds like Ctrl-C does, so every cleanup path runs: VMs
    # stopped, builds' process groups killed, temp dirs removed (kvmlab.signals;
    # for the whole command, main thread only).
    signals.reset_stop()
    try:
        with signals.unwinding():
            return _run(args)
    finally:
        signals.reset_stop()


def _run(args: argparse.Namespace) -> int:
    try:
        rc: int = args.func(args)
        return rc
    except UserError as e:
        print(f"kvmlab: error: {e}", file=sys.stderr)
        return 2
    except InfraError as e:
        print(f"kvmlab: infrastructure error: {e}", file=sys.stderr)
        return 3
    except KvmlabError as e:
        print(f"kvmlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kvmlab: interrupted", file=sys.stderr)
        return 130
    except signals.Terminated as e:
        print(f"kvmlab: terminated ({signal.Signals(e.signum).name}); everything it started is stopped",
              file=sys.stderr)
        return e.exit_status


if __name__ == "__main__":
    sys.exit(main())
