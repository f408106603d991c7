"""The image cache: one directory per (recipe name, recipe hash).

Layout: ``<cache>/<name>-<hash[:12]>/{image.qcow2,id_ed25519,id_ed25519.pub,manifest.json}``.
Default cache: ``$XDG_CACHE_HOME/kvmlab/images`` (``~/.cache/kvmlab/images``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from kvmlab.errors import UserError
from kvmlab.images.build import BuildResult, BuildTimeouts, ImageEntry, read_entry, remove_tree, sweep_stale
from kvmlab.images.build import build_image as _build_image
from kvmlab.images.recipe import Recipe, load_recipe
from kvmlab.vmm.root import GuestRoot

_HASH_PREFIX = 12


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kvmlab/images``, else ``~/.cache/kvmlab/images``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kvmlab" / "images"


def entry_dir(cache_dir: Path, recipe: Recipe) -> Path:
    """Where the image of ``recipe`` lives in ``cache_dir``."""
    return cache_dir / f"{recipe.name}-{recipe.digest()[:_HASH_PREFIX]}"


def build_cached(
    recipe: Recipe,
    cache_dir: Path | None = None,
    *,
    force: bool = False,
    timeouts: BuildTimeouts | None = None,
) -> BuildResult:
    """Build ``recipe`` into the cache, or reuse the image of the same hash."""
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    return _build_image(recipe, entry_dir(cache, recipe), force=force, timeouts=timeouts or BuildTimeouts())


def get_root(
    name_or_recipe: str | Recipe,
    cache_dir: Path | None = None,
    *,
    force: bool = False,
) -> GuestRoot:
    """The guest root of a recipe (a name, a path or a :class:`Recipe`), built if not cached.

    A first build takes a minute or two (debootstrap); later calls return at once.
    """
    recipe = load_recipe(name_or_recipe) if isinstance(name_or_recipe, str) else name_or_recipe
    return build_cached(recipe, cache_dir, force=force).entry.root()


def list_entries(cache_dir: Path | None = None) -> list[ImageEntry]:
    """Complete images in the cache, newest first (temporary build dirs are not listed)."""
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    if not cache.is_dir():
        return []
    found = []
    for d in cache.iterdir():
        if d.name.startswith(".") or not d.is_dir():
            continue
        entry = read_entry(d)
        if entry is not None:
            found.append(entry)
    return sorted(found, key=lambda e: e.manifest.built_at, reverse=True)


def select_entries(entries: Sequence[ImageEntry], selector: str) -> list[ImageEntry]:
    """Images whose recipe name, directory name or hash prefix (4+ digits) is ``selector``."""
    out = []
    for e in entries:
        h = e.manifest.recipe_hash
        if selector in (e.manifest.name, e.dir.name) or (len(selector) >= 4 and h.startswith(selector)):
            out.append(e)
    return out


def remove_entries(
    selectors: Sequence[str], cache_dir: Path | None = None, *, all_: bool = False
) -> list[ImageEntry]:
    """Delete the selected images (or all of them) from the cache; returns what was removed.

    A selector that matches nothing is a :class:`UserError`, checked before
    anything is deleted.
    """
    entries = list_entries(cache_dir)
    chosen: dict[Path, ImageEntry] = {}
    if all_:
        chosen = {e.dir: e for e in entries}
    for sel in selectors:
        matched = select_entries(entries, sel)
        if not matched:
            raise UserError(f"no cached image matches {sel!r} (see 'kvmlab image list')")
        chosen.update({e.dir: e for e in matched})
    for e in chosen.values():
        remove_tree(e.dir)
    if all_:
        sweep_stale(cache_dir if cache_dir is not None else default_cache_dir())
    return list(chosen.values())
