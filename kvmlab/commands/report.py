"""``kvmlab report LOG... [--vmlinux PATH] [--json]``: the crash in each console log."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kvmlab import checks, exitcodes
from kvmlab.errors import HostToolError, MissingFileError, UserError
from kvmlab.oops import Report, parse, symbolize


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="find the crash in console logs and title it like syzbot",
        description="For each console log: the first kernel crash in it, with syzbot's title, the crash "
        "type, whether the report is corrupted, and the report text (symbolized with --vmlinux). "
        "A log without a crash prints 'no crash'. A log that cannot be read is one line on stderr and "
        "makes the exit status 2 (3 when symbolizing failed on the host), after the other logs were "
        "reported.",
    )
    parser.add_argument("logs", nargs="+", type=Path, metavar="LOG", help="console log file")
    parser.add_argument("--vmlinux", type=Path, help="the kernel's vmlinux, to add file:line to frames")
    parser.add_argument("--json", action="store_true", help="one JSON object per line per log")
    parser.set_defaults(func=_run)


def _read(path: Path) -> str:
    """A console log's text (stray bytes of line noise replaced)."""
    if path.is_dir():
        raise UserError(f"{path}: a directory, not a console log")
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise MissingFileError(f"{path}: cannot read ({e.strerror})") from None


def _as_json(path: Path, rep: Report | None) -> dict[str, Any]:
    if rep is None:
        return {"file": str(path), "crashed": False, "title": None, "alt_titles": [], "type": None,
                "corrupted": False, "frame": None, "report": None}  # fmt: skip
    return {"file": str(path), "crashed": True, "title": rep.title, "alt_titles": list(rep.alt_titles),
            "type": rep.type, "corrupted": rep.corrupted, "frame": rep.frame,
            "report": rep.report}  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    if args.vmlinux is not None:
        checks.input_file(args.vmlinux, "--vmlinux")
    status = exitcodes.OK
    for path in args.logs:
        try:
            rep = parse(_read(path))
            if rep is not None and args.vmlinux is not None:
                rep = _symbolized(rep, args.vmlinux)
        except UserError as e:
            print(f"kvmlab: error: {e}", file=sys.stderr)
            status = max(status, exitcodes.BAD_INPUT)
            continue
        except HostToolError as e:
            print(f"kvmlab: infrastructure error: {e}", file=sys.stderr)
            status = max(status, exitcodes.OURS)
            continue
        if args.json:
            print(json.dumps(_as_json(path, rep)), flush=True)
        elif rep is None:
            print(f"{path}: no crash", flush=True)
        else:
            print(f"{path}: {rep.title}")
            print(f"type:      {rep.type}")
            print(f"corrupted: {'yes' if rep.corrupted else 'no'}")
            if rep.alt_titles:
                print(f"alt:       {' | '.join(rep.alt_titles)}")
            print(rep.report.rstrip("\n"), end="\n\n", flush=True)
    return status


def _symbolized(rep: Report, vmlinux: Path) -> Report:
    from dataclasses import replace

    return replace(rep, report=symbolize(rep.report, vmlinux))
