"""The HTML report's data and drawing (pure parts, and whole reports from the real
engine driven by the fake tester), and the live view's panel."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from kvmlab.bisect import StepRecord
from kvmlab.cli import main
from kvmlab.kernel.builder import Progress
from kvmlab.show import bisection_report, layout, load_job, panels, repro_report
from kvmlab.show.bisection import bisection_view
from kvmlab.show.gitinfo import parse_numstat
from kvmlab.show.meta import JobMeta
from kvmlab.show.model import VERDICT_COLOURS
from kvmlab.ui.live import _VM, LiveState, PlainView, render_state
from kvmlab.vmm.resources import SAMPLES_NAME, ResourceSampler, Sample, read_samples
from tests.show_cases import CASES, Bisected, bisected, copy_of, expected_colour_key, history_commits_tested

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------- layout


def test_lanes_follow_a_merged_branch() -> None:
    # base - m1 - m2 ---- merge - tip
    #          \- s1 - s2 -/
    rows = [("base", []), ("m1", ["base"]), ("s1", ["m1"]), ("m2", ["m1"]), ("s2", ["s1"]),
            ("merge", ["m2", "s2"]), ("tip", ["merge"])]
    g = layout.lay_out_graph(rows)
    lane = {n.commit: n.lane for n in g.nodes}
    row = {n.commit: n.row for n in g.nodes}
    assert g.nodes[0].commit == "tip" and row["base"] == len(rows) - 1  # newest on top
    assert lane["tip"] == lane["merge"] == lane["m2"] == lane["m1"] == lane["base"] == 0
    assert lane["s1"] == lane["s2"] == 1  # the merged branch has a lane of its own
    assert g.lanes == 2
    assert {(e.child, e.parent) for e in g.edges} == {
        ("tip", "merge"), ("merge", "m2"), ("merge", "s2"), ("s2", "s1"), ("m2", "m1"), ("s1", "m1"),
        ("m1", "base")}
    # Every edge runs from its child's dot down to its parent's.
    pos = {n.commit: (n.x, n.y) for n in g.nodes}
    for e in g.edges:
        nums = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", e.path)]
        assert tuple(nums[:2]) == pos[e.child] and tuple(nums[-2:]) == pos[e.parent]


def test_parents_outside_the_drawing_are_stubs() -> None:
    g = layout.lay_out_graph([("a", ["outside"]), ("b", ["a"])])
    assert [(e.child, e.parent) for e in g.stubs] == [("a", "outside")]
    assert [(e.child, e.parent) for e in g.edges] == [("b", "a")]


def test_nearest_subgraph_skips_undrawn_commits_and_counts_them() -> None:
    # 0 - 1 - 2 - 3 - 4, and a side branch 1 - s - 4 (4 is a merge)
    order = ["0", "1", "2", "s", "3", "4"]
    parents = {"0": [], "1": ["0"], "2": ["1"], "s": ["1"], "3": ["2"], "4": ["3", "s"]}
    bit = {h: 1 << i for i, h in enumerate(order)}
    closure: dict[str, int] = {}
    for h in order:
        closure[h] = bit[h]
        for p in parents[h]:
            closure[h] |= closure[p]
    rows, hidden = layout.nearest_subgraph(order, closure, bit, ["0", "3", "s", "4"])
    assert dict(rows) == {"0": [], "3": ["0"], "s": ["0"], "4": ["s", "3"]}
    assert hidden == {"0": 0, "3": 2, "s": 1, "4": 0}


def test_timeline_waiting_is_what_no_build_or_vm_covers() -> None:
    busy = [layout.Span("build", 0, 10, "clean", ""), layout.Span("VM 0", 12, 20, "ok", ""),
            layout.Span("VM 1", 12, 25, "target", ""), layout.Span("build", 25.5, 26, "cached", "")]
    idle = layout.idle_spans(busy, 40)
    assert [(s.start, s.end) for s in idle] == [(10, 12), (26, 40)]  # 25..25.5 is under a second
    tl = layout.lay_out_timeline([*busy, *idle], ["build", "VM 0", "VM 1", "waiting"], total=40)
    assert len(tl.bars) == 6 and min(b.w for b in tl.bars) >= 2.0
    assert [t[1] for t in tl.ticks][:3] == ["0s", "5s", "10s"]


def test_vm_load_lines_sit_inside_their_rows_and_break_where_no_qemu_ran() -> None:
    samples = [Sample(100.0 + t, 0, cpu, 300 << 20)
               for t, cpu in ((2, 100.0), (4, 50.0), (6, 0.0), (40, 100.0))]
    samples.append(Sample(104.0, 1, 180.0, 200 << 20))  # a 2-vCPU QEMU sets the scale
    loads, note = panels.vm_loads(samples, origin=100.0)
    assert [ld.row for ld in loads] == ["VM 0", "VM 1"] and "180% of one host core" in note
    assert "mean 62% of a host core, peak RSS 300 MiB (4 samples)" in loads[0].label
    tl = layout.lay_out_timeline([layout.Span("VM 0", 0, 50, "ok", "")], ["VM 0", "VM 1"], total=50,
                                 loads=loads)
    (vm0, vm1) = tl.loads
    assert len(vm0.paths) == 2  # 6 s -> 40 s: nothing sampled in between
    ys = [float(y) for d in vm0.paths for _, y in re.findall(r"[ML]([\d.]+),([\d.]+)", d)]
    assert all(vm0.band_top <= y <= vm0.band_top + vm0.band_h for y in ys)
    assert dict(tl.rows)["VM 0"] < vm0.band_top < dict(tl.rows)["VM 1"]  # a band under its row
    assert ys[0] < ys[1] < ys[2]  # more CPU, higher up
    assert vm1.paths[0].endswith("l0.01,0")  # one sample: a dot


def test_resource_samples_of_a_killed_job_are_read_up_to_the_broken_line(tmp_path: Path) -> None:
    f = tmp_path / SAMPLES_NAME
    f.write_text('{"t": 1.0, "vm": 0, "cpu": 99.5, "rss": 1024}\n{"t": 3.0, "vm": 1, "cpu": 1\n')
    assert list(read_samples(f)) == [Sample(1.0, 0, 99.5, 1024)]
    assert list(read_samples(tmp_path / "missing")) == []


def test_sampler_follows_a_real_busy_process_until_it_ends(tmp_path: Path) -> None:
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 1.5\n"
                             "while time.time() < end: pass"])
    with ResourceSampler(tmp_path / SAMPLES_NAME, interval=0.3) as sampler:
        sampler.watch(3, busy.pid)
        sampler.watch(4, None)  # a remote host's VM: nothing to sample
        busy.wait()
        time.sleep(0.7)
        assert sampler.sample() == []  # the process ended: dropped
    got = list(read_samples(tmp_path / SAMPLES_NAME))
    assert len(got) >= 3 and {s.vm for s in got} == {3}
    # A spinning process reads ~100% alone, ~50% or less on a loaded 2-core
    # machine; an idle one ~0%.
    assert max(s.cpu for s in got) > 20.0 and min(s.rss for s in got) > 1 << 20


def test_chart_lines_break_where_a_value_is_unknown() -> None:
    c = layout.line_chart([layout.Series("a", "a", ((1, 0.1), (2, 0.5), (4, 0.9)))], x_max=4, y_max=1)
    (line,) = c.lines
    assert len(line.paths) == 2 and len(line.dots) == 3
    top = c.top
    assert line.dots[2][1] < line.dots[0][1] and line.dots[2][1] >= top  # higher probability, higher up


def test_numstat() -> None:
    assert [(f.path, f.added, f.deleted) for f in parse_numstat("3\t1\tmm/slub.c\n-\t-\tlogo.png\n")] == [
        ("mm/slub.c", 3, 1), ("logo.png", None, None)]


# ----------------------------------------------- reports of real bisections


def _html(path: Path) -> str:
    return path.read_text()


def _self_contained(html: str) -> None:
    """No resource is fetched: no external scripts, styles, images, fonts or frames."""
    assert not re.search(r"""<(script|img|iframe|link|object|embed)[^>]*\s(src|href)=""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", html, re.I)
    assert "@import" not in html


@pytest.mark.parametrize("name", sorted(CASES))
def test_report_of_each_kind_of_bisection(name: str, tmp_path: Path,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    b = copy_of(bisected(name, tmp_path_factory), tmp_path / "wd")
    out = bisection_report(b.workdir)
    assert out == b.workdir / "report.html"
    html = _html(out)
    _self_contained(html)
    v = bisection_view(load_job(b.workdir))
    assert v.state == b.result.outcome.value
    tested = history_commits_tested(b.result)
    # One node per tested commit, coloured by the verdict the evidence gives.
    drawn = dict(re.findall(r'<circle class="node" data-commit="([0-9a-f]{40})"[^>]*fill="(#[0-9a-f]{6})"',
                            html))
    assert tested <= set(drawn)
    for c in tested:
        assert drawn[c] == VERDICT_COLOURS[expected_colour_key(b.result, c)], (c, b.hist.title(c))
    assert f"<title>kvmlab {'fix' if b.case.fix else 'cause'} bisection: {v.state}" in html
    if b.result.confidence_goal is not None:  # the goal the culprit had to reach (raised or not)
        assert v.confidence_goal == b.result.confidence_goal
    if b.result.culprit:
        subject = b.hist.title(b.result.culprit)
        assert f'<div class="subject" id="culprit-subject">{subject}</div>' in html
        assert 'class="ring"' in html
    made = {c.commit for c in b.result.confirmations if c.commit}
    assert not made & set(drawn)  # confirmation commits are not part of the history
    if name == "found":
        assert "confirmed: the crash is gone with" in html and made
        assert "undecided" in html and "P(it has the bug)" in html
        assert 'id="prob-chart"' in html and 'id="remaining-chart"' in html
        assert "the bug</span>" in html and "WARNING in something_else" in html  # titles, target marked
        assert "build failed" in html and "boot failed" in html
        assert "ann@example.org" in html and "rita@example.org" in html  # cc from the log
        assert "report of KASAN" in html  # the culprit's crash report
    if name == "merged-branch":
        lane = {b.hist.title(n.commit): n.lane for n in v.graph.nodes}
        # The side branch's commits (titles b<n>) have their own lane, the mainline's lane 0.
        branch = [t for t in lane if t.startswith("b")]
        assert branch and all(lane[t] == 1 for t in branch), lane
        assert all(lane[t] == 0 for t in lane if t not in branch), lane
    if name == "syzbot":
        assert 'id="prob-chart"' not in html and 'id="remaining-chart"' in html
    if name == "inconclusive":
        assert 'id="candidates"' in html
        for t in ("8", "9", "10"):
            assert b.h(t)[:12] in html
    if name == "no-repro":
        assert "did not reproduce" in html and 'id="no-culprit"' in html
    if name == "oldest-release-bad":
        assert "the oldest tested release already had the bug" in html
        assert len(v.graph.edges) == 1  # v1.0 is an ancestor of the bad commit, and git says so
    if name == "fix":
        assert "fixed (no crash)" in html and "First fixed commit" in html


def _found(tmp_path: Path, factory: pytest.TempPathFactory) -> Bisected:
    return copy_of(bisected("found", factory), tmp_path / "wd")


def test_running_bisection_report_from_a_partial_journal(tmp_path: Path,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    b = _found(tmp_path, tmp_path_factory)
    (b.workdir / "result.json").unlink()
    lines = (b.workdir / "journal.jsonl").read_text().splitlines()
    steps = [i for i, ln in enumerate(lines) if '"kind": "step"' in ln]
    # Stop after the third step, in the middle of writing a line.
    partial = lines[steps[2] + 1][:20]
    (b.workdir / "journal.jsonl").write_text("\n".join(lines[: steps[2] + 1]) + "\n" + partial)
    v = bisection_view(load_job(b.workdir))
    assert v.state == "running" and v.culprit is None and len(v.steps) == 3
    assert v.target_title == "KASAN: use-after-free Read in target_bug"  # found without the result
    html = _html(bisection_report(b.workdir / "journal.jsonl", tmp_path / "out.html"))
    assert 'class="pill running"' in html and "3 steps so far" in html
    assert '<meta http-equiv="refresh"' in html
    # One more line: the next commit's build. It is the one being tested.
    nxt = json.loads(lines[steps[2] + 1])
    assert nxt["kind"] == "build"
    (b.workdir / "journal.jsonl").write_text("\n".join(lines[: steps[2] + 2]) + "\n")
    v = bisection_view(load_job(b.workdir))
    assert v.commits[nxt["commit"]].verdict == "pending"
    assert [c.verdict for c in v.commits.values()].count("pending") == 1


def test_report_without_the_tree_still_shows_the_evidence(tmp_path: Path,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    b = _found(tmp_path, tmp_path_factory)
    meta = json.loads((b.workdir / "meta.json").read_text())
    meta["tree"] = str(tmp_path / "gone")
    (b.workdir / "meta.json").write_text(json.dumps(meta))
    html = _html(bisection_report(b.workdir))
    assert "the kernel tree is gone" in html
    for c, e in b.result.evidence.items():
        if e.build is not None:
            assert f'data-commit="{c}"' in html


def test_unknown_step_fields_show_as_columns(tmp_path: Path,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    """A newer engine may add step fields (a note on a re-test, a crash-rate
    estimate): they show; missing ones do not break the report."""
    b = copy_of(bisected("found", tmp_path_factory), tmp_path / "wd")
    j = b.workdir / "journal.jsonl"
    out = []
    for n, line in enumerate(j.read_text().splitlines()):
        d = json.loads(line)
        if d["kind"] == "step":
            d["step"]["note"] = f"re-test number {n}" if n % 2 else None
            d["step"]["crash_rate"] = 0.42
            del d["step"]["builds"], d["step"]["top"]
        out.append(json.dumps(d))
    j.write_text("\n".join(out) + "\n")
    html = _html(bisection_report(b.workdir))
    assert "<th>note</th>" in html and "<th>crash rate</th>" in html and "re-test number" in html
    assert "<td>0.42</td>" in html


def test_hostile_titles_are_escaped(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    b = copy_of(bisected("no-repro", tmp_path_factory), tmp_path / "wd")
    j = b.workdir / "journal.jsonl"
    text = j.read_text()
    evil = '<script>alert(1)</script>'
    line = {"kind": "run", "commit": b.result.bad, "t": 1.0,
            "run": {"index": 0, "status": "crashed", "title": f"BUG: {evil}", "report": f"{evil}\n"}}
    j.write_text(text + json.dumps(line) + "\n")
    (b.workdir / "result.json").unlink()
    html = _html(bisection_report(b.workdir))
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_show_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      tmp_path_factory: pytest.TempPathFactory) -> None:
    b = bisected("fix", tmp_path_factory)
    out = tmp_path / "x" / "r.html"
    assert main(["show", str(b.workdir), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.is_file()
    # A workdir whose meta.json names no tree: --tree supplies it.
    wd = tmp_path / "wd"
    shutil.copytree(b.workdir, wd)
    (wd / "meta.json").unlink()
    assert main(["show", str(wd)]) == 0
    assert "the kernel tree is not known" in (wd / "report.html").read_text()
    assert main(["show", str(wd), "--tree", str(b.hist.path)]) == 0
    html = (wd / "report.html").read_text()
    assert "the kernel tree is not known" not in html and 'id="culprit-subject">24</div>' in html
    capsys.readouterr()
    assert main(["show", str(tmp_path / "nothing")]) == 2
    assert "no such bisection workdir or journal" in capsys.readouterr().err
    (tmp_path / "junk").write_text("not a journal\n")
    assert main(["show", str(tmp_path / "junk")]) == 2
    assert "not a kvmlab bisection journal" in capsys.readouterr().err


def test_repro_report(tmp_path: Path) -> None:
    runs = [
        {"index": 0, "status": "crashed", "title": "KASAN: use-after-free Read in f", "report": "BUG: KASAN",
         "duration": 31.5, "expected": True},
        {"index": 1, "status": "ok", "title": None, "duration": 40.0, "expected": None},
        {"index": 2, "status": "crashed", "title": "WARNING in g", "report": "WARNING", "duration": 12.0,
         "expected": False},
        {"index": 3, "status": "boot-failed", "title": "no output", "detail": "no output", "duration": 90.0,
         "expected": None},
    ]
    (tmp_path / "result.json").write_text(json.dumps(
        {"runs": runs, "cancelled_runs": 0, "crash_rate": 0.5, "titles": {}, "wall": 95.0}))
    JobMeta(kind="repro", kernel="/k/bzImage", reproducer="C program r.c", vms=4, accel="tcg",
            expect="KASAN: use-after-free Read in f").write(tmp_path)
    (tmp_path / SAMPLES_NAME).write_text("".join(
        json.dumps({"t": 1000.0 + 2 * i, "vm": i % 4, "cpu": 90.0, "rss": 250 << 20}) + "\n"
        for i in range(12)))
    html = _html(repro_report(tmp_path))
    _self_contained(html)
    assert html.count('<g class="load">') == 4 and "QEMU CPU, mean 90% of a host core" in html
    assert "2/4 crashed" in html and "50.0%" in html
    assert "looked for</span>" in html and "WARNING in g" in html and "crashed (another bug)" in html
    assert "boot failed" in html and "BUG: KASAN" in html
    assert main(["show", str(tmp_path), "-o", str(tmp_path / "again.html")]) == 0


# ------------------------------------------------------------- live view


def _panel(st: LiveState, now: float) -> str:
    con = Console(file=io.StringIO(), width=120, color_system=None)
    con.print(render_state(st, now))
    out = con.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def test_live_panel_shows_step_build_and_vm_states() -> None:
    st = LiveState("kvmlab bisect", started=100.0, phase="building", commit="ab" * 20, subject="mm: frob")
    st.build = Progress("compile", objects=812, line="  CC      mm/slub.o", elapsed=41.0)
    st.steps.append(StepRecord(0, "cd" * 20, "bad", 17, (("ef" * 20, 0.4),), 0.4, 3, 2))
    text = _panel(st, 230.0)
    assert "step 1 · 17 candidates left · confidence 40.0%" in text
    assert "building abababababab mm: frob" in text
    assert "compile, 812 objects, 41 s" in text and "2:10" in text
    assert "#1 cdcdcdcd bad" in text
    st.phase = "testing"
    st.vms = {0: _VM("booting", 225.0), 1: _VM("running", 220.0),
              2: _VM("crashed", 229.0, "KASAN: use-after-free Read in f"), 3: _VM("ok", 229.0)}
    st.run_counts = {"crashed": 1, "ok": 1}
    text = _panel(st, 230.0)
    for want in ("VM 0  ◌ booting", "VM 1  ● running", "VM 2  ✖ crashed", "KASAN: use-after-free Read in f",
                 "VM 3  ✔ OK", "runs of this commit: 1 crashed, 1 OK"):
        assert want in text, (want, text)


def test_plain_view_prints_lines_as_today(capsys: pytest.CaptureFixture[str]) -> None:
    v = PlainView()
    v.say("testing commit abc")
    v.step(StepRecord(0, "a" * 40, "good", 3, (), None, 1, 1))
    assert capsys.readouterr().out == "testing commit abc\n"
