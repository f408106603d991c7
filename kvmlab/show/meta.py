"""``meta.json``: what a bisection or repro job was asked, written into its
workdir when it starts, so that its report can be made later from the workdir
alone (the journal records outcomes, not the tree they came from)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

META_NAME = "meta.json"


@dataclass(frozen=True)
class JobMeta:
    """A bisection's (``kind="bisect"``) or a repro's (``kind="repro"``) request."""

    kind: str
    tree: str | None = None
    """Kernel git tree (absolute path)."""
    bad: str | None = None
    good: str | None = None
    fix: bool = False
    policy: str = ""
    confidence_goal: float | None = None
    """The adaptive policy's culprit posterior to reach."""
    config: list[str] = field(default_factory=list)
    """Kernel config fragments."""
    reproducer: str = ""
    """What the reproducer is, one line."""
    expect: str | None = None
    """Title of the bug looked for, when given."""
    kernel: str | None = None
    """The booted bzImage (repro)."""
    commit: str | None = None
    """The built commit (repro with --tree)."""
    vms: int = 0
    """VMs per test."""
    accel: str = ""
    journal: str | None = None
    log: str | None = None
    """The text log of the latest attempt."""
    started: float = 0.0
    """Unix time the command started (before its first build)."""
    first_build: dict[str, Any] | None = None
    """The bad commit's build done before the engine starts (``duration``,
    ``cached``, ``commit``), so the timeline can show it."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JobMeta:
        """Known keys only (a newer kvmlab may write more)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def write(self, workdir: Path) -> Path:
        """Write ``workdir/meta.json`` atomically."""
        path = workdir / META_NAME
        tmp = path.with_name(f".{META_NAME}.{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        tmp.replace(path)
        return path


def load_meta(workdir: Path) -> JobMeta | None:
    path = workdir / META_NAME
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return JobMeta.from_json(d) if isinstance(d, dict) and "kind" in d else None
