"""``kvmlab show``: the HTML report of a bisection (also one still running) or a repro run."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvmlab import checks
from kvmlab.show import REPORT_NAME, report


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "show", help="make the HTML report of a bisection or repro run",
        description="Render report.html from a bisection's workdir or journal (also while it runs: "
                    "run it again to refresh) or from a repro workdir. One self-contained file.")
    p.add_argument("path", type=Path, metavar="JOURNAL|WORKDIR", help="bisection journal, or a workdir")
    p.add_argument("-o", "--output", type=Path, help="where to write (a file, or a directory to put "
                   "report.html in; default: report.html in the workdir)")
    p.add_argument("--tree", type=Path, help="kernel tree for subjects and the graph "
                                             "(default: the one the bisection used)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out: Path | None = args.output
    if out is not None:
        if out.is_dir():  # -o DIR: the report goes in it
            out = out / REPORT_NAME
        checks.output_file(out, "-o")
    if args.tree is not None:
        checks.input_dir(args.tree, "--tree")
    print(report(args.path, out, tree=args.tree))
    return 0
