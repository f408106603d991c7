"""``kvmlab report LOG... [--vmlinux PATH] [--json]`` on captured logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmlab.cli import main

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "report"


def test_report_text(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["report", str(FIXTURES / "sysrq-crash.log"), str(FIXTURES / "sysrq-backtrace.log")])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"{FIXTURES / 'sysrq-crash.log'}: kernel panic: sysrq triggered crash" in out
    assert "type:      DoS" in out
    assert "corrupted: no" in out
    assert " sysrq_handle_crash+0x16/0x20" in out
    assert f"{FIXTURES / 'sysrq-backtrace.log'}: no crash" in out


def test_report_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["report", "--json", str(FIXTURES / "no-root.log"), str(FIXTURES / "sysrq-backtrace.log")])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    crashed, clean = (json.loads(x) for x in lines)
    assert set(crashed) == {"file", "crashed", "title", "alt_titles", "type", "corrupted", "frame", "report"}
    assert crashed["crashed"] is True
    assert crashed["title"] == "kernel panic: VFS: Unable to mount root fs on unknown-block(NUM,NUM)"
    assert crashed["type"] == "DoS"
    assert "mount_block_root" in crashed["report"]
    assert clean["crashed"] is False and clean["title"] is None


def test_report_unreadable_file_is_reported_after_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "gone.log"
    rc = main(["report", "--json", str(missing), str(FIXTURES / "kill-init.log")])
    captured = capsys.readouterr()
    assert rc != 0
    assert json.loads(captured.out)["title"] == "kernel panic: Attempted to kill init!"
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0]


def test_report_missing_vmlinux(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(["report", "--vmlinux", str(tmp_path / "vmlinux"), str(FIXTURES / "kill-init.log")])
    assert rc == 2
    assert "vmlinux" in capsys.readouterr().err
