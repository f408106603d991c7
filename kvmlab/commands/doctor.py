"""``kvmlab doctor``: what this host can do, each line OK or missing with the fix."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from kvmlab import checks, proc
from kvmlab.config import cache_dir, load_config
from kvmlab.errors import KvmlabError, UserError
from kvmlab.images.recipe import recipe_dirs
from kvmlab.kernel import distcc
from kvmlab.kernel.config import fragment_dirs
from kvmlab.vmm.accel import resolve_accel
from kvmlab.vmm.host import Host, open_connection
from kvmlab.vmm.host_accel import domain_types, resolve_host_accel
from kvmlab.vmm.modules import kernel_release
from kvmlab.vmm.spec import Accel
from kvmlab.vmm.storage import POOL_NAME

#: Free disk below which builds and images will fail, bytes.
MIN_FREE_DISK = 20 * 2**30


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check what this host can do")
    p.add_argument("--conf", type=Path, help="kvmlab YAML config file")
    p.add_argument("--kernel", type=Path, help="bzImage to probe KVM with (default: a cloud kernel in /boot)")
    p.add_argument("--host", metavar="URI",
                   help="check a libvirt host instead, e.g. qemu+ssh://root@lab1/system")
    p.set_defaults(func=run)


def _line(ok: bool, what: str, detail: str, fix: str = "") -> bool:
    status = "OK     " if ok else "MISSING"
    tail = f"  -> {fix}" if (fix and not ok) else ""
    print(f"{status} {what}: {detail}{tail}")
    return ok


def _probe_kernel(given: Path | None) -> Path | None:
    if given is not None:
        checks.input_file(given, "--kernel")
        if kernel_release(given) is None:
            raise UserError(f"--kernel {given}: not a bootable x86 bzImage")
        return given
    found = sorted(Path("/boot").glob("vmlinuz-*"))
    return found[-1] if found else None


def run(args: argparse.Namespace) -> int:
    if args.host:
        ok = check_lab_host(args.host, kernel=_probe_kernel(args.kernel), fresh=args.kernel is not None)
        return 0 if ok else 1
    cfg = load_config(args.conf)
    ok = True
    qemu = shutil.which(cfg.vm.qemu)
    if qemu:
        version = proc.run([qemu, "--version"], timeout=10).stdout.splitlines()[0]
        _line(True, "qemu", f"{qemu} ({version})")
    else:
        ok = _line(False, "qemu", f"{cfg.vm.qemu} not found", "bash scripts/setup.sh (qemu-system-x86)")
    kvm_dev = os.access("/dev/kvm", os.R_OK | os.W_OK)
    kernel = _probe_kernel(args.kernel)
    if qemu and kernel is not None:
        # A kernel given is a request to probe now, not to be told an old answer.
        fresh = args.kernel is not None
        choice = resolve_accel(Accel.AUTO, qemu=cfg.vm.qemu, kernel=kernel, cache_dir=cache_dir(),
                               fresh=fresh)
        how = f"probed now with {kernel.name}: " if fresh else ""
        works = choice.accel is Accel.KVM
        _line(
            works, "kvm",
            f"{'works' if works else 'not usable'} ({how}"
            f"{choice.reason}; /dev/kvm "
            f"{'accessible' if kvm_dev else 'missing'})"
            + ("" if works else f"; TCG will be used, timeouts x{choice.scale:.0f}"),
            "enable (nested) virtualisation on this host for KVM speed",
        )
    else:
        _line(False, "kvm", "not probed (no qemu or no kernel to boot)", "pass --kernel bzImage")
    try:
        conn = open_connection(cfg.vm.uri, 30.0)
        try:
            _line(True, "libvirt", f"{cfg.vm.uri} reachable (libvirt {_version(conn.getLibVersion())})")
        finally:
            conn.close()
    except KvmlabError as e:
        fix = "start libvirtd (bash scripts/setup.sh) or use vm.backend: qemu"
        ok = _line(False, "libvirt", str(e), fix) and ok
    for tool, pkg in (("busybox", "busybox-static"), ("sshd", "openssh-server"), ("qemu-img", "qemu-utils"),
                      ("debootstrap", "debootstrap"), ("gcc", "build-essential"), ("ccache", "ccache")):
        path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
        ok = _line(path is not None, tool, path or "not found", f"apt-get install {pkg}") and ok
    try:
        frags = ", ".join(map(str, fragment_dirs(cfg.kernel.fragments_path)))
        recipes = ", ".join(map(str, recipe_dirs(cfg.images.recipes_path)))
        _line(True, "data", f"kernel configs {frags}; image recipes {recipes}")
    except KvmlabError as e:
        ok = _line(False, "data", str(e), "fix or unset that directory (README: Files and settings)") and ok
    ok = _check_compile_hosts(cfg.kernel.distcc_hosts) and ok
    where = cache_dir()
    probe = where if where.exists() else Path.home()
    free = shutil.disk_usage(probe).free
    ok = _line(free >= MIN_FREE_DISK, "disk", f"{free / 2**30:.0f} GiB free at {probe}",
               "free disk space (kernel builds need ~10 GiB each tree)") and ok
    return 0 if ok else 1


def _check_compile_hosts(entries: tuple[str, ...]) -> bool:
    """``kernel.distcc_hosts``: distcc here, and each host's distccd answering."""
    try:
        hosts = distcc.parse_hosts(entries)
    except KvmlabError as e:
        return _line(False, "distcc", str(e), "fix kernel.distcc_hosts in the config file")
    if not hosts:
        return True
    ok = _line(shutil.which("distcc") is not None, "distcc", shutil.which("distcc") or "not found",
               "apt-get install distcc")
    for h in hosts:
        why = distcc.reachable(h)
        ok = _line(why is None, f"compile host {h.host}:{h.port}",
                   f"distccd answers ({h.slots} slots)" if why is None else f"no distccd: {why}",
                   "start distccd there (--allow this machine) or drop it from kernel.distcc_hosts") and ok
    return ok


def _version(n: int) -> str:
    return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}"


#: Free space in a host's kvmlab pool below which doctor warns, bytes.
MIN_HOST_FREE = 10 * 2**30


def check_lab_host(uri: str, *, kernel: Path | None = None, fresh: bool = False) -> bool:
    """Check a libvirt host kvmlab is to run VMs on: one line per check,
    with what to do about a problem. True when everything is usable (KVM
    not being usable there is a line, not a failure: VMs run under TCG).
    ``kernel``: boot it there to see whether KVM really works (``fresh``:
    even when an answer is remembered)."""
    host = Host(uri, capacity=1)
    try:
        try:
            conn = host.conn()
        except KvmlabError as e:
            fix = "start libvirtd"
            if not host.address.local:
                fix = (f"check that sshd runs there, your key logs in (ssh {host.address.label} true) "
                       "and libvirtd runs (libvirt-daemon-system)")
            return _line(False, "libvirt", str(e), fix)
        ok = _line(True, "libvirt", f"{host.label}: libvirt {_version(conn.getLibVersion())}, "
                   f"{conn.getType()} {_version(conn.getVersion())}")
        types = domain_types(conn.getCapabilities())
        ok = _line(bool(types), "domain type", ", ".join(types) or "no x86_64 qemu/kvm guests",
                   "install qemu-system-x86 on the host") and ok
        if types and "kvm" not in types:
            print("NOTE    kvm: the host has no KVM: VMs there run under TCG")
        try:
            host.storage.upload(_probe_file(), "probe", shared=False)  # removed by host.close()
            # No pool object outlives this line: each holds the connection open.
            _, _, _, available = host.storage.pool().info()
            ok = _line(True, "storage pool", f"{POOL_NAME} at {host.storage.pool_path()} is writable") and ok
            _line(True, "volume cache", f"{host.storage.cache().summary()} (kvmlab host gc URI collects it)")
            ok = _line(available >= MIN_HOST_FREE, "free space", f"{available / 2**30:.1f} GiB in the pool",
                       "free disk space on the host (a disk image and each VM's overlay go there)") and ok
        except KvmlabError as e:
            ok = _line(False, "storage pool", str(e),
                       "let the connecting user create a directory pool in libvirt's images dir") and ok
        if kernel is None:
            _line(False, "kvm", "not probed (no kernel to boot)", "pass --kernel bzImage")
        elif types:
            try:
                choice = resolve_host_accel(host, kernel, cache_dir=cache_dir(), fresh=fresh)
            except KvmlabError as e:
                ok = _line(False, "kvm", f"probe failed: {e}", "see the lines above") and ok
            else:
                works = choice.accel is Accel.KVM
                how = f"probed now with {kernel.name}: " if fresh else ""
                _line(works, "kvm", f"{'works' if works else 'not usable'} ({how}{choice.reason})"
                      + ("" if works else f"; VMs there run under TCG, timeouts x{choice.scale:.0f}"),
                      "enable (nested) virtualisation on the host for KVM speed")
        if host.ssh is not None:
            try:
                allowed, detail = host.ssh.forwarding_allowed(timeout=10.0)
            except KvmlabError as e:
                allowed, detail = False, str(e)
            ok = _line(allowed, "ssh forwarding", detail,
                       "set AllowTcpForwarding yes (or local) in the host's sshd_config") and ok
        return ok
    finally:
        host.close()


def _probe_file() -> Path:
    d = cache_dir() / "doctor"
    d.mkdir(parents=True, exist_ok=True)
    f = d / "probe"
    f.write_bytes(b"kvmlab doctor probe\n")
    return f
