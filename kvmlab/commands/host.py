"""``kvmlab host cache URI``: the volumes a libvirt host keeps for every kvmlab
process and client (kernels, initramfs, disk images, by content); ``kvmlab
host gc URI``: collect them by size and age, never what a running job uses."""

from __future__ import annotations

import argparse
import time

from kvmlab import cache
from kvmlab.errors import UserError
from kvmlab.text import counted
from kvmlab.vmm import volume_cache as vc
from kvmlab.vmm.host import Host


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "host", help="a libvirt host's cache of uploaded kernels and images; collect it",
        description="Kernels, initramfs and disk images go up to a libvirt host once, as volumes of "
        "its kvmlab pool named by content, shared by every kvmlab process and client using the host. "
        "A running job leases the volumes it uses: gc never removes those.")
    hsub = p.add_subparsers(dest="host_command", metavar="ACTION", required=True)
    show = hsub.add_parser("cache", help="what the host's cache holds")
    show.add_argument("uri", metavar="URI", help="libvirt URI, e.g. qemu+ssh://root@lab1/system")
    show.add_argument("-l", "--long", action="store_true", help="every volume, oldest use first")
    gc = hsub.add_parser("gc", help="remove cached volumes no job uses, oldest use first")
    gc.add_argument("uri", metavar="URI", help="libvirt URI, e.g. qemu+ssh://root@lab1/system")
    gc.add_argument("--max-size", metavar="SIZE", default=None,
                    help=f"keep at most this much (20G, 500M; default {cache.human(vc.DEFAULT_MAX_BYTES)})")
    gc.add_argument("--max-age", metavar="DAYS", type=float, default=vc.DEFAULT_MAX_AGE / 86400,
                    help="remove what no job used for this many days (default %(default).0f)")
    gc.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    p.set_defaults(func=run, long=False, holds_cache=False)


def run(args: argparse.Namespace) -> int:
    max_bytes = vc.DEFAULT_MAX_BYTES
    if args.host_command == "gc":
        if args.max_size is not None:
            max_bytes = cache.parse_size(args.max_size)
        if not args.max_age >= 0:
            raise UserError(f"--max-age {args.max_age}: must be 0 or more days")
    host = Host(args.uri)
    try:
        if args.host_command == "cache":
            report = host.storage.cache()
            print(f"{host.label}: {report.summary()}")
            if args.long:
                now = time.time()
                for v in sorted(report.volumes, key=lambda v: v.last_use):
                    state = "leased" if v.leased else ("" if v.done else "partial")
                    age = cache.human_age(now - v.last_use)
                    print(f"{age:>8}  {cache.human(v.size):>10}  {v.name}  {state}")
            return 0
        report = host.storage.cache(gc=True, max_bytes=max_bytes, max_age=args.max_age * 86400,
                                    dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        for v in report.removed:
            print(f"{verb} {v.name} ({cache.human(v.size)})")
        gone = report.removed_size
        print(f"{host.label}: {verb} {counted(len(report.removed), 'volume')} ({cache.human(gone)}), "
              f"{counted(len(report.stale_leases), 'lease')} of jobs that ended; "
              f"{cache.human(report.size - gone)} left")
        return 0
    finally:
        host.close()

