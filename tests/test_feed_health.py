"""Feeds that break without saying so: stale feeds are reported, health is listed."""

from __future__ import annotations

from pathlib import Path

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
    assert "newest_item=2025-05-06" in listing.out


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
