"""Build a guest disk image from a recipe: debootstrap, configure, ext4, qcow2.

The build runs in a temporary directory next to its destination and is renamed
into place only when complete, so a failed or interrupted build never replaces
a good image. No loop devices are used and kvmlab mounts nothing itself
(``mkfs.ext4 -d`` fills the filesystem from a directory); debootstrap mounts
``/proc`` and ``/sys`` inside the tree while it runs, and those are unmounted
in ``finally`` (also on SIGTERM, which is turned into an interrupt) before the
temporary directory is deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmlab import proc, signals
from kvmlab.errors import (
    ConfigError,
    DiskFullError,
    HostToolError,
    InfraError,
    ProcessError,
    UserError,
)
from kvmlab.images.configure import REQUIRED_PACKAGES, configure, parse_dpkg_status
from kvmlab.images.recipe import BUILDER_VERSION, Recipe
from kvmlab.vmm.root import GuestRoot, RootKind

log = logging.getLogger(__name__)

IMAGE_FILE = "image.qcow2"
KEY_FILE = "id_ed25519"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1

#: Host programs a build needs.
REQUIRED_TOOLS: tuple[str, ...] = ("debootstrap", "mkfs.ext4", "qemu-img", "ssh-keygen", "chroot")

_TMP_MARK = ".tmp-"
_OLD_MARK = ".old-"
_STALE_RE = re.compile(r"^\.(.+)(?:\.tmp-|\.old-)([0-9]+)$")


class NeedRootError(UserError):
    """The build needs root (debootstrap creates device nodes and owns files as root)."""


class MirrorError(InfraError):
    """The Debian mirror cannot be reached."""


@dataclass(frozen=True)
class BuildTimeouts:
    """Timeouts in seconds for the steps of one build."""

    mirror: float = 20.0
    """Fetching the suite's Release file, to check the mirror answers."""
    debootstrap: float = 1800.0
    """The whole debootstrap run (about a minute for bookworm minbase here)."""
    tool: float = 600.0
    """mkfs.ext4, qemu-img convert, ssh-keygen, systemctl in the chroot."""


@dataclass(frozen=True)
class ImageManifest:
    """What a built image is and how it was made; saved as ``manifest.json``."""

    name: str
    recipe_hash: str
    recipe: dict[str, Any]
    packages: tuple[tuple[str, str], ...]
    """``(package, version)`` of everything installed."""
    image_bytes: int
    """Virtual size of the disk (the filesystem size)."""
    qcow2_bytes: int
    """Size of the qcow2 file on the host."""
    rootfs_bytes: int
    """Bytes of files in the root tree before it became a filesystem."""
    build_seconds: float
    phases: dict[str, float]
    """Seconds per build step."""
    built_at: float
    """Unix time the build finished."""
    cmdline: tuple[str, ...]
    builder_version: int = BUILDER_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "recipe_hash": self.recipe_hash,
            "recipe": self.recipe,
            "packages": [{"name": n, "version": v} for n, v in self.packages],
            "package_count": len(self.packages),
            "sizes": {
                "image_bytes": self.image_bytes,
                "qcow2_bytes": self.qcow2_bytes,
                "rootfs_bytes": self.rootfs_bytes,
            },
            "build_seconds": round(self.build_seconds, 3),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "built_at": self.built_at,
            "cmdline": list(self.cmdline),
            "builder_version": self.builder_version,
            "image": IMAGE_FILE,
            "ssh_key": KEY_FILE,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImageManifest:
        sizes = d["sizes"]
        return cls(
            name=str(d["name"]),
            recipe_hash=str(d["recipe_hash"]),
            recipe=dict(d["recipe"]),
            packages=tuple((str(p["name"]), str(p["version"])) for p in d["packages"]),
            image_bytes=int(sizes["image_bytes"]),
            qcow2_bytes=int(sizes["qcow2_bytes"]),
            rootfs_bytes=int(sizes["rootfs_bytes"]),
            build_seconds=float(d["build_seconds"]),
            phases={str(k): float(v) for k, v in d.get("phases", {}).items()},
            built_at=float(d["built_at"]),
            cmdline=tuple(str(w) for w in d["cmdline"]),
            builder_version=int(d.get("builder_version", 0)),
        )


@dataclass(frozen=True)
class ImageEntry:
    """A complete image directory: the qcow2, its SSH key and its manifest."""

    dir: Path
    manifest: ImageManifest

    @property
    def image(self) -> Path:
        return self.dir / IMAGE_FILE

    @property
    def ssh_key(self) -> Path:
        return self.dir / KEY_FILE

    def root(self) -> GuestRoot:
        """This image as a guest root (boot it through an overlay, never directly)."""
        return GuestRoot(
            name=self.manifest.name,
            kind=RootKind.DISK,
            path=self.image,
            ssh_key=self.ssh_key,
            cmdline=self.manifest.cmdline,
        )


@dataclass(frozen=True)
class BuildResult:
    entry: ImageEntry
    cached: bool
    """True when an existing image for the same recipe hash was reused."""
    seconds: float
    """Wall time of this call."""


def read_entry(d: Path) -> ImageEntry | None:
    """The image in directory ``d``, or None when it is not a complete image."""
    try:
        data = json.loads((d / MANIFEST_FILE).read_text())
        manifest = ImageManifest.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (d / IMAGE_FILE).is_file() or not (d / KEY_FILE).is_file():
        return None
    return ImageEntry(d, manifest)


# --- checks before anything is written ---------------------------------------------------------


def check_build_host(*, need_root: bool = True) -> None:
    """Fail with one line when a tool is missing or we are not root."""
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            raise HostToolError(f"{tool}: not found (image builds need debootstrap, e2fsprogs, qemu-utils)")
    if need_root and os.geteuid() != 0:
        raise NeedRootError(
            "building an image needs root (debootstrap makes device nodes and root-owned files)"
        )


def check_mirror(recipe: Recipe, timeout: float) -> None:
    """Fail with one line when the mirror does not serve the recipe's suite."""
    url = f"{recipe.mirror}/dists/{recipe.suite}/Release"
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise ConfigError(f"suite {recipe.suite!r} not found on mirror {recipe.mirror} ({url})") from None
        raise MirrorError(f"mirror {recipe.mirror} answered {e.code} for {url}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise MirrorError(f"mirror {recipe.mirror} unreachable: {reason}") from None


def check_space(d: Path, need_bytes: int) -> None:
    free = shutil.disk_usage(d).free
    if free < need_bytes:
        raise DiskFullError(
            f"{d}: {free // 2**20} MiB free, a build needs at least {need_bytes // 2**20} MiB"
        )


# --- mounts and temporary directories ----------------------------------------------------------


def _unescape_mount(path: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def mounts_under(d: Path, mountinfo: str | None = None) -> list[Path]:
    """Mount points at or below ``d``, deepest first."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    base = str(d.resolve()) if d.exists() else str(d)
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape_mount(fields[4])
        if point == base or point.startswith(base + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(d: Path) -> None:
    """Unmount everything at or below ``d``; InfraError when something stays."""
    for point in mounts_under(d):
        log.info("unmounting %s left by the build", point)
        proc.run(["umount", "-l", point], timeout=60, check=False)
    left = mounts_under(d)
    if left:
        raise InfraError(f"could not unmount {left[0]}; not deleting {d}")


def remove_tree(d: Path) -> None:
    """Delete a build directory, but never through a mount point."""
    if not d.exists() and not d.is_symlink():
        return
    unmount_all_under(d)
    shutil.rmtree(d, ignore_errors=False)


def sweep_stale(parent: Path, dest_name: str | None = None) -> list[Path]:
    """Remove temporary build dirs (of ``dest_name``, or of any image) whose
    builder process is gone; returns what was removed."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        m = _STALE_RE.match(p.name)
        if m is None or (dest_name is not None and m.group(1) != dest_name):
            continue
        if not proc.pid_alive(int(m.group(2))):
            log.info("removing %s left by an interrupted build", p)
            remove_tree(p)
            removed.append(p)
    return removed


# --- the build ---------------------------------------------------------------------------------


def debootstrap_argv(recipe: Recipe, target: Path) -> list[str]:
    """First stage only (download and unpack); the second stage runs in the
    tree after dpkg is told not to fsync (see :func:`_make_tree`)."""
    packages = list(dict.fromkeys((*REQUIRED_PACKAGES, *recipe.packages)))
    return [
        "debootstrap",
        "--foreign",
        f"--variant={recipe.variant}",
        "--components=main",
        "--include=" + ",".join(packages),
        recipe.suite,
        str(target),
        recipe.mirror,
    ]


def mkfs_argv(recipe: Recipe, tree: Path, raw: Path) -> list[str]:
    return [
        "mkfs.ext4", "-q", "-F", "-L", "kvmlab-root", "-d", str(tree), str(raw), f"{recipe.size // 1024}k",
    ]  # fmt: skip


def qemu_img_argv(raw: Path, qcow2: Path) -> list[str]:
    return ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)]


def debootstrap_failure(output: str, log_text: str) -> str:
    """One line saying why debootstrap failed, from its output and its log file."""
    for text in (output, log_text):
        for line in text.splitlines():
            if "No space left on device" in line:
                return line.strip()
    errors = [ln.strip() for ln in output.splitlines() if ln.startswith("E:")]
    if errors:
        return errors[0]
    tail = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    if tail:
        return tail[-1]
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


#: Free bytes below which a failed step is blamed on a full disk.
_NEARLY_FULL = 16 * 2**20


def _is_enospc(text: str) -> bool:
    return "No space left on device" in text or "ENOSPC" in text


def tree_bytes(root: Path) -> int:
    """Sum of the sizes of regular files under ``root`` (not following links)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if not os.path.islink(os.path.join(dirpath, name)):
                    total += st.st_size
    return total


def _run_step(argv: Sequence[str], timeout: float, what: str) -> None:
    try:
        proc.run(argv, timeout=timeout)
    except ProcessError as e:
        if _is_enospc(e.output_tail):
            raise DiskFullError(f"{what}: no space left on device") from None
        raise


#: dpkg setting used only while the image is built: the tree is thrown away if
#: the build fails, so dpkg's per-file fsync only costs time (tens of seconds).
_UNSAFE_IO = Path("etc/dpkg/dpkg.cfg.d/kvmlab-build-unsafe-io")


def _make_tree(recipe: Recipe, tree: Path, timeouts: BuildTimeouts) -> None:
    deadline = time.monotonic() + timeouts.debootstrap
    try:
        proc.run(debootstrap_argv(recipe, tree), timeout=timeouts.debootstrap)
        (tree / _UNSAFE_IO).parent.mkdir(parents=True, exist_ok=True)
        (tree / _UNSAFE_IO).write_text("force-unsafe-io\n")
        left = max(deadline - time.monotonic(), 1.0)
        proc.run(["chroot", str(tree), "/debootstrap/debootstrap", "--second-stage"], timeout=left)
        (tree / _UNSAFE_IO).unlink()
    except ProcessError as e:
        log_text = ""
        with contextlib.suppress(OSError):
            log_text = (tree / "debootstrap" / "debootstrap.log").read_text(errors="replace")[-20000:]
        reason = debootstrap_failure(e.output_tail, log_text)
        log.debug("debootstrap log tail:\n%s", log_text[-4000:])
        if _is_enospc(reason):
            raise DiskFullError(f"debootstrap: {reason}") from None
        free = shutil.disk_usage(tree).free
        if free < _NEARLY_FULL:
            # Tools that fail on a full disk do not always say so (or cannot log it).
            raise DiskFullError(
                f"debootstrap failed with {free // 2**20} MiB left in {tree.parent}: no space left on device"
            ) from None
        if e.timed_out:
            raise InfraError(f"debootstrap timed out after {timeouts.debootstrap:.0f} s") from None
        raise InfraError(f"debootstrap {recipe.suite} from {recipe.mirror} failed: {reason}") from None
    finally:
        # debootstrap mounts /proc and /sys in the tree; a failure or a kill can leave them.
        unmount_all_under(tree)


def _build_into(recipe: Recipe, work: Path, timeouts: BuildTimeouts) -> ImageManifest:
    started = time.monotonic()
    phases: dict[str, float] = {}
    tree = work / "rootfs"
    tree.mkdir()

    t = time.monotonic()
    log.info("debootstrap %s from %s (about a minute)", recipe.suite, recipe.mirror)
    _make_tree(recipe, tree, timeouts)
    phases["debootstrap"] = time.monotonic() - t

    t = time.monotonic()
    key = work / KEY_FILE
    _run_step(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kvmlab-{recipe.name}", "-f", str(key)],
        timeouts.tool,
        "ssh-keygen",
    )
    key.chmod(0o600)
    pub = (work / (KEY_FILE + ".pub")).read_text()

    def systemctl(args: Sequence[str]) -> None:
        _run_step(["chroot", str(tree), "systemctl", *args], timeouts.tool, "systemctl")

    configure(tree, recipe, authorized_key=pub, machine_id=uuid.uuid4().hex, systemctl=systemctl)
    packages = tuple(parse_dpkg_status((tree / "var/lib/dpkg/status").read_text()))
    rootfs_bytes = tree_bytes(tree)
    phases["configure"] = time.monotonic() - t

    t = time.monotonic()
    raw = work / "image.raw"
    with raw.open("wb") as fh:
        fh.truncate(recipe.size)
    _run_step(mkfs_argv(recipe, tree, raw), timeouts.tool, "mkfs.ext4")
    phases["mkfs"] = time.monotonic() - t
    t = time.monotonic()
    remove_tree(tree)
    phases["cleanup"] = time.monotonic() - t

    t = time.monotonic()
    _run_step(qemu_img_argv(raw, work / IMAGE_FILE), timeouts.tool, "qemu-img convert")
    raw.unlink()
    phases["qcow2"] = time.monotonic() - t

    manifest = ImageManifest(
        name=recipe.name,
        recipe_hash=recipe.digest(),
        recipe=recipe.canonical(),
        packages=packages,
        image_bytes=recipe.size,
        qcow2_bytes=(work / IMAGE_FILE).stat().st_size,
        rootfs_bytes=rootfs_bytes,
        build_seconds=time.monotonic() - started,
        phases=phases,
        built_at=time.time(),
        cmdline=recipe.kernel_cmdline(),
    )
    (work / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return manifest


#: Free space a build needs before it starts: the debootstrapped tree (~300 MB
#: for minbase plus a few tools) exists alongside the filled raw image and the qcow2.
MIN_FREE_BYTES = 1536 * 2**20


def build_image(
    recipe: Recipe,
    dest: Path,
    *,
    force: bool = False,
    timeouts: BuildTimeouts = BuildTimeouts(),
    min_free_bytes: int = MIN_FREE_BYTES,
) -> BuildResult:
    """Build ``recipe`` into directory ``dest`` (image, key, manifest), or reuse it.

    An existing complete image at ``dest`` built from the same recipe hash is
    reused unless ``force``. The new image is renamed into place only once it
    is complete; on any failure ``dest`` is left as it was.
    """
    started = time.monotonic()
    dest = dest.absolute()  # GuestRoot paths must not depend on the caller's cwd
    digest = recipe.digest()
    try:
        existing = read_entry(dest)
        if existing is not None and existing.manifest.recipe_hash == digest and not force:
            log.info("image %s: cached at %s", recipe.name, dest)
            return BuildResult(existing, cached=True, seconds=time.monotonic() - started)
        occupied = dest.exists() and existing is None and any(dest.iterdir())
    except PermissionError as e:
        raise UserError(f"{e.filename or dest}: permission denied") from None
    if occupied:
        raise UserError(f"{dest} exists and is not a kvmlab image; choose another output directory")

    check_build_host()
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(dest.parent, dest.name)
    check_space(dest.parent, min_free_bytes)
    check_mirror(recipe, timeouts.mirror)

    work = dest.parent / f".{dest.name}{_TMP_MARK}{os.getpid()}"
    remove_tree(work)
    work.mkdir()
    try:
        with signals.unwinding():  # SIGTERM: the finally below cleans up
            try:
                _build_into(recipe, work, timeouts)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise DiskFullError(f"{e.filename or dest.parent}: no space left on device") from None
                raise
            _replace(work, dest)
    finally:
        remove_tree(work)
    entry = read_entry(dest)
    if entry is None:
        raise InfraError(f"{dest}: built image is incomplete")
    log.info("image %s: built in %.1f s at %s", recipe.name, entry.manifest.build_seconds, dest)
    return BuildResult(entry, cached=False, seconds=time.monotonic() - started)


def _replace(work: Path, dest: Path) -> None:
    """Rename the finished build over ``dest``; the old image goes only after."""
    old = dest.parent / f".{dest.name}{_OLD_MARK}{os.getpid()}"
    if dest.exists():
        os.rename(dest, old)
    try:
        os.rename(work, dest)
    except OSError:
        if old.exists():
            os.rename(old, dest)
        raise
    if old.exists():
        remove_tree(old)
