"""``kvmlab bisect``: find the commit that introduced (or fixed) a crash."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from kvmlab import oops
from kvmlab.bisect import POLICIES, AdaptivePolicy, BisectResult, GitRepository, LogWriter, bisect
from kvmlab.bisect.policy import Policy
from kvmlab.bisect.result import StepRecord
from kvmlab.commands.kernel import config_request
from kvmlab.commands.live import View, WatchedTester, progress_view
from kvmlab.commands.repro import (
    add_build_options,
    add_repro_options,
    add_vm_options,
    apply_bug_dir,
    config_from_args,
    reproducer_from_args,
)
from kvmlab.config import cache_dir
from kvmlab.errors import ConfigError, KvmlabError, MissingFileError
from kvmlab.kernel.builder import KernelBuilder
from kvmlab.outcome import RunOutcome
from kvmlab.show import bisection_report
from kvmlab.show.bisection import RESULT_NAME
from kvmlab.show.meta import JobMeta
from kvmlab.tester import VMTester
from kvmlab.vmm.accel import resolve_accel
from kvmlab.vmm.spec import Accel

log = logging.getLogger(__name__)

def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bisect", help="find the commit that introduced (or fixed) a crash")
    add_bisect_arguments(p)
    p.set_defaults(func=run)


def add_bisect_arguments(p: argparse.ArgumentParser, *, bug_dir: bool = True) -> None:
    p.add_argument("--job", type=Path, help="YAML file with any of these options (keys as the long "
                                            "option names with _ for -); the command line wins")
    p.add_argument("--tree", type=Path, help="kernel git tree (only read; builds use their own worktree)")
    p.add_argument("--bad", help="a commit that crashes")
    p.add_argument("--good", help="a commit that does not (default: release tags, newest first)")
    p.add_argument("--config", help="kernel config fragments (default: base)")
    p.add_argument("--fix", action="store_true", help="find the first commit where the bug is gone")
    p.add_argument("--policy", choices=sorted(POLICIES), help="default: adaptive")
    p.add_argument("--confidence", type=float, help="adaptive: culprit posterior to reach (default 0.95)")
    p.add_argument("--release-floor", help="oldest release tag to try when no --good (e.g. v4.18)")
    p.add_argument("--expect", help="title of the bug (default: the first crash on the bad commit)")
    p.add_argument("--no-verify", action="store_true",
                   help="do not confirm the culprit by reverting it on the bad commit (a fix: applying it)")
    p.add_argument("--json", type=Path, help="write the structured result here")
    p.add_argument("--journal", type=Path, help="resumable journal (default: one per bisection in the cache)")
    p.add_argument("--workdir", type=Path, help="where logs go (default: in the cache)")
    add_build_options(p)
    add_repro_options(p, bug_dir=bug_dir)
    add_vm_options(p)


def _apply_job(args: argparse.Namespace, parser_defaults: dict[str, Any]) -> None:
    if args.job is None:
        return
    try:
        data = yaml.safe_load(args.job.read_text()) or {}
    except FileNotFoundError:
        raise MissingFileError(f"job {args.job}: no such file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"job {args.job}: top level must be a mapping")
    paths = {"tree", "repro", "json", "journal", "workdir", "conf", "syz_prog", "syz_execprog",
             "syz_executor", "syz_dir", "bug_dir", "kernel_config"}
    for key, value in data.items():
        dest = key.replace("-", "_")
        dest = {"bug": "bug_dir"}.get(dest, dest)  # --bug DIR keeps its value in bug_dir
        if dest not in parser_defaults or dest in ("job", "func"):
            raise ConfigError(f"job {args.job}: unknown key {key!r}")
        if getattr(args, dest) == parser_defaults[dest]:  # the command line wins
            if dest in paths and value is not None:
                value = (args.job.parent / str(value)).resolve()
            setattr(args, dest, value)


def target_matcher(expect: str | None) -> Any:
    """``is_target`` for the engine: the bug named by ``expect``, or else the
    first crash seen (the engine tests the bad commit first), matched by the
    report module's signatures rather than exact titles."""
    state: dict[str, RunOutcome] = {}

    def is_target(run: RunOutcome) -> bool:
        if not run.crashed or run.title is None:
            return False
        titles = (run.title, *run.alt_titles)
        if expect is not None:
            return any(oops.same_bug(t, expect) for t in titles)
        first = state.setdefault("first", run)
        ref = (first.title or "", *first.alt_titles)
        return any(oops.same_bug(a, b) for a in titles for b in ref)

    return is_target


def run_bisection(args: argparse.Namespace, *, say: Any = None) -> BisectResult:
    """The bisection the arguments describe, logged through ``say`` (default:
    a live view on a terminal, plain lines otherwise); leaves ``report.html``
    in its workdir."""
    apply_bug_dir(args, commit_dest="bad", say=say or print)
    if args.tree is None or args.bad is None:
        raise ConfigError("bisect needs --tree and --bad (or --tree and --bug DIR)")
    repo = GitRepository(args.tree)
    with progress_view("kvmlab bisect", describe=lambda h: repo.commit_info(h).subject,
                       live=False if say is not None else None) as view:
        return _run_bisection(args, view, say or view.say)


def _run_bisection(args: argparse.Namespace, view: View, say: Any) -> BisectResult:
    started = time.time()
    cfg = config_from_args(args)
    repro = reproducer_from_args(args, cfg)
    repo = GitRepository(args.tree)
    bad = repo.resolve(args.bad)
    good = repo.resolve(args.good) if args.good else None
    frags = [f.strip() for f in (args.config or "base").split(",") if f.strip()]
    request = config_request(args.config, args.kernel_config)
    # A full config and a compiler choice are part of what is bisected.
    extra = [request.describe(), args.compiler] if args.kernel_config or args.compiler else []
    key = hashlib.sha256(json.dumps(
        [str(args.tree.resolve()), bad, good, frags, args.fix, args.policy or "adaptive",
         str(args.repro or args.command or args.syz_prog), *extra]).encode()).hexdigest()[:16]
    workdir = args.workdir or cache_dir() / "bisect" / key
    workdir.mkdir(parents=True, exist_ok=True)
    journal = args.journal or workdir / "journal.jsonl"
    prepared = repro.prepare(workdir)
    builder = KernelBuilder(compiler=args.compiler, fragments_dir=cfg.kernel.fragments_path)
    # Resolve the accelerator once, with the bad commit's kernel, so that a
    # fallback to TCG is one warning for the whole bisection.
    view.building(bad)
    first = builder.build(args.tree, bad, request, progress=view.build_progress)
    accel = None
    if "bzImage" in first.artifacts:
        accel = resolve_accel(Accel(cfg.vm.accel), qemu=cfg.vm.qemu, kernel=Path(first.artifacts["bzImage"]),
                              cache_dir=cache_dir())
    if accel is None:
        from kvmlab.timeouts import TCG_SCALE
        from kvmlab.vmm.accel import AccelChoice

        accel = AccelChoice(Accel.TCG, TCG_SCALE, "bad commit did not build")
    policy: Policy = POLICIES[args.policy or "adaptive"]
    if isinstance(policy, AdaptivePolicy):
        policy = dataclasses.replace(policy, chunk=cfg.vm.count,
                                     **({"confidence": args.confidence} if args.confidence else {}))
    tester = VMTester(tree=args.tree, builder=builder, request=request, prepared=prepared, cfg=cfg,
                      accel=accel, workdir=workdir / "runs", progress=view.build_progress, on_vm=view.vm)
    tester.adopt(bad, first)  # its build time counts in the bisection's totals
    logw = LogWriter(say, workdir / f"bisect-{time.strftime('%Y%m%d-%H%M%S')}.log")
    JobMeta(kind="bisect", tree=str(args.tree.resolve()), bad=bad, good=good, fix=args.fix,
            policy=policy.name, confidence_goal=getattr(policy, "confidence", None), config=frags,
            reproducer=prepared.description, expect=args.expect, vms=cfg.vm.count, accel=accel.accel.value,
            journal=str(journal), log=str(logw.path), started=started,
            first_build={"commit": bad, "duration": first.duration, "cached": first.cached,
                         "status": first.status.value, "artifacts": dict(first.artifacts)}).write(workdir)
    say(f"kvmlab: journal {journal}; logs under {workdir}")
    (workdir / RESULT_NAME).unlink(missing_ok=True)  # an earlier attempt's answer is not this one's

    def on_step(rec: StepRecord) -> None:
        view.step(rec)
        _report(workdir, None)  # report.html follows the bisection as it goes

    try:
        result = bisect(repo, WatchedTester(tester, view), bad=bad, good=good, fix=args.fix, policy=policy,
                        is_target=target_matcher(args.expect), journal=journal, log=logw,
                        release_floor=args.release_floor, verify=not args.no_verify, observer=on_step)
    except KvmlabError:
        _report(workdir, say)  # what was found before the failure
        raise
    finally:
        tester.close()
        logw.close()
    (workdir / RESULT_NAME).write_text(json.dumps(result.to_json(), indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_json(), indent=1))
    _report(workdir, say)
    return result


def _report(workdir: Path, say: Any) -> None:
    """Write ``report.html`` (and say where, unless ``say`` is None); a report
    that cannot be made only warns (the bisection's result is in the log and
    the JSON either way)."""
    try:
        path = bisection_report(workdir)
        if say is not None:
            say(f"kvmlab: report {path}")
    except Exception as e:  # a by-product: never lose the bisection over it
        log.warning("report.html not written: %s", e, exc_info=log.isEnabledFor(logging.DEBUG))


def run(args: argparse.Namespace) -> int:
    defaults = {a.dest: a.default for a in _parser_actions()}
    _apply_job(args, defaults)
    result = run_bisection(args)
    return 0 if result.culprit else 1


def _parser_actions() -> list[argparse.Action]:
    p = argparse.ArgumentParser()
    add_bisect_arguments(p)
    return list(p._actions)

