"""Bad input on the command line: exit code 2, one line naming file, line and problem, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_sources_yaml

GOOD_FEEDS = "feeds:\n  - name: Local\n    url: feed.xml\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "sources.yaml: file not found"),
        ("feeds:\n  - name: x\n    url: [unclosed\n", "YAML syntax error"),
        ("newsletter:\n  nmae: x\n" + GOOD_FEEDS, "sources.yaml:2: newsletter.nmae: unknown key"),
        ("feeds:\n  - name: Sans adresse\n", "sources.yaml:2: feeds[0]: missing required key 'url'"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, run_cli, text: str | None, expected: str) -> None:
    config = tmp_path / "sources.yaml" if text is None else write_sources_yaml(tmp_path, text)
    result = run_cli("run", "--config", config, "--db", tmp_path / "db.sqlite3", "--output", tmp_path / "out")
    assert result.code == 2
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert expected in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--date", "2025-13-01"],
        ["rebuild"],
        ["rebuild", "--date", "2025-05-06", "--all"],
        ["frobnicate"],
        ["serve", "--port", "eighty"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1, result.err


def test_bad_date_names_the_value(cli) -> None:
    result = cli("run", "--date", "06/05/2025")
    assert "invalid date '06/05/2025': expected YYYY-MM-DD" in result.err
