"""Recipes: YAML validation, hashing, mirror discovery (unit tier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvmlab.errors import ConfigError, MissingFileError
from kvmlab.images.recipe import (
    RECIPE_DIR,
    ExtraFile,
    find_recipe,
    host_mirror,
    load_recipe,
    parse_recipe,
    parse_size,
)

pytestmark = pytest.mark.unit

MIRROR = "http://mirror.example/debian"


def parse(data: Any, name: str = "t") -> Any:
    return parse_recipe(data, name=name, source="images/t.yaml", default_mirror=MIRROR)


def test_empty_recipe_takes_every_default() -> None:
    r = parse({})
    assert r.suite == "bookworm"
    assert r.variant == "minbase"
    assert r.mirror == MIRROR
    assert r.size == 2 * 2**30
    assert r.kernel_cmdline() == ("root=/dev/vda", "rw", "rootfstype=ext4")


def test_shipped_bookworm_recipe_loads() -> None:
    r = load_recipe("bookworm", default_mirror=MIRROR)
    assert r.name == "bookworm"
    assert {"strace", "iproute2"} <= set(r.packages)
    assert ("kernel.kptr_restrict", "0") in r.sysctls
    assert r.files and r.files[0].path == "/etc/motd"
    assert r.files[0].mode == 0o644
    assert "root=/dev/vda" in r.kernel_cmdline()


def test_every_shipped_recipe_is_valid() -> None:
    recipes = sorted(RECIPE_DIR.glob("*.yaml"))
    assert recipes, "images/ ships no recipe"
    for path in recipes:
        load_recipe(str(path), default_mirror=MIRROR)


def test_unknown_key_names_key_and_file() -> None:
    with pytest.raises(ConfigError) as e:
        parse({"suite": "bookworm", "pakages": ["strace"]})
    msg = str(e.value)
    assert "images/t.yaml" in msg and "'pakages'" in msg
    assert "\n" not in msg


def test_unknown_key_in_a_file_entry() -> None:
    with pytest.raises(ConfigError, match=r"files\[0\].*unknown key 'owner'"):
        parse({"files": [{"path": "/x", "content": "", "owner": "root"}]})


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"size": "lots"}, "size"),
        ({"size": "1M"}, "size"),
        ({"size": True}, "size"),
        ({"suite": "Bookworm!"}, "suite"),
        ({"variant": "fat"}, "variant"),
        ({"filesystem": "btrfs"}, "filesystem"),
        ({"packages": "strace"}, "packages"),
        ({"packages": ["ok", "Bad Name"]}, "packages"),
        ({"mirror": "ftp://x/debian"}, "mirror"),
        ({"hostname": "has_underscore"}, "hostname"),
        ({"root_device": "vda"}, "root_device"),
        ({"serial_console": "/dev/ttyS0"}, "serial_console"),
        ({"serial_autologin": "yes"}, "serial_autologin"),
        ({"sysctls": ["kernel.panic=1"]}, "sysctls"),
        ({"sysctls": {"kernel panic": 1}}, "sysctls"),
        ({"sysctls": {"kernel.panic": [1]}}, "sysctls"),
        ({"files": [{"path": "relative", "content": ""}]}, "files"),
        ({"files": [{"path": "/etc/../../x", "content": ""}]}, "files"),
        ({"files": [{"path": "/x"}]}, "files"),
        ({"files": [{"path": "/x", "content": "", "mode": 0o17777}]}, "files"),
        ({"cmdline": ["root=/dev/sda"]}, "cmdline"),
        ({"cmdline": ["two words"]}, "cmdline"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(data)
    msg = str(e.value)
    # Keys inside a file entry are named with the entry: "files[0]: key 'path'".
    assert f"key '{key}'" in msg or (key == "files" and "files[0]" in msg)
    assert msg.startswith("images/t.yaml: ")
    assert "\n" not in msg


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        parse(["suite", "bookworm"])


def test_no_mirror_anywhere_is_an_error() -> None:
    with pytest.raises(ConfigError, match="mirror"):
        parse_recipe({}, name="t", source="t.yaml", default_mirror=None)


def test_sizes() -> None:
    assert parse_size("2G") == 2 * 2**30
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size("2.5G")


def test_sysctl_values_become_strings_and_keep_order() -> None:
    r = parse({"sysctls": {"vm.b": 1, "kernel.a": "7 4 1 3"}})
    assert r.sysctls == (("vm.b", "1"), ("kernel.a", "7 4 1 3"))


def test_file_modes_from_yaml_octal_and_strings() -> None:
    r = parse(
        {
            "files": [
                {"path": "/a", "content": "x", "mode": 0o755},
                {"path": "/b", "content": "y", "mode": "0600"},
            ]
        }
    )
    assert r.files == (ExtraFile("/a", "x", 0o755), ExtraFile("/b", "y", 0o600))


def test_hash_is_stable_and_follows_content() -> None:
    a = parse({"packages": ["strace"]})
    assert a.digest() == parse({"packages": ["strace"]}).digest()
    assert len(a.digest()) == 64
    assert a.digest() != parse({"packages": ["strace", "gdb"]}).digest()
    assert a.digest() != parse({"packages": ["strace"]}, name="other").digest()
    assert a.digest() != parse({"packages": ["strace"], "sysctls": {"vm.x": 1}}).digest()


def test_comments_do_not_change_the_hash(tmp_path: Path) -> None:
    one = tmp_path / "r.yaml"
    one.write_text("suite: bookworm\npackages: [strace]\n")
    two_dir = tmp_path / "two"
    two_dir.mkdir()
    two = two_dir / "r.yaml"
    two.write_text("# a comment\nsuite: bookworm   # trailing\npackages:\n  - strace\n")
    assert (
        load_recipe(str(one), default_mirror=MIRROR).digest()
        == load_recipe(str(two), default_mirror=MIRROR).digest()
    )


def test_yaml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("suite: [bookworm\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml.*not valid YAML"):
        load_recipe(str(p), default_mirror=MIRROR)


def test_find_recipe_by_name_and_path(tmp_path: Path) -> None:
    assert find_recipe("bookworm") == RECIPE_DIR / "bookworm.yaml"
    p = tmp_path / "mine.yaml"
    p.write_text("{}\n")
    assert find_recipe(str(p)) == p
    with pytest.raises(MissingFileError, match=r"no recipe named 'nope'.*bookworm"):
        find_recipe("nope")
    with pytest.raises(MissingFileError, match="does not exist"):
        find_recipe(str(tmp_path / "gone.yaml"))


def test_host_mirror_from_deb822(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\n"
        "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://deb.example.org/debian-security\n"
        "Suites: bookworm-security\n"
        "\n"
        "Types: deb-src\n"
        "URIs: http://src.example.org/debian\n"
        "\n"
        "Types: deb\n"
        "URIs: https://deb.example.org/debian/\n"
        "Suites: bookworm\n"
    )
    assert host_mirror(tmp_path) == "https://deb.example.org/debian"


def test_host_mirror_from_one_line_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n"
    )
    assert host_mirror(tmp_path) == "http://one.example/debian"
    assert host_mirror(tmp_path / "empty") is None


def test_this_hosts_mirror_is_found() -> None:
    if not Path("/etc/apt").is_dir():
        pytest.skip("no /etc/apt on this host")
    assert host_mirror() is not None
