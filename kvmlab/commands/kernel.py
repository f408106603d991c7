"""``kvmlab kernel build``: build a kernel at a commit, cached;
``kvmlab kernel fragments``: the config fragments it can use, and where each comes from."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvmlab.commands.options import _path, add_job_option, fragments, given, make_job, nested
from kvmlab.config import load_config
from kvmlab.errors import KvmlabError
from kvmlab.jobs.build import run_build
from kvmlab.jobs.model import BuildJob
from kvmlab.kernel.builder import BuildManifest
from kvmlab.kernel.config import find_data_file, fragment_dirs, fragment_files
from kvmlab.outcome import BuildStatus
from kvmlab.ui.ticker import BuildTicker


def _fragment_names() -> str:
    try:
        return ", ".join(fragment_files()) or "none found"
    except KvmlabError as e:  # a bad $KVMLAB_FRAGMENTS_DIR must not break --help of every command
        return f"unknown ({e})"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("kernel", help="build kernels at any commit (cached)")
    sub = parser.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build",
        help="build a kernel at a commit without touching your checkout",
        description="Build REV of the kernel git tree PATH in a kvmlab-owned worktree. "
        f"Config fragments: {_fragment_names()} (where each comes from: kvmlab kernel fragments).",
    )
    build.add_argument("--tree", type=Path, help="kernel git tree (only read)")
    build.add_argument("--commit", help="revision to build (commit, tag, branch)")
    build.add_argument("--config", default=None, help="comma-separated config fragments (default: base; "
                       "with --kernel-config: none, or fragments layered on it)")
    build.add_argument("--kernel-config", "--config-file", dest="config_file", type=Path, default=None,
                       help="a complete .config (e.g. syzbot's) as the base, adapted with olddefconfig")
    build.add_argument("-o", "--output", type=Path, default=None, help="copy the artifacts here")
    build.add_argument("--jobs", "-j", type=int, default=None, help="parallel jobs (default: core count)")
    build.add_argument("--compiler", default=None, help="compiler to use instead of the compiler table's")
    build.add_argument(
        "--work-dir", type=Path, default=None, help="worktrees, object dirs and build cache "
        "(default: $XDG_CACHE_HOME/kvmlab/kernel)"
    )
    build.add_argument("--conf", type=Path, help="kvmlab YAML config file (for kernel.fragments_dir)")
    add_job_option(build)
    build.set_defaults(func=_build)

    frags = sub.add_parser(
        "fragments",
        help="list the config fragments and the file each comes from",
        description="Fragments are looked up in $KVMLAB_FRAGMENTS_DIR (else the config file's "
        "kernel.fragments_dir), then in kvmlab's own; the first file of a name wins.",
    )
    frags.add_argument("--conf", type=Path, help="kvmlab YAML config file (for kernel.fragments_dir)")
    frags.set_defaults(func=_fragments)


def _summary(path: Path) -> str:
    """The first comment line of a fragment file, without the ``#``."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("#") and line.strip("# "):
            return line.lstrip("# ").strip()
        if line.strip() and not line.startswith("#"):
            break
    return ""


def _fragments(args: argparse.Namespace) -> int:
    dirs = fragment_dirs(load_config(args.conf).kernel.fragments_path)
    files = fragment_files(dirs)
    width = max((len(n) for n in files), default=4)
    pwidth = max((len(str(p)) for p in files.values()), default=4)
    for name, path in files.items():
        print(f"{name:<{width}}  {path!s:<{pwidth}}  {_summary(path)}".rstrip())
    print(f"compiler table: {find_data_file('compilers.yaml', dirs)}")
    print(f"searched: {', '.join(str(d) for d in dirs)}")
    return 0


def build_job(args: argparse.Namespace) -> BuildJob:
    frags = fragments(args.config)
    build = given(config=list(frags) if frags is not None else None, kernel_config=_path(args.config_file),
                  compiler=args.compiler)
    fields = given(tree=_path(args.tree), commit=args.commit, output=_path(args.output), jobs=args.jobs,
                   work_dir=_path(args.work_dir), conf=_path(args.conf)) | nested(build=build)
    job = make_job(BuildJob.KIND, fields, args.job)
    assert isinstance(job, BuildJob)
    return job


def _build(args: argparse.Namespace) -> int:
    outcome = run_build(build_job(args), progress=BuildTicker())
    manifest = BuildManifest.load(Path(outcome.artifacts["manifest"]))
    # The builder said in one line which requested options Kconfig did not
    # keep; the manifest lists them all.
    how = "cached" if outcome.cached else f"{outcome.duration:.0f} s, {manifest.objects_compiled} objects"
    print(f"commit {outcome.commit[:12]} with {outcome.compiler}: {outcome.status.value} ({how})")
    if outcome.status is BuildStatus.FAILED:
        print(f"error: {outcome.error}")
        print(f"log:   {outcome.artifacts.get('build.log', '')}")
        return 1
    for name in ("bzImage", "vmlinux", "System.map", "config", "manifest"):
        print(f"{name + ':':12} {outcome.artifacts[name]}")
    return 0
