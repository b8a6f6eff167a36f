"""Small helpers shared by the tests (kept here once rather than copied into each file)."""

from __future__ import annotations

import contextlib
import io
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on now (the system picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def call_cli(*args: str | Path) -> tuple[int, str, str]:
    """`pipeline ARGS` called in this process: its exit code, stdout and stderr. argparse's own
    exits (usage errors, --help) give their code, as the command would."""
    from pipeline.cli import main  # when called: the helpers that need no pipeline do not load it

    out, err = io.StringIO(), io.StringIO()
    try:
        # argparse writes to sys.stderr itself
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args], out=out, err=err)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return code, out.getvalue(), err.getvalue()


def write_sources_yaml(folder: Path, text: str) -> Path:
    """`text` written as folder/sources.yaml."""
    path = folder / "sources.yaml"
    path.write_text(text, encoding="utf-8")
    return path
