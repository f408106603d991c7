"""Config minimization (issue 25 point 1): syzbot's 6.1 KASAN config at the
demo's planted-bug commit, in one run, each build clean and without ccache in
a fresh work directory: the config as given (``full``), minimized by the
rules only (``static``, with --static: another ~20 min), and minimized with
the reproducer as the oracle (``oracle``: the demo's C reproducer in 2 VMs,
at most --budget candidate kernels). Printed: objects compiled and seconds of
each config's build, the oracle's own cost (Kconfig runs, candidate builds,
VM runs) and its trials, and each build's share of the full one's time.

    .venv/bin/python benchmarks/config_minimize.py [--static] [--budget 6] [--keep]

Target (the issue's): the minimized build <= 40% of the full one's time. The
oracle's answer is a config whose kernel crashed with the bug's title (a
candidate is kept only when its runs crashed with it); the benchmark fails
if the answer is the full config.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kvmlab.bisect.timing import Stopwatch  # noqa: E402
from kvmlab.jobs import inputs, minimizing  # noqa: E402
from kvmlab.jobs.bisection import target_matcher  # noqa: E402
from kvmlab.jobs.model import BuildOptions, ReproInput, VMOptions  # noqa: E402
from kvmlab.jobs.tester import VMTester  # noqa: E402
from kvmlab.kernel.builder import BuildManifest, KernelBuilder  # noqa: E402
from kvmlab.kernel.config import ConfigRequest, find_data_file  # noqa: E402
from kvmlab.kernel.demo_tree import DemoTree, make_demo_tree  # noqa: E402
from kvmlab.kernel.minimize import TABLE_NAME, load_rules  # noqa: E402
from kvmlab.outcome import BuildStatus  # noqa: E402
from kvmlab.vmm.factory import choose_accel  # noqa: E402

TARGET = 0.40
TITLE = "KASAN: use-after-free Read in comm_digest_compute"
"""The demo's planted bug under a KASAN kernel."""


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO.parent / "shared" / "syzkaller" /
                    "stable-6.1-kasan-base.config")
    ap.add_argument("--only", choices=("full", "static", "oracle"), help="build one of them")
    ap.add_argument("--static", action="store_true", help="also build the rules-only config (~20 min)")
    ap.add_argument("--budget", type=int, default=6, help="oracle: candidate kernels at most")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    cache = Path(os.environ.get("KVMLAB_TEST_CACHE", REPO / ".test-cache")) / "kernel"
    demo = make_demo_tree(cache / "linux-demo")
    work = Path(tempfile.mkdtemp(prefix="kvmlab-bench-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "xdg")  # the oracle's answer is not an earlier run's
    wanted = [args.only] if args.only else ["full", *(["static"] if args.static else []), "oracle"]
    seconds: dict[str, float] = {}
    try:
        for name in wanted:
            request, m = inputs.minimized_request(BuildOptions(kernel_config=args.config,
                                                               minimize=name != "full"), TITLE)
            if m is not None:
                print(f"rules, for {TITLE!r}: {m.summary()}", flush=True)
            builder = KernelBuilder(work / name, jobs=args.jobs, ccache=False)
            t = time.monotonic()
            if name == "oracle":
                request = _oracle(demo, builder, request, work, args.budget)
                print(f"oracle: minimization took {time.monotonic() - t:.0f} s in all", flush=True)
                t = time.monotonic()
            out = builder.build(demo.path, demo.culprit, request)
            manifest = BuildManifest.load(Path(out.artifacts["manifest"]))
            seconds[name] = manifest.duration if out.cached else time.monotonic() - t
            if out.status is not BuildStatus.OK:
                raise SystemExit(f"{name} build failed: {out.error}")
            print(f"{name:<8} {seconds[name]:8.0f} s  {manifest.objects_compiled} objects"
                  f"{' (its candidate build)' if out.cached else ''}  ({request.describe()})", flush=True)
        for name in ("static", "oracle"):
            if name in seconds and "full" in seconds:
                share = seconds[name] / seconds["full"]
                print(f"{name} build: {share:.0%} of the full one's time; target <= {TARGET:.0%}: "
                      f"{'meets' if share <= TARGET else 'MISSES'}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _oracle(demo: DemoTree, builder: KernelBuilder, request: ConfigRequest, work: Path,
            budget: int) -> ConfigRequest:
    """The rules' config minimized with the demo's C reproducer as the oracle."""
    cfg = inputs.settings(VMOptions(count=2, cpus=1, memory_mb=1024, run_time=20.0))
    staged = inputs.reproducer(ReproInput(c=Path(demo.reproducers["culprit"])), cfg).prepare(work / "repro")

    def make_tester(req: ConfigRequest, kernel: Path) -> VMTester:
        return VMTester(tree=demo.path, builder=builder, request=req, prepared=staged, cfg=cfg,
                        accel=choose_accel(cfg.vm, kernel), workdir=work / "runs")

    oracle = minimizing.Oracle(tree=demo.path, commit=demo.culprit, request=request, title=TITLE,
                               builder=builder, make_tester=make_tester, is_target=target_matcher(TITLE),
                               vm_slots=cfg.vm.count, stopwatch=Stopwatch(),
                               say=lambda line: print(line, flush=True), runs=4)
    found = minimizing.minimize(oracle, load_rules(find_data_file(TABLE_NAME)), budget)
    print(f"oracle: {found.summary}", flush=True)
    if found.config is None:
        raise SystemExit("oracle: no smaller config crashed with the bug's title")
    return found.request(request)


if __name__ == "__main__":
    raise SystemExit(main())
