"""The image builder against the real tools: debootstrap, mkfs.ext4, qemu-img,
the host's Debian mirror, and the bad-input paths of the issue."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlab import cli, proc
from kvmlab.errors import DiskFullError
from kvmlab.images import BuildResult, Recipe, build_cached, build_image, entry_dir, parse_recipe
from kvmlab.images.build import IMAGE_FILE, REQUIRED_TOOLS, mounts_under
from tests.conftest import REPO
from tests.fixtures_images import image_build_skip_reason

pytestmark = pytest.mark.slow


def debugfs_cat(raw: Path, guest_path: str) -> str:
    return proc.run(["debugfs", "-R", f"cat {guest_path}", str(raw)], timeout=60).stdout


def test_default_image_is_complete(
    bookworm_image: BuildResult, bookworm_recipe: Recipe, tmp_path: Path
) -> None:
    e = bookworm_image.entry
    m = e.manifest
    assert m.recipe_hash == bookworm_recipe.digest()
    names = {n for n, _ in m.packages}
    assert {"openssh-server", "systemd-sysv", "udev", "strace", "iproute2"} <= names
    assert m.build_seconds > 0 and m.phases["debootstrap"] > 0
    assert m.cmdline == bookworm_recipe.kernel_cmdline()
    on_disk = json.loads((e.dir / "manifest.json").read_text())
    assert on_disk["sizes"]["qcow2_bytes"] == e.image.stat().st_size
    assert stat.S_IMODE(e.ssh_key.stat().st_mode) == 0o600
    assert e.ssh_key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")

    info = json.loads(proc.run(["qemu-img", "info", "--output=json", str(e.image)], timeout=60).stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == bookworm_recipe.size
    assert "backing-filename" not in info

    # Look inside the filesystem without mounting it.
    raw = tmp_path / "disk.raw"
    proc.run(["qemu-img", "convert", "-O", "raw", str(e.image), str(raw)], timeout=300)
    pub = (e.dir / "id_ed25519.pub").read_text().strip()
    assert debugfs_cat(raw, "/root/.ssh/authorized_keys").strip() == pub
    assert debugfs_cat(raw, "/etc/hostname").strip() == bookworm_recipe.hostname
    sysctl = debugfs_cat(raw, "/etc/sysctl.d/90-kvmlab.conf")
    for k, v in bookworm_recipe.sysctls:
        assert f"{k} = {v}\n" in sysctl
    assert "Name=e*" in debugfs_cat(raw, "/etc/systemd/network/20-kvmlab-dhcp.network")
    stat_out = proc.run(
        ["debugfs", "-R", "stat /etc/systemd/system/multi-user.target.wants/ssh.service", str(raw)],
        timeout=60,
    )
    assert "Type: symlink" in stat_out.stdout
    assert debugfs_cat(raw, "/etc/motd") == bookworm_recipe.files[0].content


def test_second_build_is_a_cache_hit(
    bookworm_image: BuildResult,
    bookworm_recipe: Recipe,
    image_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    again = build_cached(bookworm_recipe, image_cache)
    assert again.cached
    assert again.entry == bookworm_image.entry
    assert again.seconds < 5  # no debootstrap ran (a cold build takes minutes)
    rc = cli.main(["image", "build", "bookworm", "--cache-dir", str(image_cache)])
    assert rc == 0
    assert "bookworm: cached" in capsys.readouterr().out


# --- bad input -----------------------------------------------------------------------------------


def need_builder() -> None:
    reason = image_build_skip_reason()
    if reason:
        pytest.skip(reason)


def need_mirror(r: Recipe) -> None:
    reason = image_build_skip_reason(r)
    if reason:
        pytest.skip(reason)


def recipe_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def only_one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def assert_nothing_left(cache: Path) -> None:
    if not cache.exists():
        return
    assert mounts_under(cache) == [] or mounts_under(cache) == [cache]  # the test's own tmpfs
    left = list(cache.iterdir())
    assert left == [], f"left in the cache: {left}"


def test_unreachable_mirror(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_builder()
    p = recipe_file(tmp_path, "mirror: http://127.0.0.1:9/debian\n")
    cache = tmp_path / "cache"
    rc = cli.main(["image", "build", str(p), "--cache-dir", str(cache)])
    line = only_one_line(capsys.readouterr().err)
    assert rc == 3
    assert "mirror http://127.0.0.1:9/debian unreachable" in line
    assert_nothing_left(cache)


def test_suite_missing_on_the_mirror(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = recipe_file(tmp_path, "suite: nosuchsuite\n")
    need_mirror(parse_recipe({}, name="r", source="-", default_mirror=_host_mirror()))
    cache = tmp_path / "cache"
    rc = cli.main(["image", "build", str(p), "--cache-dir", str(cache)])
    line = only_one_line(capsys.readouterr().err)
    assert rc == 2
    assert "suite 'nosuchsuite' not found on mirror" in line
    assert_nothing_left(cache)


def _host_mirror() -> str:
    from kvmlab.images.recipe import host_mirror

    m = host_mirror()
    if m is None:
        pytest.skip("the host's apt sources name no Debian mirror")
    return m


def test_missing_debootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the root check comes first when not root")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in REQUIRED_TOOLS:
        found = shutil.which(tool)
        if tool != "debootstrap" and found:
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    cache = tmp_path / "cache"
    rc = cli.main(["image", "build", "--cache-dir", str(cache)])
    line = only_one_line(capsys.readouterr().err)
    assert rc == 3
    assert "debootstrap: not found" in line
    assert_nothing_left(cache)


def test_not_root() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the CLI as an unprivileged user")
    # pytest's tmp_path is private to root; the unprivileged run needs a world-writable place.
    base = Path(tempfile.mkdtemp(prefix="kvmlab-nonroot-"))
    try:
        base.chmod(0o777)
        cache = base / "cache"
        r = proc.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-m", "kvmlab.cli", "image", "build", "--cache-dir", str(cache)],
            cwd=REPO, timeout=120, check=False,
            env={**os.environ, "HOME": str(base), "XDG_CACHE_HOME": str(base), "XDG_CONFIG_HOME": str(base),
                 "XDG_STATE_HOME": str(base), "XDG_DATA_HOME": str(base), "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        if r.returncode != 2 and "Permission denied" in r.stderr:
            pytest.skip(f"kvmlab is not readable by nobody: {r.stderr.strip().splitlines()[-1]}")
        line = only_one_line(r.stderr)
        assert r.returncode == 2
        assert "needs root" in line
        assert not cache.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs: too small for any Debian image."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "small"
    d.mkdir()
    r = proc.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(d)], timeout=30, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.output.strip()}")
    try:
        yield d
    finally:
        proc.run(["umount", "-l", str(d)], timeout=30, check=False)


def test_full_disk_before_the_build(small_tmpfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_builder()
    rc = cli.main(["image", "build", "--cache-dir", str(small_tmpfs)])
    line = only_one_line(capsys.readouterr().err)
    assert rc == 3
    assert "MiB free" in line
    assert_nothing_left(small_tmpfs)


def test_disk_fills_during_the_build(small_tmpfs: Path, bookworm_recipe: Recipe) -> None:
    need_mirror(bookworm_recipe)
    dest = entry_dir(small_tmpfs, bookworm_recipe)
    with pytest.raises(DiskFullError) as e:
        build_image(bookworm_recipe, dest, min_free_bytes=0)  # skip the early check: really fill it
    assert "no space left on device" in str(e.value).lower()
    assert "\n" not in str(e.value)
    assert_nothing_left(small_tmpfs)


def test_interrupted_build_leaves_no_mounts_or_files(tmp_path: Path, bookworm_recipe: Recipe) -> None:
    """SIGTERM while debootstrap has /proc mounted in the tree: the CLI unmounts
    and deletes everything, and the cache holds no entry."""
    need_mirror(bookworm_recipe)
    cache = tmp_path / "cache"
    cache.mkdir()
    p = proc.spawn(
        [sys.executable, "-m", "kvmlab.cli", "image", "build", "--cache-dir", str(cache)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 600
        while not mounts_under(cache):
            if p.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"debootstrap never mounted anything (exit {p.poll()})")
            time.sleep(0.2)
        os.kill(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        with contextlib.suppress(Exception):
            proc.kill_group(p)
    assert p.returncode == 143, err  # SIGTERM: 128 + 15, as every command
    assert mounts_under(cache) == []
    assert list(cache.iterdir()) == []
    assert not (cache / entry_dir(cache, bookworm_recipe).name / IMAGE_FILE).exists()
