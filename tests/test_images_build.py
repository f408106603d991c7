"""Image builder logic without debootstrap: configuration of a tree, manifests,
mount parsing, the cache and the CLI's error paths (unit tier)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from kvmlab import cli
from kvmlab.errors import ConfigError, UserError
from kvmlab.images import build as build_mod
from kvmlab.images.build import (
    IMAGE_FILE,
    KEY_FILE,
    MANIFEST_FILE,
    ImageEntry,
    ImageManifest,
    build_image,
    debootstrap_argv,
    debootstrap_failure,
    mkfs_argv,
    mounts_under,
    read_entry,
    sweep_stale,
)
from kvmlab.images.cache import entry_dir, list_entries, remove_entries, select_entries
from kvmlab.images.configure import (
    MASKED_UNITS,
    NETWORK_UNIT,
    configure,
    guest_files,
    parse_dpkg_status,
    write_file,
)
from kvmlab.images.recipe import ExtraFile, Recipe, parse_recipe
from kvmlab.vmm.root import RootKind

pytestmark = pytest.mark.unit

MIRROR = "http://mirror.example/debian"


def recipe(**data: object) -> Recipe:
    return parse_recipe(dict(data), name="t", source="t.yaml", default_mirror=MIRROR)


# --- configuration of a root tree --------------------------------------------------------------


def fake_tree(root: Path) -> None:
    """The parts of a debootstrapped tree that configure() touches."""
    for d in ("etc/ssh/sshd_config.d", "var/cache/apt/archives", "var/lib/apt/lists", "debootstrap", "root"):
        (root / d).mkdir(parents=True)
    (root / "var/cache/apt/archives/bash_5.2_amd64.deb").write_bytes(b"deb")
    (root / "var/cache/apt/archives/lock").write_bytes(b"")
    (root / "var/lib/apt/lists/deb.debian.org_dists_bookworm_Release").write_text("x")
    (root / "debootstrap/debootstrap.log").write_text("log")
    (root / "etc/resolv.conf").write_text("nameserver 10.255.255.53\n")


def test_configure_writes_the_guest(tmp_path: Path) -> None:
    fake_tree(tmp_path)
    calls: list[list[str]] = []
    r = recipe(
        hostname="guest1",
        sysctls={"kernel.kptr_restrict": 0, "kernel.printk": "7 4 1 3"},
        files=[
            {"path": "/etc/motd", "content": "hi\n", "mode": 0o600},
            {"path": "/opt/x/run.sh", "content": "#!/bin/sh\n", "mode": 0o755},
        ],
    )

    def systemctl(args: Sequence[str]) -> None:
        calls.append(list(args))

    configure(
        tmp_path, r, authorized_key="ssh-ed25519 AAAA test\n", machine_id="ab" * 16, systemctl=systemctl
    )

    assert (tmp_path / "etc/hostname").read_text() == "guest1\n"
    assert "guest1" in (tmp_path / "etc/hosts").read_text()
    assert (tmp_path / "etc/machine-id").read_text() == "ab" * 16 + "\n"
    fstab = (tmp_path / "etc/fstab").read_text()
    assert "/dev/vda\t/\text4\t" in fstab and fstab.split("\n")[1].endswith("\t0\t0")
    assert (tmp_path / "etc/resolv.conf").read_text() == ""
    net = (tmp_path / "etc/systemd/network" / NETWORK_UNIT).read_text()
    assert "Name=e*" in net and "DHCP=ipv4" in net
    sshd = (tmp_path / "etc/ssh/sshd_config.d/90-kvmlab.conf").read_text()
    assert "PermitRootLogin prohibit-password" in sshd and "PasswordAuthentication no" in sshd
    ak = tmp_path / "root/.ssh/authorized_keys"
    assert ak.read_text() == "ssh-ed25519 AAAA test\n"
    assert stat.S_IMODE(ak.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "root/.ssh").stat().st_mode) == 0o700
    sysctl = (tmp_path / "etc/sysctl.d/90-kvmlab.conf").read_text()
    assert "kernel.kptr_restrict = 0\n" in sysctl and "kernel.printk = 7 4 1 3\n" in sysctl
    assert (tmp_path / "etc/motd").read_text() == "hi\n"
    assert stat.S_IMODE((tmp_path / "etc/motd").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "opt/x/run.sh").stat().st_mode) == 0o755
    # systemctl enables networkd, sshd and the serial getty, and masks the timers.
    assert calls[0] == ["enable", "systemd-networkd.service", "ssh.service", "serial-getty@ttyS0.service"]
    assert calls[1] == ["mask", *MASKED_UNITS]
    # Build leftovers are gone, apt's lock file stays.
    assert not (tmp_path / "var/cache/apt/archives/bash_5.2_amd64.deb").exists()
    assert (tmp_path / "var/cache/apt/archives/lock").exists()
    assert not any((tmp_path / "var/lib/apt/lists").iterdir())
    assert not (tmp_path / "debootstrap").exists()
    # sshd starts without its config self-test; no autologin unless the recipe asks.
    assert (
        "ExecStartPre=\n"
        in (tmp_path / "etc/systemd/system/ssh.service.d/kvmlab-fast-start.conf").read_text()
    )
    assert not list((tmp_path / "etc/systemd/system").glob("serial-getty@*"))


def test_autologin_dropin_only_when_asked() -> None:
    paths = [f.path for f in guest_files(recipe(serial_autologin=True), authorized_key="k", machine_id="m")]
    assert "/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" in paths
    paths = [f.path for f in guest_files(recipe(), authorized_key="k", machine_id="m")]
    assert not any("autologin" in p for p in paths)


def test_recipe_files_come_last_and_override(tmp_path: Path) -> None:
    files = guest_files(
        recipe(files=[{"path": "/etc/hostname", "content": "mine\n"}]), authorized_key="k", machine_id="m"
    )
    assert files[-1].path == "/etc/hostname" and files[-1].content == "mine\n"


def test_write_file_replaces_a_symlink_without_following_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("host file\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/resolv.conf").symlink_to(outside)
    write_file(root, ExtraFile("/etc/resolv.conf", "", 0o644))
    assert outside.read_text() == "host file\n"
    assert not (root / "etc/resolv.conf").is_symlink()


def test_write_file_refuses_a_directory_link_out_of_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="leaves the image root"):
        write_file(root, ExtraFile("/escape/evil", "x"))
    assert not (tmp_path / "evil").exists()


def test_parse_dpkg_status() -> None:
    text = (
        "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b7\nDescription: x\n more\n\n"
        "Package: old\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: apt\nStatus: install ok installed\nVersion: 2.6.1\n"
    )
    assert parse_dpkg_status(text) == [("apt", "2.6.1"), ("bash", "5.2.15-2+b7")]


# --- argv and failure messages -----------------------------------------------------------------


def test_debootstrap_argv_adds_required_packages_once() -> None:
    argv = debootstrap_argv(recipe(packages=["strace", "udev"]), Path("/t"))
    assert argv[0] == "debootstrap" and "--variant=minbase" in argv and "--foreign" in argv
    include = next(a for a in argv if a.startswith("--include="))
    assert include == "--include=systemd-sysv,udev,openssh-server,strace"
    assert argv[-3:] == ["bookworm", "/t", MIRROR]


def test_mkfs_argv_fills_from_directory_without_mounts() -> None:
    argv = mkfs_argv(recipe(size="1G"), Path("/tree"), Path("/img.raw"))
    assert argv[:1] == ["mkfs.ext4"]
    assert argv[argv.index("-d") + 1] == "/tree"
    assert argv[-2:] == ["/img.raw", f"{2**30 // 1024}k"]


def test_debootstrap_failure_picks_the_reason() -> None:
    out = "I: Retrieving InRelease\nE: Failed getting release file http://x/dists/bookworm/Release\n"
    assert debootstrap_failure(out, "") == "E: Failed getting release file http://x/dists/bookworm/Release"
    log_text = "tar: ./usr/bin/x: Cannot write: No space left on device\nmore\n"
    assert "No space left on device" in debootstrap_failure("W: See log for details\n", log_text)
    assert debootstrap_failure("", "") == "no output"


def test_mounts_under_deepest_first_and_unescaped() -> None:
    info = (
        "22 1 0:21 / /proc rw - proc proc rw\n"
        "90 1 0:30 / /b/tmp\\040dir/rootfs rw - tmpfs x rw\n"
        "91 90 0:31 / /b/tmp\\040dir/rootfs/proc rw - proc proc rw\n"
        "92 90 0:32 / /b/tmp\\040dir/rootfs/sys rw - sysfs sysfs rw\n"
        "93 1 0:33 / /b/tmp\\040dir2 rw - tmpfs y rw\n"
    )
    found = mounts_under(Path("/b/tmp dir"), info)
    assert found[-1] == Path("/b/tmp dir/rootfs")
    assert set(found[:2]) == {Path("/b/tmp dir/rootfs/proc"), Path("/b/tmp dir/rootfs/sys")}
    assert len(found) == 3


# --- manifests and the cache -------------------------------------------------------------------


def fake_entry(d: Path, r: Recipe, built_at: float = 1.0) -> ImageEntry:
    d.mkdir(parents=True)
    (d / IMAGE_FILE).write_bytes(b"QFI\xfb")
    (d / KEY_FILE).write_text("key")
    m = ImageManifest(
        name=r.name,
        recipe_hash=r.digest(),
        recipe=r.canonical(),
        packages=(("bash", "5.2"),),
        image_bytes=r.size,
        qcow2_bytes=4,
        rootfs_bytes=3,
        build_seconds=61.5,
        phases={"debootstrap": 60.0},
        built_at=built_at,
        cmdline=r.kernel_cmdline(),
    )
    (d / MANIFEST_FILE).write_text(json.dumps(m.to_json()))
    return ImageEntry(d, m)


def test_manifest_round_trips_and_entry_is_a_disk_root(tmp_path: Path) -> None:
    r = recipe()
    e = fake_entry(tmp_path / "e", r)
    again = read_entry(tmp_path / "e")
    assert again == e
    root = e.root()
    assert root.kind is RootKind.DISK
    assert root.path == tmp_path / "e" / IMAGE_FILE
    assert root.ssh_key == tmp_path / "e" / KEY_FILE
    assert root.cmdline == ("root=/dev/vda", "rw", "rootfstype=ext4")


def test_incomplete_dirs_are_not_entries(tmp_path: Path) -> None:
    e = fake_entry(tmp_path / "e", recipe())
    (e.dir / IMAGE_FILE).unlink()
    assert read_entry(e.dir) is None
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / MANIFEST_FILE).write_text("{not json")
    assert read_entry(tmp_path / "junk") is None


def test_same_hash_is_reused_without_touching_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = recipe()
    fake_entry(entry_dir(tmp_path, r), r)

    def no_host(*a: object, **k: object) -> None:
        raise AssertionError("a cache hit must not check or run anything")

    monkeypatch.setattr(build_mod, "check_build_host", no_host)
    res = build_image(r, entry_dir(tmp_path, r))
    assert res.cached and res.entry.manifest.recipe_hash == r.digest()
    monkeypatch.chdir(tmp_path)
    relative = build_image(r, Path(entry_dir(tmp_path, r).name))
    assert relative.entry.root().path.is_absolute()


def test_output_dir_holding_something_else_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "out"
    d.mkdir()
    (d / "precious.txt").write_text("x")
    with pytest.raises(UserError, match="not a kvmlab image"):
        build_image(recipe(), d)
    assert (d / "precious.txt").exists()


def test_list_select_and_remove(tmp_path: Path) -> None:
    a, b = recipe(), recipe(packages=["gdb"])
    ea = fake_entry(entry_dir(tmp_path, a), a, built_at=1.0)
    eb = fake_entry(entry_dir(tmp_path, b), b, built_at=2.0)
    (tmp_path / ".t-0123.tmp-999999").mkdir()  # a build in progress is not listed
    assert [e.dir for e in list_entries(tmp_path)] == [eb.dir, ea.dir]
    assert select_entries([ea, eb], b.digest()[:6]) == [eb]
    assert select_entries([ea, eb], "t") == [ea, eb]
    assert select_entries([ea, eb], "abc") == []  # hash prefixes need 4+ digits
    with pytest.raises(UserError, match="no cached image matches 'zzzz'"):
        remove_entries(["zzzz", "t"], tmp_path)
    assert ea.dir.exists() and eb.dir.exists()  # nothing deleted on a bad selector
    removed = remove_entries([ea.dir.name], tmp_path)
    assert [e.dir for e in removed] == [ea.dir]
    assert not ea.dir.exists() and eb.dir.exists()
    remove_entries([], tmp_path, all_=True)
    assert list_entries(tmp_path) == []
    assert not (tmp_path / ".t-0123.tmp-999999").exists()  # --all also sweeps dead builds


def test_sweep_removes_only_dead_builders_dirs(tmp_path: Path) -> None:
    dead = tmp_path / ".img.tmp-999999999"
    live = tmp_path / f".img.tmp-{os.getpid()}"
    other = tmp_path / ".other.tmp-999999999"
    for d in (dead, live, other):
        (d / "rootfs").mkdir(parents=True)
    assert sweep_stale(tmp_path, "img") == [dead]
    assert live.exists() and other.exists()
    assert sweep_stale(tmp_path) == [other]
    assert live.exists()


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_bad_recipe_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("suite: bookworm\nextra_packages: [gdb]\n")
    rc = cli.main(["image", "build", str(p), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "unknown key 'extra_packages'" in err and "bad.yaml" in err
    assert not (tmp_path / "cache").exists()


def test_cli_list_and_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = recipe()
    fake_entry(entry_dir(tmp_path, r), r)
    assert cli.main(["image", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert r.digest()[:12] in out and "(1 in" in out
    assert cli.main(["image", "rm", "--cache-dir", str(tmp_path)]) == 2
    assert cli.main(["image", "rm", "nope", "--cache-dir", str(tmp_path)]) == 2
    assert cli.main(["image", "rm", "t", "--cache-dir", str(tmp_path)]) == 0
    assert cli.main(["image", "list", "--cache-dir", str(tmp_path)]) == 0
    assert "no images" in capsys.readouterr().out


def test_default_cache_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvmlab.images import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "kvmlab" / "images"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "kvmlab" / "images"


def test_config_error_is_a_user_error() -> None:
    assert issubclass(ConfigError, UserError)


def test_cli_build_to_an_output_dir_reuses_a_matching_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kvmlab.images import load_recipe

    p = tmp_path / "mine.yaml"
    p.write_text("mirror: http://mirror.example/debian\npackages: [strace]\n")
    r = load_recipe(str(p))
    out = tmp_path / "out"
    fake_entry(out, r)
    assert cli.main(["image", "build", str(p), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("mine: cached") and str(out / IMAGE_FILE) in text
