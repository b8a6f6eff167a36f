"""Shared fixtures: paths of the repo and of ../shared, and a way to call the CLI."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present on this machine")
    return SHARED


@pytest.fixture
def cli():
    """Call `pipeline` in-process: cli(args...) -> CliResult."""
    from pipeline.cli import main

    def call(*args: str | Path) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        try:
            # argparse writes its own errors to sys.stderr
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main([str(a) for a in args], out=out, err=err)
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        return CliResult(code, out.getvalue(), err.getvalue())

    return call


@pytest.fixture
def run_cli():
    """Run `python -m pipeline` in a real process (for exit codes, tracebacks, signals)."""

    def call(*args: str | Path, cwd: Path = REPO, stdin: str | None = None, timeout: float = 120) -> CliResult:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", *[str(a) for a in args]], cwd=cwd, input=stdin,
            capture_output=True, text=True, timeout=timeout, env=env,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return call
