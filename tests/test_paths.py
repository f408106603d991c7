"""Where kvmlab finds fragments, recipes and its config file, and how a user
overrides them (kvmlab.paths, the config keys, the environment variables)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmlab.cli import main
from kvmlab.config import load_config
from kvmlab.errors import ConfigError, MissingFileError
from kvmlab.images.recipe import find_recipe, recipe_files, with_recipe_path
from kvmlab.kernel.builder import KernelBuilder
from kvmlab.kernel.config import ConfigRequest, fragment_dirs, fragment_files, load_fragment
from kvmlab.paths import shipped_dir
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def test_shipped_data_is_the_checkouts_folders() -> None:
    assert shipped_dir("kernel_configs") == REPO / "kernel_configs"
    assert shipped_dir("images") == REPO / "images"
    assert fragment_dirs() == (REPO / "kernel_configs",)


def _user_fragments(tmp_path: Path) -> Path:
    d = tmp_path / "frags"
    d.mkdir()
    (d / "mine.config").write_text("# my own\nCONFIG_MINE=y\n")
    (d / "kasan.config").write_text("# my KASAN\nCONFIG_KASAN=y\nCONFIG_KASAN_INLINE=y\n")
    return d


def test_env_fragments_dir_adds_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _user_fragments(tmp_path)
    monkeypatch.setenv("KVMLAB_FRAGMENTS_DIR", str(d))
    files = fragment_files()
    assert files["mine"] == d / "mine.config"
    assert files["kasan"] == d / "kasan.config"
    assert files["base"] == REPO / "kernel_configs" / "base.config"
    assert ConfigRequest.from_fragments(["base", "kasan"]).requested()["CONFIG_KASAN_INLINE"] == "y"


def test_config_file_fragments_dir_is_relative_to_the_file(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _user_fragments(tmp_path)
    conf = tmp_path / "kvmlab.yaml"
    conf.write_text("kernel:\n  fragments_dir: frags\n")
    monkeypatch.chdir(REPO)  # not where the config file is
    cfg = load_config(conf)
    assert cfg.kernel.fragments_path == tmp_path / "frags"
    assert load_fragment("mine", fragment_dirs(cfg.kernel.fragments_path)).options == {"CONFIG_MINE": "y"}
    builder = KernelBuilder(tmp_path / "work", fragments_dir=cfg.kernel.fragments_path)
    assert builder.fragment_dirs == (tmp_path / "frags", REPO / "kernel_configs")
    # The environment variable wins over the config file.
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("KVMLAB_FRAGMENTS_DIR", str(other))
    assert fragment_dirs(cfg.kernel.fragments_path) == (other, REPO / "kernel_configs")


def test_user_compiler_table_replaces_the_shipped_one(tmp_path: Path) -> None:
    d = _user_fragments(tmp_path)
    (d / "compilers.yaml").write_text("compilers:\n  - cc: my-gcc\n")
    assert KernelBuilder(tmp_path / "work", fragments_dir=d).rules[0].cc == "my-gcc"
    assert KernelBuilder(tmp_path / "work").rules[0].cc != "my-gcc"


def test_a_missing_override_dir_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KVMLAB_FRAGMENTS_DIR", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"^\$KVMLAB_FRAGMENTS_DIR: .*nope is not a directory$"):
        fragment_dirs()
    assert main(["kernel", "fragments"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kvmlab: error: $KVMLAB_FRAGMENTS_DIR: ") and "\n" not in err
    conf = tmp_path / "c.yaml"
    conf.write_text("images:\n  recipes_dir: gone\n")
    monkeypatch.delenv("KVMLAB_FRAGMENTS_DIR")
    assert main(["image", "recipes", "--conf", str(conf)]) == 2
    assert f"{tmp_path / 'gone'} (from the config file) is not a directory" in capsys.readouterr().err


def test_unknown_key_in_the_new_sections(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("kernel:\n  fragment_dir: x\n")
    known = r"\(known: distcc_hosts, fragments_dir\)"
    with pytest.raises(ConfigError, match=rf"unknown key 'fragment_dir' {known}"):
        load_config(conf)


def test_recipes_dir_from_env_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "mine.yaml").write_text("suite: bookworm\n")
    monkeypatch.setenv("KVMLAB_RECIPES_DIR", str(d))
    assert find_recipe("mine") == d / "mine.yaml"
    assert recipe_files()["bookworm"] == REPO / "images" / "bookworm.yaml"
    monkeypatch.delenv("KVMLAB_RECIPES_DIR")
    with pytest.raises(MissingFileError, match=r"no recipe named 'mine' in .*images \(known: bookworm"):
        find_recipe("mine")
    conf = tmp_path / "kvmlab.yaml"
    conf.write_text("images:\n  recipes_dir: recipes\nrepro:\n  root: mine\n")
    cfg = with_recipe_path(load_config(conf))
    assert cfg.repro.root == str(d / "mine.yaml")  # what the tester's resolve_root gets
    conf.write_text("images:\n  recipes_dir: recipes\n")
    assert with_recipe_path(load_config(conf)).repro.root == "initramfs"


def test_default_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(None).vm.count == 2  # isolated XDG_CONFIG_HOME: no file, defaults
    xdg = Path(os.environ["XDG_CONFIG_HOME"])
    (xdg / "kvmlab").mkdir(parents=True)
    (xdg / "kvmlab" / "config.yaml").write_text("vm:\n  count: 3\n")
    assert load_config(None).vm.count == 3
    other = tmp_path / "other.yaml"
    other.write_text("vm:\n  count: 5\n")
    monkeypatch.setenv("KVMLAB_CONFIG", str(other))
    assert load_config(None).vm.count == 5
    monkeypatch.setenv("KVMLAB_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(MissingFileError, match=r"missing\.yaml: no such file"):
        load_config(None)


def test_version_and_fragment_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "kvmlab 0.1.0"
    assert main(["kernel", "fragments"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if line.split()[1:2]
             and line.split()[1].endswith(".config")]
    assert names == sorted(p.stem for p in (REPO / "kernel_configs").glob("*.config"))
    assert "nodwarf  " in out and "No debug info" in out
    assert f"compiler table: {REPO / 'kernel_configs' / 'compilers.yaml'}" in out
