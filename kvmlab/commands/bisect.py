"""``kvmlab bisect``: find the commit that introduced (or fixed) a crash."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kvmlab.bisect import POLICIES, GitRepository
from kvmlab.commands.options import (
    _path,
    add_build_options,
    add_job_option,
    add_repro_options,
    add_vm_options,
    build_fields,
    given,
    make_job,
    nested,
    repro_fields,
    vm_fields,
)
from kvmlab.jobs.bisection import run_bisection
from kvmlab.jobs.model import BisectJob
from kvmlab.ui.live import progress_view


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bisect", help="find the commit that introduced (or fixed) a crash")
    add_bisect_arguments(p)
    p.set_defaults(func=run)


def add_bisect_arguments(p: argparse.ArgumentParser, *, bug_dir: bool = True) -> None:
    add_job_option(p)
    p.add_argument("--tree", type=Path, help="kernel git tree (only read; builds use their own worktree)")
    p.add_argument("--bad", help="a commit that crashes")
    p.add_argument("--good", help="a commit that does not (default: release tags, newest first)")
    p.add_argument("--config", help="kernel config fragments (default: base)")
    p.add_argument("--fix", action="store_true", default=None,
                   help="find the first commit where the bug is gone")
    p.add_argument("--policy", choices=sorted(POLICIES), help="default: adaptive")
    p.add_argument("--confidence", type=float, help="adaptive: culprit posterior to reach (default 0.95)")
    p.add_argument("--release-floor", help="oldest release tag to try when no --good (e.g. v4.18)")
    p.add_argument("--expect", help="title of the bug (default: the first crash on the bad commit)")
    p.add_argument("--no-verify", action="store_true", default=None,
                   help="do not revert commits on the bad commit (a fix: apply them): neither to confirm the "
                        "culprit nor to test a likely culprit while bisecting")
    p.add_argument("--no-relevance", action="store_true", default=None,
                   help="test every commit of the range, also those that change no file the kernel build "
                        "reads, and commits that build the same kernel binary separately")
    p.add_argument("--json", type=Path, help="write the structured result here")
    p.add_argument("--journal", type=Path, help="resumable journal (default: one per bisection in the cache)")
    p.add_argument("--workdir", type=Path, help="where logs go (default: in the cache)")
    add_build_options(p)
    add_repro_options(p, bug_dir=bug_dir)
    add_vm_options(p)


def bisect_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The bisection's fields the command line gives."""
    fields = given(tree=_path(args.tree), bad=args.bad, good=args.good, fix=args.fix, policy=args.policy,
                   confidence=args.confidence, release_floor=args.release_floor, expect=args.expect,
                   verify=False if args.no_verify else None,
                   relevance=False if args.no_relevance else None, json=_path(args.json),
                   journal=_path(args.journal), workdir=_path(args.workdir),
                   bug=_path(getattr(args, "bug_dir", None)), syzbot=getattr(args, "syzbot", None))
    return fields | nested(build=build_fields(args), reproducer=repro_fields(args), vms=vm_fields(args))


def run(args: argparse.Namespace) -> int:
    job = make_job(BisectJob.KIND, bisect_fields(args), args.job)
    assert isinstance(job, BisectJob)
    tree = job.tree

    def subject(h: str) -> str:
        return GitRepository(tree).commit_info(h).subject if tree is not None else ""

    with progress_view("kvmlab bisect", describe=subject) as view:
        result = run_bisection(job, view)
    return 0 if result.culprit else 1
