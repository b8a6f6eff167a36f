"""The package's metadata builds without any setuptools deprecation banner (issue 18, point 8:
`license = {text = ...}` printed a long warning on every install)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_metadata_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, project / name)
    shutil.copytree(REPO / "pipeline", project / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
    (tmp_path / "metadata").mkdir()
    # The PEP 517 hook pip calls first; -W error turns a SetuptoolsDeprecationWarning into a failure.
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c",
         "import sys, setuptools.build_meta as backend; print(backend.prepare_metadata_for_build_wheel(sys.argv[1]))",
         str(tmp_path / "metadata")],
        cwd=project, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [dist_info] = (tmp_path / "metadata").glob("*.dist-info")
    metadata = (dist_info / "METADATA").read_text(encoding="utf-8")
    assert "License-Expression: MIT" in metadata
