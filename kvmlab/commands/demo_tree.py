"""``kvmlab demo-tree [PATH]``: make the demo kernel history with planted bugs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvmlab.kernel.demo_tree import DEFAULT_TARBALL, make_demo_tree


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo-tree",
        help="make a kernel git history with planted bugs (from linux-source-6.1)",
        description="Turn Debian's linux-source-6.1 tarball into a git repository: the release "
        "(tag v6.1) and a few dozen commits, some of which plant bugs. Which commits those are is "
        "written to PATH.demo.json.",
    )
    parser.add_argument(
        "path", nargs="?", type=Path, default=Path("linux-demo"), help="where (default: ./linux-demo)"
    )
    parser.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL, help=f"(default: {DEFAULT_TARBALL})")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    demo = make_demo_tree(
        args.path, tarball=args.tarball, progress=lambda m: print(f"kvmlab: {m}", file=sys.stderr)
    )
    print(f"demo tree:     {demo.path}")
    print(f"base (v6.1):   {demo.base}")
    print(f"head:          {demo.head} ({len(demo.commits)} commits)")
    print(f"planted info:  {demo.info_path}")
    print(f"source:        {demo.source.describe() if demo.source else 'not recorded (an older tree)'}")
    for name, src in sorted(demo.reproducers.items()):
        print(f"reproducer:    {name}: {src}")
    return 0
