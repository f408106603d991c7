"""syzkaller programs: the options line of a ``repro.syz``, the syz-execprog
flags it maps to, what the kernel must have for them, the checks made before
any VM boots, and the reading of syz-execprog's output afterwards.

Everything here is pure except :func:`check_binaries` (reads ELF headers) and
:func:`host_parse_check` (runs the real syz-execprog on the host *without an
executor*: it parses the program with syzkaller's own parser and stops when it
cannot start the executor, so nothing of the program ever runs on the host).

The options line comes in three spellings, all read here:

* syzbot's dashboard (JSON): ``#{"threaded":true,"repeat":true,"procs":6,"sandbox":"none",...}``
* syz-manager's (Go ``%+v``): ``# {Threaded:true Repeat:true Procs:6 Sandbox:none ... LegacyOptions:{...}}``
* the old one (before 2020): ``#{Threaded:true Collide:true Repeat:true Procs:1 EnableTun:true ...}``

They are turned into syz-execprog flags the way syzbot does when it tests a
reproducer (``pkg/instance``): the sandbox, procs and sandbox_arg of the
options, always ``-repeat=0 -threaded=true`` and no coverage, and exactly the
features the options enable (``-enable=tun,cgroups,...``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kvmlab import owner, proc
from kvmlab.errors import InfraError, UserError

log = logging.getLogger(__name__)


class SyzProgramError(UserError):
    """The syzkaller program or its options line cannot be used as written."""


class SyzBinaryError(UserError):
    """syz-execprog / syz-executor are missing, not executable or for another machine."""


# -- the options line -----------------------------------------------------

#: Fields of syzkaller's csource.Options by their Go name, with their JSON
#: name and type (pkg/csource/options.go).
_FIELDS: dict[str, tuple[str, type]] = {
    "Threaded": ("threaded", bool),
    "Repeat": ("repeat", bool),
    "RepeatTimes": ("repeat_times", int),
    "Procs": ("procs", int),
    "Slowdown": ("slowdown", int),
    "Sandbox": ("sandbox", str),
    "SandboxArg": ("sandbox_arg", int),
    "Leak": ("leak", bool),
    "NetInjection": ("tun", bool),
    "NetDevices": ("netdev", bool),
    "NetReset": ("resetnet", bool),
    "Cgroups": ("cgroups", bool),
    "BinfmtMisc": ("binfmt_misc", bool),
    "CloseFDs": ("close_fds", bool),
    "KCSAN": ("kcsan", bool),
    "DevlinkPCI": ("devlinkpci", bool),
    "NicVF": ("nicvf", bool),
    "USB": ("usb", bool),
    "VhciInjection": ("vhci", bool),
    "Wifi": ("wifi", bool),
    "IEEE802154": ("ieee802154", bool),
    "Sysctl": ("sysctl", bool),
    "Swap": ("swap", bool),
    "UseTmpDir": ("tmpdir", bool),
    "HandleSegv": ("segv", bool),
    "Trace": ("trace", bool),
    "Collide": ("collide", bool),
    "Fault": ("fault", bool),
    "FaultCall": ("fault_call", int),
    "FaultNth": ("fault_nth", int),
}
#: Old spellings of the Go-style line (before the options were renamed).
_LEGACY_NAMES = {"EnableTun": "NetInjection", "EnableCgroups": "Cgroups", "EnableNetdev": "NetDevices",
                 "ResetNet": "NetReset"}
#: Old Go-style fields that no longer mean anything.
_IGNORED = {"WaitRepeat", "Debug", "Repro", "LegacyOptions"}
_BY_JSON = {js: go for go, (js, _t) in _FIELDS.items()}

SANDBOXES = ("none", "setuid", "namespace", "android")

#: syz-execprog feature names (-enable/-disable) by the option that asks for them.
FEATURE_OF_OPTION = {
    "NetInjection": "tun",
    "NetDevices": "net_dev",
    "NetReset": "net_reset",
    "Cgroups": "cgroups",
    "BinfmtMisc": "binfmt_misc",
    "CloseFDs": "close_fds",
    "DevlinkPCI": "devlink_pci",
    "NicVF": "nic_vf",
    "USB": "usb",
    "VhciInjection": "vhci",
    "Wifi": "wifi",
    "IEEE802154": "ieee802154",
    "Sysctl": "sysctl",
    "Swap": "swap",
}
ALL_FEATURES = tuple(sorted(FEATURE_OF_OPTION.values()))


@dataclass(frozen=True)
class SyzOptions:
    """A reproducer's options, by syzkaller's Go field names (unset ones absent)."""

    values: Mapping[str, bool | int | str] = field(default_factory=dict)
    spelling: str = "none"
    """``json``, ``go`` (syz-manager's %+v), ``legacy`` or ``none`` (no options line)."""

    def get(self, name: str, default: bool | int | str) -> bool | int | str:
        return self.values.get(name, default)

    def on(self, name: str) -> bool:
        return bool(self.values.get(name, False))


def _convert(name: str, raw: object, typ: type, where: str) -> bool | int | str:
    if typ is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw in ("true", "false"):
            return raw == "true"
    elif typ is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw):
            return int(raw)
    elif isinstance(raw, str):
        return raw
    raise SyzProgramError(f"{where}: option {name} has a bad value {raw!r} (want {typ.__name__})")


def _parse_json(text: str, where: str) -> dict[str, bool | int | str]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise SyzProgramError(f"{where}: options line is not a JSON object")
    out: dict[str, bool | int | str] = {}
    for key, raw in data.items():
        go = _BY_JSON.get(key)
        if go is None:
            log.warning("%s: unknown syzkaller option %r ignored", where, key)
            continue
        out[go] = _convert(go, raw, _FIELDS[go][1], where)
    return out


_GO_TOKEN = re.compile(r"(\w+):(\{[^{}]*\}|\S*)")


def _parse_go(text: str, where: str) -> tuple[dict[str, bool | int | str], str]:
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise SyzProgramError(f"{where}: options line {text.strip()!r} is not {{...}}")
    body = body[1:-1]
    out: dict[str, bool | int | str] = {}
    spelling = "go"
    pos = 0
    for m in _GO_TOKEN.finditer(body):
        if body[pos:m.start()].strip():
            raise SyzProgramError(f"{where}: cannot read {body[pos:m.start()].strip()!r} in the options line")
        pos = m.end()
        key, raw = m.group(1), m.group(2)
        if raw.startswith("{"):  # LegacyOptions:{Collide:false Fault:false ...}
            inner, _ = _parse_go(raw, where)
            out.update(inner)
            continue
        if key in _LEGACY_NAMES:
            key, spelling = _LEGACY_NAMES[key], "legacy"
        if key in _IGNORED:
            spelling = "legacy" if key != "LegacyOptions" else spelling
            continue
        if key not in _FIELDS:
            log.warning("%s: unknown syzkaller option %r ignored", where, key)
            continue
        out[key] = _convert(key, raw, _FIELDS[key][1], where)
    if body[pos:].strip():
        raise SyzProgramError(f"{where}: cannot read {body[pos:].strip()!r} in the options line")
    return out, spelling


def parse_options_line(line: str, *, where: str = "options") -> SyzOptions:
    """Parse one ``#{...}`` / ``# {...}`` line (any of the three spellings)."""
    text = line.strip().lstrip("#").strip()
    if text.startswith('{"') or text == "{}":
        try:
            values, spelling = _parse_json(text, where), "json"
        except json.JSONDecodeError as e:
            raise SyzProgramError(f"{where}: options line is not valid JSON: {e.msg}") from None
    else:
        values, spelling = _parse_go(text, where)
    sandbox = values.get("Sandbox", "")
    if sandbox not in ("", *SANDBOXES):
        raise SyzProgramError(f"{where}: unknown sandbox {sandbox!r} (one of {', '.join(SANDBOXES)})")
    return SyzOptions(values, spelling)


def find_options(program_text: str, *, where: str = "program") -> SyzOptions:
    """The options of a repro.syz: the first ``#{`` / ``# {`` line of its
    leading comment block; no such line gives empty options."""
    for n, raw in enumerate(program_text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("#"):
            break
        if line.lstrip("#").strip().startswith("{"):
            return parse_options_line(line, where=f"{where}:{n}")
    return SyzOptions()


# -- options -> syz-execprog flags -----------------------------------------


def execprog_flags(opts: SyzOptions) -> dict[str, str]:
    """syz-execprog flags for ``opts`` (without ``-executor``), as syzbot
    tests a reproducer: repeat forever, threaded, no coverage, and only the
    features the options ask for."""
    sandbox = str(opts.get("Sandbox", "")) or "none"
    procs = int(opts.get("Procs", 1)) or 1
    features = sorted(FEATURE_OF_OPTION[o] for o in FEATURE_OF_OPTION if opts.on(o))
    flags = {
        "sandbox": sandbox,
        "procs": str(procs),
        "repeat": "0",
        "threaded": "true",
        "cover": "false",
        "enable": ",".join(features),
    }
    if int(opts.get("SandboxArg", 0)):
        flags["sandbox_arg"] = str(opts.get("SandboxArg", 0))
    if int(opts.get("Slowdown", 1)) > 1:
        flags["slowdown"] = str(opts.get("Slowdown", 1))
    return flags


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``--syz-opt K=V`` items as a flag mapping (a leading ``-`` is dropped)."""
    out = {}
    for kv in items:
        k, sep, v = kv.partition("=")
        k = k.strip().lstrip("-")
        if not sep or not k:
            raise UserError(f"--syz-opt {kv!r}: expected K=V (a syz-execprog flag, e.g. procs=6)")
        out[k] = v
    return out


def merge_flags(from_options: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """The command line wins; ``-enable`` and ``-disable`` exclude each other
    (syz-execprog refuses both), so overriding one drops the other."""
    out = dict(from_options)
    if "disable" in overrides:
        out.pop("enable", None)
    if "enable" in overrides:
        out.pop("disable", None)
    out.update(overrides)
    return out


def enabled_features(flags: Mapping[str, str]) -> set[str]:
    """The features syz-execprog turns on for these flags (its
    csource.ParseFeaturesFlags with the default on)."""
    enable, disable = flags.get("enable", "none"), flags.get("disable", "none")
    if enable == "none" and disable == "none":
        return set(ALL_FEATURES)
    if enable != "none" and disable != "none":
        raise UserError("syz-execprog flags: give -enable or -disable, not both")
    if enable == "all" or disable == "":
        return set(ALL_FEATURES)
    if disable == "all" or enable == "":
        return set()
    items = {x.strip() for x in (enable if enable != "none" else disable).split(",") if x.strip()}
    unknown = items - set(ALL_FEATURES)
    if unknown:
        raise UserError(f"syz-execprog flags: unknown feature {sorted(unknown)[0]!r} "
                        f"(known: {', '.join(ALL_FEATURES)})")
    return items if enable != "none" else set(ALL_FEATURES) - items


def render_flags(flags: Mapping[str, str]) -> str:
    return " ".join(f"-{k}={shlex.quote(v)}" for k, v in sorted(flags.items()))


# -- what the kernel needs ------------------------------------------------

#: Kernel options syz-executor needs whatever the program: sandbox_common()
#: opens /proc/self/ns/net and fails without it (SYZFAIL).
ALWAYS_NEEDED = ("CONFIG_NET_NS",)
#: Per sandbox (executor/common_linux.h: do_sandbox_*).
SANDBOX_NEEDS = {"namespace": ("CONFIG_USER_NS",)}
#: Per feature: what the executor opens or creates for it (common_linux.h).
FEATURE_NEEDS = {
    "tun": ("CONFIG_TUN",),                       # /dev/net/tun
    "cgroups": ("CONFIG_CGROUPS",),               # mounts cgroup/cgroup2 under /syzcgroup
    "binfmt_misc": ("CONFIG_BINFMT_MISC",),       # mounts /proc/sys/fs/binfmt_misc
    "net_reset": ("CONFIG_NET_NS",),              # a fresh network namespace per program
    "devlink_pci": ("CONFIG_NETDEVSIM",),         # /sys/bus/netdevsim
    "usb": ("CONFIG_USB_RAW_GADGET",),            # /dev/raw-gadget
    "vhci": ("CONFIG_BT_HCIVHCI",),               # /dev/vhci
    "wifi": ("CONFIG_MAC80211_HWSIM",),           # the MAC80211_HWSIM genetlink family
    "ieee802154": ("CONFIG_IEEE802154_HWSIM",),   # mac802154_hwsim
    "sysctl": ("CONFIG_PROC_SYSCTL",),
    "swap": ("CONFIG_SWAP",),
}


@dataclass(frozen=True)
class Need:
    """A kernel option a syz program needs, and why."""

    option: str
    why: str


def kernel_needs(flags: Mapping[str, str], program_text: str = "") -> list[Need]:
    """The kernel options these syz-execprog flags (and the program's own
    fault-injection calls) need, each once, first reason kept."""
    needs: dict[str, str] = {}
    for o in ALWAYS_NEEDED:
        needs.setdefault(o, "syz-executor itself (/proc/self/ns/net)")
    sandbox = flags.get("sandbox", "none")
    for o in SANDBOX_NEEDS.get(sandbox, ()):
        needs.setdefault(o, f"sandbox={sandbox}")
    for feat in sorted(enabled_features(flags)):
        for o in FEATURE_NEEDS.get(feat, ()):
            needs.setdefault(o, f"feature {feat}")
    if re.search(r"\(fail_nth: *\d+", program_text):
        for o in ("CONFIG_FAULT_INJECTION", "CONFIG_FAILSLAB"):
            needs.setdefault(o, "fault injection (fail_nth) in the program")
    return [Need(o, why) for o, why in needs.items()]


def missing_needs(needs: list[Need], kernel_config: Mapping[str, str]) -> list[Need]:
    """The needs the kernel config does not meet (built in or as a module)."""
    return [n for n in needs if kernel_config.get(n.option, "n") not in ("y", "m")]


def describe_missing(missing: list[Need], config_name: str) -> str:
    """One line naming what is missing and how to get it."""
    parts = ", ".join(f"{n.option} (for {n.why})" for n in missing)
    return (f"the syz program needs {parts}, not set in {config_name}: add the 'syzkaller' config "
            f"fragment (--config ...,syzkaller) or turn the feature off (--syz-opt enable=...)")


# -- the program itself ---------------------------------------------------

_CALL = re.compile(r"^(?:r\d+\s*=\s*)?([A-Za-z_][A-Za-z0-9_]*(?:\$[A-Za-z0-9_]+)?)\(")
_CLOSE = {")": "(", "]": "[", "}": "{"}


def _balanced(line: str) -> bool:
    """Brackets balanced outside quoted strings ('...', "...", `...`)."""
    stack: list[str] = []
    quote = ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "'\"`":
            quote = c
        elif c in "([{":
            stack.append(c)
        elif c in _CLOSE and (not stack or stack.pop() != _CLOSE[c]):
            return False
        i += 1
    return not stack and not quote


def program_calls(text: str, *, where: str = "program") -> list[str]:
    """The call names of a syz program, checking each line's shape: a
    junk line is a SyzProgramError naming it (syz-execprog itself would
    silently skip it and run the rest, or nothing)."""
    calls = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _CALL.match(line)
        if m is None or not _balanced(line):
            raise SyzProgramError(f"{where}:{n}: not a syzkaller call: {line[:80]!r}")
        calls.append(m.group(1))
    if not calls:
        raise SyzProgramError(f"{where}: no syzkaller calls in it")
    return calls


# -- the binaries ---------------------------------------------------------

EM_X86_64 = 62


@dataclass(frozen=True)
class ElfInfo:
    bits: int
    machine: int
    interpreter: str | None
    """The dynamic loader (``PT_INTERP``), None for a static binary."""


def elf_info(data: bytes) -> ElfInfo | None:
    """Class, machine and interpreter of an ELF file's head (None: not ELF)."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return None
    bits = {1: 32, 2: 64}.get(data[4], 0)
    order: Literal["little", "big"] = "little" if data[5] == 1 else "big"
    machine = int.from_bytes(data[18:20], order)
    interp = None
    if bits == 64:
        phoff = int.from_bytes(data[32:40], order)
        phentsize = int.from_bytes(data[54:56], order)
        phnum = int.from_bytes(data[56:58], order)
        for i in range(phnum):
            off = phoff + i * phentsize
            if off + 56 > len(data):
                break
            if int.from_bytes(data[off:off + 4], order) == 3:  # PT_INTERP
                start = int.from_bytes(data[off + 8:off + 16], order)
                size = int.from_bytes(data[off + 32:off + 40], order)
                interp = data[start:start + size].rstrip(b"\0").decode(errors="replace")
    return ElfInfo(bits, machine, interp)


@dataclass(frozen=True)
class SyzBinaries:
    execprog: Path
    executor: Path
    interpreters: tuple[str, ...] = ()
    """Dynamic loaders the binaries need in the guest."""


def find_binaries(syz_dir: Path) -> tuple[Path, Path]:
    """syz-execprog and syz-executor in ``syz_dir`` or syzkaller's own
    layout under it (``bin/linux_amd64/``)."""
    for d in (syz_dir, syz_dir / "bin" / "linux_amd64", syz_dir / "linux_amd64"):
        if (d / "syz-execprog").exists() or (d / "syz-executor").exists():
            return d / "syz-execprog", d / "syz-executor"
    if not syz_dir.is_dir():
        raise SyzBinaryError(f"--syz-dir {syz_dir}: no such directory")
    raise SyzBinaryError(f"--syz-dir {syz_dir}: no syz-execprog or syz-executor in it "
                         f"(nor in its bin/linux_amd64/)")


def check_binaries(execprog: Path, executor: Path) -> SyzBinaries:
    """Both binaries exist, are executable and are x86-64 ELF; raises
    SyzBinaryError naming the first that is not."""
    interps = []
    for what, path in (("syz-execprog", execprog), ("syz-executor", executor)):
        if not path.is_file():
            raise SyzBinaryError(f"{what} {path}: no such file")
        if not os.access(path, os.X_OK):
            raise SyzBinaryError(f"{what} {path}: not executable (chmod +x)")
        try:
            with path.open("rb") as f:
                head = f.read(8192)
        except OSError as e:
            raise SyzBinaryError(f"{what} {path}: {e.strerror}") from None
        info = elf_info(head)
        if info is None:
            raise SyzBinaryError(f"{what} {path}: not an ELF binary")
        if info.bits != 64 or info.machine != EM_X86_64:
            raise SyzBinaryError(f"{what} {path}: built for ELF machine {info.machine} ({info.bits}-bit), "
                                 f"the guests are x86-64 (build syzkaller with TARGETARCH=amd64)")
        if info.interpreter:
            interps.append(info.interpreter)
    return SyzBinaries(execprog, executor, tuple(dict.fromkeys(interps)))


#: Seconds syz-execprog may take on the host to load its descriptions and parse.
HOST_CHECK_TIMEOUT = 60.0


def host_parse_check(execprog: Path, program: Path, calls: list[str]) -> None:
    """Let the real syz-execprog parse the program on the host, with no
    executor to start: unknown call names and a program it reads as empty are
    SyzProgramErrors. Skipped (with a debug line) when the binary does not run
    here."""
    with owner.tempdir("syzcheck") as tmp:
        # -stress makes syz-execprog check -syscalls by name before anything;
        # the executor path names a file that does not exist, so it stops
        # right after parsing ("failed to start executor").
        argv = [str(execprog), "-stress", f"-syscalls={','.join(sorted(set(calls)))}", "-procs=1",
                f"-executor={tmp}/no-executor", str(program.resolve())]
        try:
            done = proc.run(argv, timeout=HOST_CHECK_TIMEOUT, check=False, cwd=Path(tmp))
        except InfraError as e:
            log.debug("syz-execprog does not run on this host (%s): program checked in the guest only", e)
            return
    out = done.output
    m = re.search(r"unknown enabled syscall: (\S+)", out)
    if m:
        raise SyzProgramError(f"{program}: unknown syzkaller call {m.group(1)!r} "
                              f"(not in the descriptions of {execprog})")
    m = re.search(r"parsed (\d+) programs", out)
    if m is None:
        log.debug("syz-execprog host check said: %s", out[-500:])
        return
    if int(m.group(1)) == 0:
        raise SyzProgramError(f"{program}: syz-execprog parses no program from it")


# -- in the guest ---------------------------------------------------------

#: Exit status of the guest preflight when something the executor needs is missing.
PREFLIGHT_FAILED = 97
PREFLIGHT_PREFIX = "kvmlab: guest lacks"


def guest_script(guest_dir: str, flags: Mapping[str, str], interpreters: tuple[str, ...] = ()) -> str:
    """Shell run in the guest: check and provide what syz-executor needs
    (/proc/self/ns/net, /dev nodes of the features, debugfs, a tmpfs to work
    in), then exec syz-execprog. A missing piece prints one
    ``kvmlab: guest lacks ...`` line and exits with PREFLIGHT_FAILED."""
    feats = enabled_features(flags)
    checks = [("/proc/self/ns/net", "network namespaces (CONFIG_NET_NS)"), ("/dev/null", "/dev/null")]
    if "tun" in feats:
        checks.append(("/dev/net/tun", "/dev/net/tun (CONFIG_TUN)"))
    for interp in interpreters:
        checks.append((interp, f"{interp}, the loader syz-execprog is linked against"))
    lines = [f"cd {guest_dir}"]
    for path, what in checks:
        lines.append(f"[ -e {path} ] || {{ echo '{PREFLIGHT_PREFIX} {what}'; exit {PREFLIGHT_FAILED}; }}")
    lines += [
        # Mount what a distribution's init would have mounted; a busybox
        # initramfs mounts proc, sys, dev and /tmp only.
        "[ -d /sys/kernel/debug ] && ! grep -q ' /sys/kernel/debug ' /proc/mounts"
        " && mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null",
        "mkdir -p /dev/shm && { grep -q ' /dev/shm ' /proc/mounts || mount -t tmpfs tmpfs /dev/shm; }",
        # syz-execprog runs the executor in a fresh dir under TMPDIR.
        "mkdir -p work && { grep -q \" $PWD/work \" /proc/mounts || mount -t tmpfs tmpfs work; }",
        "export TMPDIR=$PWD/work",
        # "$@": kvmlab adds -debug when it asks why a run failed silently.
        f'exec ./syz-execprog -executor={guest_dir}/syz-executor {render_flags(flags)} "$@" prog',
    ]
    return "\n".join(lines) + "\n"


#: Seconds (before the TCG scale) syz-execprog may spend checking the machine
#: (features, syscalls) before it runs the program; the run time counts from
#: the program's first execution, not from syz-execprog's start.
SETUP_TIME = 75.0

#: syz-execprog's line as it hands out the program for the first time (and
#: then every 5 s): "executed programs: N".
_STARTED = re.compile(r"executed programs: \d+")


def execprog_started(output: str) -> bool:
    """Whether syz-execprog got as far as executing the program."""
    return _STARTED.search(output) is not None


#: syz-execprog's and syz-executor's own complaints: the run could not test
#: the kernel (the program did not run as written).
_FAILURE_PATTERNS = (
    re.compile(r"SYZFAIL: .*"),
    re.compile(re.escape(PREFLIGHT_PREFIX) + r".*"),
    re.compile(r"failed to start executor.*"),
    re.compile(r"executor \d+ failed.*"),
    re.compile(r"failed to parse .*"),
    re.compile(r"failed to read log file.*"),
    re.compile(r"executor failed.*"),
    re.compile(r"failed to create temp dir.*"),
    re.compile(r"machine check failed.*"),
    re.compile(r"execution of simple program fails.*"),
    re.compile(r"flag provided but not defined: .*"),
    re.compile(r"invalid value .* for flag .*"),
)


def execprog_failure(output: str, exit_status: int | None) -> str | None:
    """The line saying why syz-execprog could not run the program, or None
    when it ran (a program that crashes the kernel takes the guest with it;
    one that does not runs until the run time is over)."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        for pat in _FAILURE_PATTERNS:
            m = pat.search(line)
            if m:
                text = m.group(0).strip()
                # syz-executor's fail() puts the errno on the next line.
                # (with -debug syz-execprog prefixes its lines "proc N: got output:").
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                errno = re.search(r"\(errno \d+: [^)]*\)", nxt)
                if errno and nxt.strip().startswith(("(errno", "proc ")):
                    text = f"{text} {errno.group(0)}"
                return text if len(text) <= 300 else text[:300] + "..."
    m = re.search(r"parsed 0 programs", output)
    if m:
        return "syz-execprog parsed no program from the file"
    if exit_status not in (None, 0):
        last = [ln.strip() for ln in lines if ln.strip()]
        tail = f": {last[-1][:200]}" if last else ""
        return f"syz-execprog exited with status {exit_status}{tail}"
    return None


