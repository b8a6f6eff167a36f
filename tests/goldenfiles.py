"""Golden files: expected bytes of generated pages, compared exactly, rewritten on purpose.

`UPDATE_GOLDEN=1 make test` (or the same variable on one pytest run) rewrites every golden file
from what the code produces now instead of comparing; read `git diff tests/golden` before
committing it. A mismatch names the file, the first differing line and column, and both texts
around that point.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def check_golden(produced: str, golden: Path) -> None:
    """Fail unless `golden` holds exactly `produced` (or rewrite it under UPDATE_GOLDEN=1)."""
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(produced.encode("utf-8"))
        return
    assert golden.is_file(), f"{golden} is missing: create it with UPDATE_GOLDEN=1 make test"
    expected = golden.read_bytes().decode("utf-8")
    if produced == expected:
        return
    produced_lines, expected_lines = produced.splitlines(), expected.splitlines()
    line = next((i for i, (a, b) in enumerate(zip(produced_lines, expected_lines, strict=False)) if a != b),
                min(len(produced_lines), len(expected_lines)))
    want = expected_lines[line] if line < len(expected_lines) else "<end>"
    got = produced_lines[line] if line < len(produced_lines) else "<end>"
    column = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    start = max(column - 60, 0)  # long lines (the Atom feed's entries): show the place, not the whole line
    pytest.fail(f"{golden.name} differs from the golden file at line {line + 1}, column {column + 1}:\n"
                f"  golden:   {want[start:column + 60]}\n"
                f"  produced: {got[start:column + 60]}\n"
                "If the change is deliberate: UPDATE_GOLDEN=1 make test, then review `git diff tests/golden`.")
