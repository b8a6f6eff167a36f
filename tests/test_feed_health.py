"""Feeds that break without saying so: stale feeds are reported, health is listed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import time_machine

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"


def test_a_feed_with_nothing_new_for_weeks_is_reported(tmp_path: Path, cli) -> None:
    common = ["--config", DEMO, "--db", tmp_path / "db.sqlite3", "--output", tmp_path / "out"]
    first = cli("run", "--date", "2025-05-06", *common)
    assert first.code == 0, first.err
    assert "no new item" not in first.err
    # Seven weeks later the same files are served again: nothing new from any feed.
    later = cli("run", "--date", "2025-06-24", *common)
    assert later.code == 0, later.err
    stale = [line for line in later.err.splitlines() if "no new item for" in line]
    assert len(stale) == 9, later.err
    assert "feed veilleur-numerique: no new item for 49 days (since 2025-05-06)" in later.err
    listing = cli("feeds", "list", *common[:4])
    [line] = [line for line in listing.out.splitlines() if line.startswith("veilleur-numerique ")]
    assert line.split()[-1] == "2025-05-06"  # its newest item, first seen for that issue


def test_feeds_list_has_a_header_and_gives_times_in_the_newsletters_zone(tmp_path: Path, cli) -> None:
    common = ["--config", DEMO, "--db", tmp_path / "db.sqlite3", "--output", tmp_path / "out"]
    # 04:30 UTC on 6 May is 06:30 in Paris (summer time): what the editor's clock says.
    with time_machine.travel(dt.datetime(2025, 5, 6, 4, 30, tzinfo=dt.UTC), tick=False):
        assert cli("run", "--date", "2025-05-06", *common).code == 0
    listing = cli("feeds", "list", *common[:4])
    assert listing.code == 0, listing.err
    header, *rows = listing.out.splitlines()
    assert header.split() == ["FEED", "STATUS", "FAILURES", "LAST", "SUCCESS", "(Europe/Paris)", "ITEMS",
                              "NEWEST", "ITEM", "LAST", "ERROR"]
    assert len(rows) == 9
    for row in rows:
        _, status, failures, day, time, zone, items, newest = row.split()
        assert (status, failures, day, time, zone, newest) == ("new", "0", "2025-05-06", "06:30", "CEST",
                                                              "2025-05-06"), row
        assert int(items) > 0
        # Each value stands under its heading.
        assert row.index(f" {day} {time}") + 1 == header.index("LAST SUCCESS"), (header, row)


def test_staleness_check_can_be_turned_off(tmp_path: Path, cli) -> None:
    config = tmp_path / "demo.yaml"
    text = DEMO.read_text(encoding="utf-8").replace("feeds:\n", "fetch:\n  stale_after_days: 0\nfeeds:\n", 1)
    config.write_text(text, encoding="utf-8")
    (tmp_path / "feeds").symlink_to(DEMO.parent / "feeds")
    common = ["--config", config, "--topics", REPO / "topics.yaml", "--db", tmp_path / "db.sqlite3",
              "--output", tmp_path / "out"]
    assert cli("run", "--date", "2025-05-06", *common).code == 0
    later = cli("run", "--date", "2025-06-24", *common)
    assert later.code == 0 and "no new item" not in later.err
