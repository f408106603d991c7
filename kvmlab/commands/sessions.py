"""``kvmlab ps``, ``kvmlab ssh``, ``kvmlab scp``, ``kvmlab kill``: the
sessions ``kvmlab boot`` started, by name."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import libvirt

from kvmlab import proc
from kvmlab.errors import KvmlabError, LibvirtError, UserError
from kvmlab.session.store import PS_COLUMNS, SessionDir, SessionStore, format_table, now, ps_rows
from kvmlab.vmm.libvirt_backend import open_connection
from kvmlab.vmm.ssh import Endpoint, scp_argv, ssh_argv

#: Seconds a session's kvmlab gets to tear its VM down after SIGTERM.
KILL_GRACE = 30.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ps", help="list the sessions of kvmlab boot")
    p.add_argument("-a", "--all", action="store_true", help="also the ended ones (their files are kept)")
    p.set_defaults(func=ps)

    s = sub.add_parser("ssh", help="ssh into a session's guest (a shell, or CMD)")
    s.add_argument("name", nargs="?", help="session (for a shell, may be left out when one is running)")
    s.add_argument("command", nargs=argparse.REMAINDER, help="command to run instead of a shell")
    s.set_defaults(func=ssh)

    c = sub.add_parser("scp", help="copy files between the host and a session's guest (NAME:path)")
    c.add_argument("paths", nargs="+", metavar="PATH", help="sources then destination; NAME:path is "
                   "in session NAME's guest")
    c.set_defaults(func=scp)

    k = sub.add_parser("kill", help="stop sessions (their VMs go; files stay unless --rm)")
    k.add_argument("names", nargs="+", metavar="NAME")
    k.add_argument("--rm", action="store_true", help="also remove the session's files (and a kept disk)")
    k.set_defaults(func=kill)


def ps(args: argparse.Namespace) -> int:
    store = SessionStore()
    entries = []
    for d in store.all():
        running = d.running()
        if not running and not args.all:
            continue
        try:
            entries.append((d.read(), running, d.path))
        except KvmlabError as e:  # one broken record must not hide the others
            print(f"kvmlab: {e}", file=sys.stderr)
    if not entries:
        print("no sessions running" if not args.all else "no sessions", file=sys.stderr)
        return 0
    print(format_table(PS_COLUMNS, ps_rows(entries, now())), end="")
    return 0


def _endpoint(d: SessionDir) -> Endpoint:
    if not d.running():
        raise UserError(f"session {d.name} is not running")
    rec = d.read()
    if rec.state == "running" and not rec.ssh_port and rec.uri and "://" in rec.uri and \
            not rec.uri.startswith(("qemu:///", "qemu+unix:///")):
        raise UserError(f"session {d.name}: its VM runs on {rec.uri}, whose guest SSH is reached only "
                        "through kvmlab's connection to the host; use a local VM for kvmlab ssh/scp")
    if rec.state != "running" or not rec.ssh_port:
        raise UserError(f"session {d.name}: the guest does not answer SSH yet ({rec.state})")
    return Endpoint(rec.ssh_host, rec.ssh_port, rec.ssh_user, Path(rec.ssh_key))


def ssh(args: argparse.Namespace) -> int:
    store = SessionStore()
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    d = store.get(args.name) if args.name else store.only_running()
    proc.exec_replace(ssh_argv(_endpoint(d), command))


def scp(args: argparse.Namespace) -> int:
    if len(args.paths) < 2:
        raise UserError("scp needs a source and a destination")
    store = SessionStore()
    session: SessionDir | None = None
    paths: list[tuple[bool, str]] = []
    for word in args.paths:
        name, sep, rest = word.partition(":")
        if sep and "/" not in name and name:
            d = store.get(name)
            if session is not None and d.name != session.name:
                raise UserError("scp: one session at a time")
            session = d
            paths.append((True, rest or "."))
        else:
            paths.append((False, word))
    if session is None:
        raise UserError("scp: name the guest side as NAME:path")
    proc.exec_replace(scp_argv(_endpoint(session), paths))


def _stop(d: SessionDir) -> str:
    """Stop one running session: its kvmlab gets SIGTERM and tears the VM
    down; if it does not within KILL_GRACE, it and its VM are killed."""
    rec = d.read()
    with contextlib.suppress(ProcessLookupError):
        os.kill(rec.pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    while d.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not d.running():
        return "stopped"
    # The owner hangs: kill it. Its qemu dies with it (parent-death signal);
    # a libvirt domain does not, so it goes by name.
    os.kill(rec.pid, signal.SIGKILL)
    if rec.domain:
        _destroy_domain(rec.uri or "qemu:///system", rec.domain)
    while d.running() and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    return "killed"


def _destroy_domain(uri: str, name: str) -> None:
    conn = open_connection(uri)
    try:
        conn.lookupByName(name).destroy()
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise LibvirtError(f"libvirt: could not destroy {name}: {e.get_error_message()}") from e
    finally:
        conn.close()


def kill(args: argparse.Namespace) -> int:
    store = SessionStore()
    dirs = [store.get(n) for n in args.names]  # every name checked before anything is stopped
    rc = 0
    for d in dirs:
        if d.running():
            print(f"{d.name}: {_stop(d)}")
        elif not args.rm:
            print(f"{d.name}: not running", file=sys.stderr)
            rc = 1
        if args.rm:
            if d.running():
                print(f"{d.name}: still running, files kept", file=sys.stderr)
                rc = 1
                continue
            shutil.rmtree(d.path)
            print(f"{d.name}: removed {d.path}")
    return rc
