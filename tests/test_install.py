"""The install route: `python -m build` makes a wheel that works in a fresh virtual
environment, without this repository's set-up script, templates included."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.gitrepo import git

pytestmark = pytest.mark.integration  # builds a wheel and installs its dependencies

ROOT = Path(__file__).resolve().parents[1]


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if importlib.util.find_spec("build") is None:
        pytest.fail("the build package is missing: pip install -e '.[dev]' (scripts/setup.sh)")
    offline = all(importlib.util.find_spec(m) for m in ("setuptools", "wheel"))
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", *(["--no-isolation"] if offline else []),
         "--outdir", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheels = sorted((tmp_path / "dist").glob("plainsail-*-py3-none-any.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "plainsail/ci/templates/github-deploy.yml" in names
    assert "plainsail/py.typed" in names
    assert not any(n.startswith("tests/") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", f"{wheel}[audit]"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert pip.returncode == 0, pip.stderr[-2000:]
    exe = venv / "bin" / "plainsail"
    help_ = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60,
                           check=False)
    assert help_.returncode == 0 and "init" in help_.stdout and "audit" in help_.stdout
    # The installed copy finds its templates: init writes a workflow that audits clean.
    repo = tmp_path / "svc"
    repo.mkdir()
    (repo / "Dockerfile").write_text("FROM scratch\nEXPOSE 8000\n")
    git(repo, "init", "-q", "-b", "main")
    init = subprocess.run([str(exe), "init", "--image", "registry.example.com/a/svc",
                           "--host", "local"], cwd=repo, capture_output=True, text=True,
                          timeout=60, check=False, env={"PATH": "/usr/bin:/bin"})
    assert init.returncode == 0, init.stderr
    assert (repo / ".github/workflows/deploy.yml").read_text().startswith("# Build, sign")
    audit = subprocess.run([str(exe), "audit", "."], cwd=repo, capture_output=True, text=True,
                           timeout=60, check=False)
    assert audit.returncode == 0, audit.stdout
    assert "0 error(s), 0 warning(s)" in audit.stdout
