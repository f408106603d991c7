"""Guest disk images built from recipes, cached.

A recipe (``images/<name>.yaml``) says which Debian suite, packages, size,
sysctls and files go into an image; :func:`get_root` builds it once (cached by
the recipe's hash) and returns it as a :class:`kvmlab.vmm.root.GuestRoot` of
kind DISK, which the VM manager boots through a per-VM qcow2 overlay.
"""

from kvmlab.images.build import (
    BuildResult,
    BuildTimeouts,
    ImageEntry,
    ImageManifest,
    MirrorError,
    NeedRootError,
    build_image,
    read_entry,
)
from kvmlab.images.cache import (
    build_cached,
    default_cache_dir,
    entry_dir,
    get_root,
    list_entries,
    remove_entries,
)
from kvmlab.images.recipe import DEFAULT_RECIPE, RECIPE_DIR, ExtraFile, Recipe, load_recipe, parse_recipe

__all__ = [
    "DEFAULT_RECIPE",
    "RECIPE_DIR",
    "BuildResult",
    "BuildTimeouts",
    "ExtraFile",
    "ImageEntry",
    "ImageManifest",
    "MirrorError",
    "NeedRootError",
    "Recipe",
    "build_cached",
    "build_image",
    "default_cache_dir",
    "entry_dir",
    "get_root",
    "list_entries",
    "load_recipe",
    "parse_recipe",
    "read_entry",
    "remove_entries",
]
