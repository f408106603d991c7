"""The one place kvmlab starts host processes.

Every call passes an explicit ``timeout`` (seconds), runs without a shell and
without stdin, in its own session so that a timeout or an interrupt kills the
whole process group and nothing is left behind. The exceptions are the
programs a person drives from kvmlab's terminal (ssh, gdb): those are handed
the terminal (:func:`exec_replace`, :func:`run_foreground`) and end when the
person ends them.
"""

from __future__ import annotations

import logging
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from kvmlab.errors import HostToolError, ProcessError

log = logging.getLogger(__name__)

_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Completed:
    """A finished process: argv, exit code, combined or split output."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _fmt(argv: Sequence[str | Path]) -> list[str]:
    return [str(a) for a in argv]


def kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 2.0) -> None:
    """Terminate a process started by :func:`spawn` or :func:`run` and its group."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait(timeout=grace)


class _Forker:
    """A thread that lives as long as kvmlab and starts the processes that must
    die with it.

    The kernel sends a child its parent-death signal when the *thread* that
    forked it exits, not the process: a child forked by a pool's short-lived
    worker thread would be killed as soon as that worker finished. Forking from
    this one daemon thread ties the signal to the life of kvmlab itself.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]],
                                            Future[subprocess.Popen[bytes]]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _loop(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the caller, re-raised there
                fut.set_exception(e)

    def call(self, fn: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="kvmlab-forker", daemon=True)
                self._thread.start()
        fut: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((fn, fut))
        return fut.result()


_forker = _Forker()


def spawn(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = subprocess.STDOUT,
    stdin: int | None = subprocess.DEVNULL,
    text: bool = False,
    die_with_us: bool = False,
    own_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a long-running process in its own session; the caller must stop it
    with :func:`kill_group`.

    ``die_with_us``: the process gets SIGKILL if kvmlab dies without stopping
    it (``kill -9``, OOM killer), through util-linux ``setpriv --pdeathsig``,
    which execs the program in place (same pid). Without setpriv on the host,
    the process is started plainly.

    ``own_session`` False keeps the process in kvmlab's session and process
    group: only for programs that must share kvmlab's terminal.
    """
    args = _fmt(argv)
    log.debug("spawn: %s", shlex.join(args))
    if shutil.which(args[0]) is None:
        raise HostToolError(f"{args[0]}: not found on this host")
    setpriv = shutil.which("setpriv") if die_with_us else None
    full = ["setpriv", "--pdeathsig", "KILL", "--", *args] if setpriv else args

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # the one Popen in kvmlab
            full,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=own_session,
            text=text,
        )

    try:
        return _forker.call(start) if setpriv else start()
    except FileNotFoundError as e:
        raise HostToolError(f"{args[0]}: not found on this host") from e


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input_text: str | None = None,
) -> Completed:
    """Run ``argv`` to completion within ``timeout`` seconds.

    Raises :class:`ProcessError` on a non-zero exit (when ``check``) or on a
    timeout (always), after killing the whole process group.
    """
    args = _fmt(argv)
    proc = spawn(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
    )
    try:
        out, err = proc.communicate(
            input=input_text.encode() if input_text is not None else None, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        kill_group(proc)
        partial = (e.stdout or b"") + (e.stderr or b"")
        tail = partial.decode(errors="replace")[-_TAIL_CHARS:]
        raise ProcessError(args, None, tail, timed_out=True) from None
    except BaseException:
        kill_group(proc)
        raise
    stdout = out.decode(errors="replace")
    stderr = err.decode(errors="replace")
    done = Completed(args, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise ProcessError(args, proc.returncode, _tail(stdout + stderr), output_head=_head(stdout + stderr))
    return done


def _tail(text: str) -> str:
    """The last ``_TAIL_CHARS`` of ``text`` from a line start (a cut line would
    misquote a file name: ``ry.c:11:2: error``)."""
    if len(text) <= _TAIL_CHARS:
        return text
    cut = text[-_TAIL_CHARS:]
    nl = cut.find("\n")
    return cut[nl + 1:] if 0 <= nl < len(cut) - 1 else cut


def _head(text: str) -> str:
    """The first ``_TAIL_CHARS`` of ``text``, whole lines."""
    if len(text) <= _TAIL_CHARS:
        return text
    cut = text[:_TAIL_CHARS]
    nl = cut.rfind("\n")
    return cut[:nl + 1] if nl > 0 else cut


def run_foreground(argv: Sequence[str | Path], *, cwd: Path | None = None) -> int:
    """Run an interactive program on kvmlab's own terminal (stdin, stdout and
    stderr inherited, in kvmlab's process group so the terminal's Ctrl-C
    reaches it) and return its exit code. No timeout: a person ends it.
    kvmlab itself ignores SIGINT meanwhile (gdb uses Ctrl-C to stop the
    target, not to end)."""
    # Ignored only after the start: an ignored signal stays ignored across exec.
    p = spawn(_fmt(argv), cwd=cwd, stdin=None, stdout=None, stderr=None, own_session=False)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return p.wait()
    except BaseException:
        p.terminate()
        p.wait(timeout=5)
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


def exec_replace(argv: Sequence[str | Path]) -> NoReturn:
    """Replace kvmlab by ``argv`` (same pid, same terminal; its exit code is
    kvmlab's): for handing a person over to ssh or scp."""
    args = _fmt(argv)
    log.debug("exec: %s", shlex.join(args))
    if shutil.which(args[0]) is None:
        raise HostToolError(f"{args[0]}: not found on this host")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execvp(args[0], args)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours or someone else's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
