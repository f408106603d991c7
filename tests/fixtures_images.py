"""Session fixtures for guest disk images: the default recipe built for real,
once per test run, under ``tests.conftest.TEST_CACHE``."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kvmlab.images import BuildResult, Recipe, build_cached, load_recipe
from kvmlab.images.build import REQUIRED_TOOLS
from tests.conftest import TEST_CACHE

#: Cache the tests build images into (shared by every test of a run).
IMAGE_CACHE = TEST_CACHE / "images"


def image_build_skip_reason(recipe: Recipe | None = None) -> str | None:
    """Why this host cannot build images (root, tools, mirror), or None."""
    if os.geteuid() != 0:
        return "image builds need root (debootstrap)"
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if recipe is not None:
        url = f"{recipe.mirror}/dists/{recipe.suite}/Release"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=20):
                pass
        except (urllib.error.URLError, OSError) as e:
            return f"Debian mirror {recipe.mirror} unreachable: {getattr(e, 'reason', e)}"
    return None


@pytest.fixture(scope="session")
def image_cache() -> Path:
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    return IMAGE_CACHE


@pytest.fixture(scope="session")
def bookworm_recipe() -> Recipe:
    return load_recipe("bookworm")


@pytest.fixture(scope="session")
def bookworm_image(image_cache: Path, bookworm_recipe: Recipe) -> BuildResult:
    """The shipped ``bookworm`` recipe, built for real (about two minutes the
    first time; a cache hit when TEST_CACHE already holds it)."""
    reason = image_build_skip_reason(bookworm_recipe)
    if reason:
        pytest.skip(reason)
    return build_cached(bookworm_recipe, image_cache)
