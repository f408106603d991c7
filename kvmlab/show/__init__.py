"""Reports you can look at: a self-contained ``report.html`` for a bisection
(from its workdir: journal, ``meta.json``, ``result.json``, log, and the kernel
tree) or a repro run.

::

    from kvmlab.show import bisection_report
    path = bisection_report(workdir)                 # -> workdir/report.html
"""

from __future__ import annotations

from pathlib import Path

from kvmlab.errors import MissingFileError, UserError
from kvmlab.show.bisection import JOURNAL_NAME, RESULT_NAME, BisectView, Job, bisection_view, load_job
from kvmlab.show.meta import JobMeta, load_meta
from kvmlab.show.render import REPORT_NAME, render_bisection, render_repro, write_atomic
from kvmlab.show.repro import is_repro_dir, load_repro, repro_view


def bisection_report(path: Path, out: Path | None = None, *, tree: Path | None = None) -> Path:
    """Render the bisection in ``path`` (workdir or journal) to ``out``
    (default: ``report.html`` in its workdir); returns the file written."""
    job = load_job(path)
    html = render_bisection(bisection_view(job, tree=tree))
    return write_atomic(out or job.workdir / REPORT_NAME, html)


def repro_report(workdir: Path, out: Path | None = None) -> Path:
    """Render the ``kvmlab repro`` run in ``workdir`` to ``out`` (default:
    ``report.html`` in it); returns the file written."""
    result, meta = load_repro(workdir)
    return write_atomic(out or workdir / REPORT_NAME, render_repro(repro_view(workdir, result, meta)))


def report(path: Path, out: Path | None = None, *, tree: Path | None = None) -> Path:
    """The report of whatever ``path`` holds: a bisection (workdir or journal)
    or a repro workdir. What is neither, or a repro run without its result
    yet, is a UserError saying which."""
    path = Path(path)
    if path.is_dir():
        if is_repro_dir(path):
            return repro_report(path, out)
        meta = load_meta(path)
        if meta is not None and meta.kind == "repro":
            raise UserError(f"{path}: a kvmlab repro workdir without its {RESULT_NAME} (still running, or "
                            "stopped before its runs ended): nothing to show yet")
        if not (path / JOURNAL_NAME).is_file() and (meta is None or not meta.journal):
            raise MissingFileError(f"{path}: not a kvmlab workdir: no bisection journal ({JOURNAL_NAME}) and "
                                   f"no repro result ({RESULT_NAME}) in it")
    return bisection_report(path, out, tree=tree)


__all__ = [
    "REPORT_NAME",
    "BisectView",
    "Job",
    "JobMeta",
    "bisection_report",
    "bisection_view",
    "load_job",
    "load_meta",
    "render_bisection",
    "render_repro",
    "report",
    "repro_report",
    "write_atomic",
]
