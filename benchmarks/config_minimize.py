"""Config minimization (issue 25 point 1, static half): syzbot's 6.1 KASAN
config built at the demo's planted-bug commit as given and minimized for the
bug's title, each a clean build without ccache in a fresh work directory, in
one run: objects compiled, seconds, and the minimized build's share.
Minimization itself (the rules table) costs no build.

    .venv/bin/python benchmarks/config_minimize.py [--only minimized] [--keep]

Target (the issue's): the minimized build <= 40% of the full one's time. The
crash with the same title on the minimized kernel is checked by
``tests/test_syz_real.py::test_syzbot_config_kernel_boots_and_runs_a_syz_program``
(KVMLAB_HEAVY_TESTS=1), which builds the same minimized config.
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

from kvmlab.jobs import inputs  # noqa: E402
from kvmlab.jobs.model import BuildOptions  # noqa: E402
from kvmlab.kernel.builder import BuildManifest, KernelBuilder  # noqa: E402
from kvmlab.kernel.demo_tree import make_demo_tree  # noqa: E402
from kvmlab.outcome import BuildStatus  # noqa: E402

TARGET = 0.40
TITLE = "KASAN: use-after-free Read in comm_digest_compute"
"""The demo's planted bug under a KASAN kernel."""


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO.parent / "shared" / "syzkaller" /
                    "stable-6.1-kasan-base.config")
    ap.add_argument("--only", choices=("full", "minimized"), help="build one of the two")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    cache = Path(os.environ.get("KVMLAB_TEST_CACHE", REPO / ".test-cache")) / "kernel"
    demo = make_demo_tree(cache / "linux-demo")
    work = Path(tempfile.mkdtemp(prefix="kvmlab-bench-"))
    seconds: dict[str, float] = {}
    try:
        for name, minimize in (("full", False), ("minimized", True)):
            if args.only and args.only != name:
                continue
            request, m = inputs.minimized_request(BuildOptions(kernel_config=args.config, minimize=minimize),
                                                  TITLE)
            if m is not None:
                print(f"minimized for {TITLE!r}: {m.summary()}", flush=True)
            builder = KernelBuilder(work / name, jobs=args.jobs, ccache=False)
            t = time.monotonic()
            out = builder.build(demo.path, demo.culprit, request)
            seconds[name] = time.monotonic() - t
            if out.status is not BuildStatus.OK:
                raise SystemExit(f"{name} build failed: {out.error}")
            objs = BuildManifest.load(Path(out.artifacts["manifest"])).objects_compiled
            print(f"{name:<10} {seconds[name]:8.0f} s  {objs} objects  ({request.describe()})", flush=True)
        if len(seconds) == 2:
            share = seconds["minimized"] / seconds["full"]
            print(f"minimized build: {share:.0%} of the full one's time; target <= {TARGET:.0%}: "
                  f"{'meets' if share <= TARGET else 'MISSES'}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
