"""``kvmlab cache``: what the cache holds, by category; ``kvmlab cache prune``:
keep it under its size limit (the entries used longest ago go first)."""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from kvmlab import cache
from kvmlab.config import cache_dir, load_config
from kvmlab.errors import UserError
from kvmlab.session.store import format_table
from kvmlab.text import counted


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cache", help="what kvmlab's cache holds; prune it to its size limit",
        description="The cache ($XDG_CACHE_HOME/kvmlab) by category: builds, build slots, initramfs "
        "images, disk images, repro runs, bisection workdirs, demo trees, with their size and when "
        "each was last used. Its limit is cache.max_size_gb in the config file (default "
        f"{cache.DEFAULT_MAX_GB:.0f}); after commands that fill it, kvmlab removes the entries used "
        "longest ago to stay under it.")
    p.add_argument("--conf", type=Path, help="kvmlab YAML config file (for cache.max_size_gb)")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    show = csub.add_parser("show", help="the cache by category (the default)")
    show.add_argument("-l", "--long", action="store_true", help="every entry, oldest use first")
    pr = csub.add_parser("prune", help="remove the entries used longest ago until the cache fits",
                         description="Refused while other kvmlab commands run (they hold the cache).")
    pr.add_argument("--max-size", metavar="SIZE", help="fit this (50G, 500M; default: cache.max_size_gb)")
    pr.add_argument("--all", action="store_true", help="remove every entry")
    pr.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    p.set_defaults(func=run, long=False, holds_cache=False)


def _limit(args: argparse.Namespace) -> int:
    if getattr(args, "all", False):
        return 0
    text = getattr(args, "max_size", None)
    if text is not None:
        return cache.parse_size(text)
    return int(load_config(args.conf).cache.max_size_gb * 2**30)


def run(args: argparse.Namespace) -> int:
    root = cache_dir()
    if args.cache_command == "prune":
        return _prune(args, root)
    limit = _limit(args)
    found = cache.entries(root)
    by: dict[str, list[cache.Entry]] = defaultdict(list)
    for e in found:
        by[e.category].append(e)
    now = time.time()
    rows = []
    for cat in cache.CATEGORIES:
        es = by.get(cat.name, [])
        oldest = cache.human_age(now - min(e.used for e in es)) if es else "-"
        rows.append((cat.name, str(len(es)), cache.human(sum(e.size for e in es)), oldest, cat.what))
    print(f"cache {root}")
    print(format_table(("CATEGORY", "ENTRIES", "SIZE", "OLDEST USE", "WHAT"), rows), end="")
    total = sum(e.size for e in found)
    print(f"total {cache.human(total)} of {cache.human(limit) if limit else 'no limit'}"
          + (" (over: kvmlab cache prune)" if limit and total > limit else ""))
    if args.long:
        for e in sorted(found, key=lambda e: e.used):
            print(f"{cache.human_age(now - e.used):>8}  {cache.human(e.size):>10}  {e.category:<11} {e.path}")
    return 0


def _prune(args: argparse.Namespace, root: Path) -> int:
    limit = _limit(args)
    if limit == 0 and not args.all:
        raise UserError("cache.max_size_gb is 0 (no limit): give --max-size SIZE or --all")
    with cache.exclusive(root, wait=False) as got:
        if not got:
            raise UserError(f"other kvmlab commands are using the cache {root}: prune when they are done")
        removed, left = cache.prune(root, limit, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for e in removed:
        print(f"{verb} {e.category} {e.path} ({cache.human(e.size)})")
    print(f"{verb} {counted(len(removed), 'entry', 'entries')} "
          f"({cache.human(sum(e.size for e in removed))}); {cache.human(left)} left")
    return 0

