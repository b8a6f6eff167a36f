"""sources.yaml loading: good configs load, every kind of bad input names file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from tests.helpers import write_sources_yaml

GOOD = """\
newsletter:
  name: Tech Matin
  byline: [Camille Roux]
  timezone: Europe/Paris
  base_url: https://example.org/archive
  issue_time: "06:30"
fetch:
  concurrency: 4
feeds:
  - name: Numérama Test
    url: feeds/a.xml
    weight: 2
  - id: cnil
    name: CNIL
    url: https://www.cnil.fr/fr/rss.xml
    language: fr
"""


def test_good_config_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    config = load_config(write_sources_yaml(tmp_path, GOOD))
    assert config.newsletter.base_url == "https://example.org/archive/"
    assert config.newsletter.issue_time.hour == 6 and config.newsletter.issue_time.minute == 30
    assert config.fetch.concurrency == 4 and config.fetch.per_host == 4
    first, second = config.feeds
    assert first.id == "numerama-test" and first.weight == 2.0
    assert first.url == (tmp_path / "feeds" / "a.xml").as_uri()
    assert second.url == "https://www.cnil.fr/fr/rss.xml"


def test_real_sources_yaml_has_at_least_twelve_feeds(repo: Path) -> None:
    config = load_config(repo / "sources.yaml")
    assert len(config.feeds) >= 12
    assert all(f.url.startswith("https://") for f in config.feeds)
    assert config.newsletter.name == "Tech Matin" and config.newsletter.timezone == "Europe/Paris"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("  concurrency: 4", "  concurency: 4"), ":8: fetch.concurency: unknown key"),
        (GOOD + "  - name: Sans URL\n", ":17: feeds[2]: missing required key 'url'"),
        (GOOD.replace("name: Tech Matin", "name: [Tech"), "YAML syntax error"),
        (GOOD.replace("weight: 2", "weight: lourd"), ":12: feeds[0].weight: must be float"),
        (GOOD.replace("timezone: Europe/Paris", "timezone: Europe/Parsi"),
         ":4: newsletter.timezone: unknown time zone"),
        (GOOD.replace("url: https://www.cnil.fr/fr/rss.xml", "url: ftp://x/y"),
         ":15: feeds[1].url: unsupported URL scheme"),
        (GOOD.replace("- id: cnil", "- id: numerama-test"), "duplicate feed id 'numerama-test'"),
        (GOOD.replace('issue_time: "06:30"', "issue_time: midi"), "newsletter.issue_time: must be a time HH:MM"),
        ("newsletter:\n  name: x\n", ":1: feeds: missing required key 'feeds'"),
        ("", "file is empty"),
        ("- just\n- a list\n", "must be a mapping"),
        (GOOD + "colour: blue\n", ":17: colour: unknown key"),
        (GOOD.replace("  concurrency: 4", "  deadline: .nan"), ":8: fetch.deadline: must be a finite number"),
        (GOOD.replace("weight: 2", "weight: .inf"), ":12: feeds[0].weight: must be a finite number"),
        (GOOD.replace("url: feeds/a.xml", 'url: "feeds/a\\0.xml"'),
         ":11: feeds[0].url: URL contains a control or invisible character: 'feeds/a\\x00.xml'"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write_sources_yaml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message, message
    assert "\n" not in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: file not found"):
        load_config(tmp_path / "nowhere.yaml")
