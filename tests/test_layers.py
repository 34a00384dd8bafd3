"""The import contracts in pyproject.toml ([tool.importlinter]) hold: layers only point down.

`stc` is a namespace mapped from the top-level folders by package-dir, which import-linter
cannot walk through the editable install's path hook; the test lays the same folders out as
`stc/<name>` links in a temporary folder and runs the real `lint-imports` on them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

PACKAGES = ("core", "manifests", "curation", "degrade", "model", "audit", "pipelines")


def lint_imports(tmp: Path, source: Path = ROOT) -> subprocess.CompletedProcess:
    """`lint-imports` with this repo's contracts over the packages found in `source`."""
    stc = tmp / "tree" / "stc"
    stc.mkdir(parents=True)
    for name in PACKAGES:
        (stc / name).symlink_to(source / name, target_is_directory=True)
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(stc.parent)}
    return subprocess.run([str(exe), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold(tmp_path):
    result = lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    copy = tmp_path / "copy"
    for name in PACKAGES:
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    bad = copy / "core" / "names.py"
    bad.write_text(bad.read_text() + "\nfrom stc.pipelines import cli  # noqa: E402,F401\n")
    result = lint_imports(tmp_path, copy)
    assert result.returncode != 0, result.stdout
    assert "stc.core.names -> stc.pipelines.cli" in result.stdout
