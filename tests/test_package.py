"""kvmlab as an installed package: a wheel built from the checkout, installed
into a fresh venv, run from a directory outside the checkout. Its fragments,
recipes and demo data must come from the package, not from the source tree.

The venv gets kvmlab from the wheel only; its dependencies (paramiko,
libvirt-python...) come from the project venv through a ``.pth`` line, so the
test needs no network and no compiler for libvirt-python (a ``.pth`` path line
does not run the project venv's editable-install hook: the checkout's kvmlab
stays invisible, which the test checks).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from kvmlab import proc
from tests.conftest import REPO

#: Seconds for the wheel build and pip install (no network: --no-index).
BUILD_TIMEOUT = 300


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kvmlab's wheel, built from a copy of the checkout (what git would ship:
    the package, its data folders and the project files), offline."""
    src = tmp_path_factory.mktemp("src")
    for name in ("kvmlab", "kernel_configs", "images"):
        shutil.copytree(REPO / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    proc.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
              "-q", "-w", str(out), str(src)], timeout=BUILD_TIMEOUT, cwd=src)
    (whl,) = out.glob("kvmlab-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its ``bin`` dir."""
    venv = tmp_path_factory.mktemp("venv")
    proc.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=BUILD_TIMEOUT)
    py = venv / "bin" / "python"
    proc.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
              str(wheel)], timeout=BUILD_TIMEOUT)
    site = Path(proc.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         timeout=60).stdout.strip())
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def _kvmlab(bindir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bindir / "kvmlab"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.unit  # a wheel build, about 10 s
def test_wheel_carries_the_data_folders(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in (REPO / "kernel_configs").iterdir():
        assert f"kvmlab/data/kernel_configs/{f.name}" in names, f.name
    for f in (REPO / "images").iterdir():
        assert f"kvmlab/data/images/{f.name}" in names, f.name
    assert "kvmlab/kernel/demo/history.yaml" in names
    assert not [n for n in names if n.startswith(("kernel_configs/", "images/", "tests/"))]


@pytest.mark.vm  # doctor probes KVM by booting a kernel
def test_installed_kvmlab_works_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    venv = installed.parent

    where = subprocess.run([str(installed / "python"), "-c", "import kvmlab; print(kvmlab.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr

    version = _kvmlab(installed, elsewhere, "--version")
    assert version.returncode == 0 and version.stdout.strip() == "kvmlab 0.1.0", version

    frags = _kvmlab(installed, elsewhere, "kernel", "fragments")
    assert frags.returncode == 0, frags.stderr
    listed = {line.split()[0]: Path(line.split()[1]) for line in frags.stdout.splitlines()
              if line.split() and line.split()[1].endswith(".config")}
    assert set(listed) == {p.stem for p in (REPO / "kernel_configs").glob("*.config")}
    assert all(p.is_relative_to(venv) for p in listed.values()), frags.stdout
    assert f"compiler table: {venv}" in frags.stdout

    recipes = _kvmlab(installed, elsewhere, "image", "recipes")
    assert recipes.returncode == 0 and "bookworm" in recipes.stdout and str(venv) in recipes.stdout, recipes

    helptext = _kvmlab(installed, elsewhere, "kernel", "build", "--help")
    assert helptext.returncode == 0, helptext.stderr
    assert "base, " in helptext.stdout and "kasan" in helptext.stdout

    log = elsewhere / "console.log"
    shutil.copy2(REPO / "tests" / "fixtures" / "report" / "lkdtm-warning.log", log)
    rep = _kvmlab(installed, elsewhere, "report", log.name)
    assert rep.returncode == 0, rep.stderr
    assert "WARNING in" in rep.stdout, rep.stdout

    doctor = _kvmlab(installed, elsewhere, "doctor")
    assert doctor.returncode in (0, 1), doctor.stderr  # 1: something on this host is missing
    assert "Traceback" not in doctor.stderr, doctor.stderr
    assert [line for line in doctor.stdout.splitlines() if line.split()[1:2] == ["qemu:"]], doctor.stdout
    assert f"data: kernel configs {venv}" in doctor.stdout, doctor.stdout
