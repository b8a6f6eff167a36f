"""Every configuration key and command is documented in the README (idea from datasette)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pipeline.cli import COMMANDS
from pipeline.config.sources import FEED_KEYS, STORAGE_KEYS
from pipeline.models import DeliverySettings, FetchSettings, NewsletterSettings, ScheduleSettings, WorkerSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    match = re.search(rf"^### `{title}`.*?(?=^##)", README, re.S | re.M)
    assert match, f"README has no section for `{title}`"
    return match.group(0)


@pytest.mark.parametrize(
    ("title", "keys"),
    [
        ("newsletter", [f.name for f in dataclasses.fields(NewsletterSettings)]),
        ("fetch", [f.name for f in dataclasses.fields(FetchSettings)]),
        ("schedule", [f.name for f in dataclasses.fields(ScheduleSettings)]),
        ("storage", sorted(STORAGE_KEYS)),
        ("feeds", sorted(FEED_KEYS)),
        ("delivery", [f.name for f in dataclasses.fields(DeliverySettings)]),
        ("workers", [f.name for f in dataclasses.fields(WorkerSettings)]),
    ],
)
def test_every_sources_key_is_documented(title: str, keys: list[str]) -> None:
    text = section(title)
    missing = [k for k in keys if f"| `{k}` |" not in text]
    assert not missing, f"undocumented keys in `{title}`: {missing}"


def test_every_command_is_documented() -> None:
    missing = [c for c in COMMANDS if f"`pipeline {c}" not in README]
    assert not missing, f"undocumented commands: {missing}"


def test_readme_starts_with_the_two_setup_commands() -> None:
    head = README[:1500]
    assert "make demo" in head and "make test" in head


def test_every_topics_yaml_feature_is_documented() -> None:
    from pipeline.config.topics import DAMPEN_KEYS, OPERATOR_OPTIONS, OPERATORS, RULE_KEYS, TOP_KEYS, TOPIC_KEYS

    match = re.search(r"^## Topic rules \(`topics.yaml`\).*?(?=^## )", README, re.S | re.M)
    assert match, "README has no 'Topic rules (`topics.yaml`)' section"
    text = match.group(0)
    features = set(TOP_KEYS) | set(TOPIC_KEYS) | set(RULE_KEYS) | set(OPERATORS) | set(DAMPEN_KEYS)
    features |= {option for options in OPERATOR_OPTIONS.values() for option in options}
    missing = sorted(f for f in features if f"`{f}`" not in text)
    assert not missing, f"undocumented topics.yaml keys or operators: {missing}"
