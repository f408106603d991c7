"""``kvmlab image build|list|rm|recipes``: guest disk images from recipes."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from kvmlab.config import load_config
from kvmlab.errors import UserError
from kvmlab.images import (
    build_cached,
    build_image,
    default_cache_dir,
    list_entries,
    load_recipe,
    remove_entries,
)
from kvmlab.images.recipe import DEFAULT_RECIPE, recipe_dirs, recipe_files


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("image", help="build, list and remove guest disk images")
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="build a disk image from a recipe (cached by recipe hash)")
    build.add_argument(
        "recipe",
        nargs="?",
        default=DEFAULT_RECIPE,
        help=f"recipe name (see: kvmlab image recipes) or path to a YAML file (default: {DEFAULT_RECIPE})",
    )
    build.add_argument("--conf", type=Path, help="kvmlab YAML config file (for images.recipes_dir)")
    build.add_argument(
        "-o", "--output", type=Path, help="write the image into this directory instead of the cache"
    )
    build.add_argument("--force", action="store_true", help="rebuild even when a cached image matches")
    _cache_option(build)
    build.set_defaults(func=_build)

    lst = sub.add_parser("list", help="list cached images")
    _cache_option(lst)
    lst.set_defaults(func=_list)

    rm = sub.add_parser("rm", help="remove cached images")
    rm.add_argument("images", nargs="*", help="recipe name, directory name or hash prefix")
    rm.add_argument("--all", action="store_true", help="remove every cached image")
    _cache_option(rm)
    rm.set_defaults(func=_rm)

    rec = sub.add_parser(
        "recipes",
        help="list the image recipes and the file each comes from",
        description="Recipes are looked up in $KVMLAB_RECIPES_DIR (else the config file's "
        "images.recipes_dir), then in kvmlab's own; the first file of a name wins.",
    )
    rec.add_argument("--conf", type=Path, help="kvmlab YAML config file (for images.recipes_dir)")
    rec.set_defaults(func=_recipes)


def _cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="image cache (default: $XDG_CACHE_HOME/kvmlab/images)"
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def _recipes(args: argparse.Namespace) -> int:
    user = load_config(args.conf).images.recipes_path
    files = recipe_files(user)
    width = max((len(n) for n in files), default=4)
    for name, path in files.items():
        print(f"{name:<{width}}  {path}")
    print(f"searched: {', '.join(str(d) for d in recipe_dirs(user))}")
    return 0


def _build(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, recipe_dir=load_config(args.conf).images.recipes_path)
    if args.output is not None:
        result = build_image(recipe, args.output, force=args.force)
    else:
        result = build_cached(recipe, args.cache_dir, force=args.force)
    m = result.entry.manifest
    how = "cached" if result.cached else f"built in {m.build_seconds:.1f} s"
    print(f"{recipe.name}: {how} ({m.recipe_hash[:12]}, {_mib(m.qcow2_bytes)}, {len(m.packages)} packages)")
    print(f"image:   {result.entry.image}")
    print(f"ssh key: {result.entry.ssh_key}")
    print(f"cmdline: {' '.join(m.cmdline)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    cache = args.cache_dir or default_cache_dir()
    entries = list_entries(cache)
    if not entries:
        print(f"no images in {cache}")
        return 0
    print(f"{'NAME':<16} {'HASH':<12} {'SUITE':<10} {'ON DISK':>9} {'PKGS':>5}  BUILT")
    for e in entries:
        m = e.manifest
        built = datetime.datetime.fromtimestamp(m.built_at).strftime("%Y-%m-%d %H:%M")
        suite = str(m.recipe.get("suite", "?"))
        print(
            f"{m.name:<16} {m.recipe_hash[:12]:<12} {suite:<10} {_mib(m.qcow2_bytes):>9} "
            f"{len(m.packages):>5}  {built}"
        )
    print(f"({len(entries)} in {cache})")
    return 0


def _rm(args: argparse.Namespace) -> int:
    if not args.images and not args.all:
        raise UserError("image rm: name an image to remove, or pass --all")
    removed = remove_entries(args.images, args.cache_dir, all_=args.all)
    for e in removed:
        print(f"removed {e.dir} ({_mib(e.manifest.qcow2_bytes)})")
    if not removed:
        print("nothing to remove")
    return 0
