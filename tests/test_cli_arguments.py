"""The command line's own checks: every date and number is validated while the arguments are
parsed (one line, exit 2, never a traceback), a date far ahead is refused unless --force, and
the small things of issue 18 point 8 (options after the action, bare `pipeline`, --help)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import time_machine

from pipeline.cli import build_parser, subcommands

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"


def _one_line_usage_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.code == 2, result
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    return str(result.err)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["run", "--date", "0001-01-01"],
         "argument --date: date 0001-01-01 is out of range (1970-01-01 to 9998-12-31)"),
        (["run", "--date", "9999-12-31"], "is out of range"),
        (["rebuild", "--date", "1969-12-31"], "is out of range"),
        (["send", "--date", "0001-01-01"], "is out of range"),
        (["try-rules", "topics.yaml", "--until", "9999-12-31"], "is out of range"),
        (["try-rules", "topics.yaml", "--since", "0001-01-01"], "is out of range"),
        (["archive", "show", "0001-01-01"], "is out of range"),
        (["run", "--date", "20250506"], "invalid date '20250506': expected YYYY-MM-DD"),
        (["run", "--date", "2025-W19-2"], "invalid date '2025-W19-2': expected YYYY-MM-DD"),
        (["archive", "search", "rgpd", "--limit", "99999999999999999999"],
         "argument --limit: must be from 1 to 10000, got 99999999999999999999"),
        (["archive", "search", "rgpd", "--limit", "0"], "argument --limit: must be from 1 to 10000, got 0"),
        (["archive", "search", "rgpd", "--limit", "9" * 5000], "argument --limit: invalid number"),
        (["serve", "--port", "99999"], "argument --port: must be from 0 to 65535, got 99999"),
        (["serve", "--port", "-1"], "argument --port: must be from 0 to 65535, got -1"),
        (["run", "--lock-timeout", "inf"], "argument --lock-timeout: must be at most 86400 seconds"),
        (["run", "--lock-timeout", "1e400"], "argument --lock-timeout: must be at most 86400 seconds"),
        (["run", "--lock-timeout", "nan"], "argument --lock-timeout: must not be negative"),
    ],
)
def test_dates_and_numbers_out_of_range_are_one_line_and_exit_2(cli, args: list[str], reason: str) -> None:
    assert reason in _one_line_usage_error(cli(*args))


def test_a_date_more_than_a_day_ahead_is_refused_unless_forced(tmp_path: Path, cli) -> None:
    common = ["--config", DEMO, "--db", tmp_path / "db.sqlite3", "--output", tmp_path / "out"]
    # 23:30 UTC on 5 May is already 6 May in Paris, the newsletter's zone: 7 May is "tomorrow".
    with time_machine.travel(dt.datetime(2025, 5, 5, 23, 30, tzinfo=dt.UTC), tick=False):
        refused = cli("run", "--date", "2025-05-08", *common)
        far = cli("run", "--date", "2205-05-06", *common)
        rebuilt = cli("rebuild", "--date", "2205-05-06", *common)
        tomorrow = cli("run", "--date", "2025-05-07", *common)
    assert _one_line_usage_error(refused).strip() == (
        "pipeline: error: --date 2025-05-08 is more than a day ahead of today (2025-05-06 in Europe/Paris); "
        "check the date, or add --force to build it anyway")
    assert "--date 2205-05-06 is more than a day ahead" in _one_line_usage_error(far)
    assert "--date 2205-05-06 is more than a day ahead" in _one_line_usage_error(rebuilt)
    assert tomorrow.code == 0, tomorrow.err
    assert not (tmp_path / "out" / "2205-05-06").exists() and not (tmp_path / "out" / "2025-05-08").exists()

    forced = cli("run", "--date", "2205-05-06", "--force", *common)
    assert forced.code == 0, forced.err
    assert (tmp_path / "out" / "2205-05-06" / "index.html").is_file()


def test_subscribers_actions_take_the_common_options_after_the_action(tmp_path: Path, cli) -> None:
    config = tmp_path / "sources.yaml"
    config.write_text(
        "feeds:\n  - {name: Veille, url: feed.xml}\n"
        "delivery:\n  from_address: lettre@techmatin.example.org\n"
        "  unsubscribe_url: https://techmatin.example.org/desinscription?email={email}&token={token}\n",
        encoding="utf-8")
    (tmp_path / "recipients.csv").write_text("email,name,topics\n", encoding="utf-8")
    after = ["--config", str(config), "--topics", str(REPO / "topics.yaml"), "--db", str(tmp_path / "db.sqlite3")]

    added = cli("subscribers", "add", "jeanne@example.org", "--name", "Jeanne", *after)
    assert added.code == 0, added.err
    listed = cli("subscribers", "list", *after)
    assert listed.code == 0 and "jeanne@example.org" in listed.out
    removed = cli("subscribers", "remove", "jeanne@example.org", *after)
    assert removed.code == 0, removed.err
    assert (tmp_path / "db.sqlite3").is_file()  # --db after the action was the one used
    assert "jeanne" not in (tmp_path / "recipients.csv").read_text(encoding="utf-8")


def test_bare_pipeline_prints_the_help(cli) -> None:
    result = cli()
    assert result.code == 2
    assert result.out.startswith("usage: pipeline")
    listed = {line.split()[0] for line in result.out.splitlines() if line.startswith("    ") and line.strip()}
    assert {"run", "rebuild", "check", "archive", "subscribers", "send"} <= listed
    assert result.err == ""


def test_each_subcommand_help_opens_with_its_description(cli) -> None:
    commands = [(path, line) for path, _, line in subcommands(build_parser())]
    assert len(commands) >= 20  # 12 commands and their actions
    for path, line in commands:
        result = cli(*path, "--help")
        assert result.code == 0
        description = result.out.split("\n\n")[1]
        assert line and description.replace("\n", " ") == " ".join(line.split()), (path, result.out)


def test_the_collector_is_tuned_for_a_process_of_its_own_and_left_alone_for_a_caller(cli) -> None:  # type: ignore[no-untyped-def]
    """`pipeline` as a command collects its youngest generation less often and freezes what it
    made before the process ends (its final collections skip it); main() called with arguments
    (tests, other programs) leaves the caller's collector as it was."""
    import gc
    import subprocess
    import sys

    from pipeline.cli import YOUNG_COLLECTION

    code = ("import gc, sys\nfrom pipeline.cli import main\nsys.argv = ['pipeline']\nbefore = gc.get_freeze_count()\n"
            "code = main()\nprint(code, gc.get_threshold()[0], gc.get_freeze_count() > before)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split()[-3:] == ["2", str(YOUNG_COLLECTION), "True"]  # bare `pipeline`: its help, exit 2

    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert cli().code == 2
    assert (gc.get_threshold(), gc.get_freeze_count()) == (threshold, frozen)
