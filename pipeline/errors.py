"""Errors that the command line turns into one-line messages (exit code 2)."""

from __future__ import annotations

from pathlib import Path


class PipelineError(Exception):
    """A user-facing error: bad input, not a bug. Its str() is the whole message."""

    exit_code = 2


class RunFailed(PipelineError):
    """The job ran but could not do its work (no feed readable, disk full…): exit code 1."""

    exit_code = 1

    def __init__(self, message: str, report: object | None = None):
        super().__init__(message)
        self.report = report  # what the run found before failing (an app.RunReport), for the user


class ConfigError(PipelineError):
    """A problem in a configuration or rules file, located by file, line and key."""

    def __init__(self, path: Path | str, message: str, line: int | None = None, key: str | None = None):
        self.path = Path(path)
        self.line = line
        self.key = key
        self.message = message
        where = f"{self.path}:{line}" if line else f"{self.path}"
        what = f"{key}: {message}" if key else message
        super().__init__(printable(f"{where}: {what}"))


def printable(text: str) -> str:
    """`text` on one line: a line break, control or invisible character that a file put in a key
    or a value is shown escaped (\x85, \u202e), never raw."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def unexpected_error(exc: BaseException) -> str:
    """A one-line reason for an exception that a per-item boundary (one feed of a run) caught
    without expecting it: its type says what broke, its first line where."""
    text = str(exc).strip()
    first = text.splitlines()[0][:200] if text else ""
    return f"unexpected error: {type(exc).__name__}" + (f": {first}" if first else "")
