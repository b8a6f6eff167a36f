"""Every configuration key and command is documented in the README (idea from datasette)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pipeline.cli import COMMANDS
from pipeline.config.sources import FEED_KEYS, STORAGE_KEYS
from pipeline.models import DeliverySettings, FetchSettings, NewsletterSettings, ScheduleSettings, WorkerSettings

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


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


def console_blocks(command: str) -> list[str]:
    """The lines a README console block shows after `$ COMMAND` (the command as typed)."""
    match = re.search(rf"^```console\n\$ {re.escape(command)}\n(.*?)^```", README, re.S | re.M)
    assert match, f"README has no console block for `$ {command}`"
    return match.group(1).splitlines()


@pytest.mark.parametrize("command", ["pipeline evaluate examples/labelled.jsonl",
                                     "pipeline suggest-rules examples/labelled.jsonl --topic rgpd"])
def test_the_readme_rules_examples_run_as_shown_without_shared(command: str, tmp_path: Path, run_cli) -> None:
    # A fresh folder with the repository's examples and rules only: nothing of ../shared, no archive.
    (tmp_path / "examples").symlink_to(REPO / "examples")
    (tmp_path / "topics.yaml").symlink_to(REPO / "topics.yaml")
    result = run_cli(*command.split()[1:], cwd=tmp_path)
    assert result.code == 0, result.err
    output = result.out.splitlines()
    # Each line the README shows is in the output, in order; "…" stands for lines left out.
    position = 0
    gap = False
    for shown in console_blocks(command):
        if shown == "…":
            gap = True
            continue
        if gap:
            assert shown in output[position:], f"README line not in the output: {shown!r}\n{result.out}"
            position = output.index(shown, position)
        else:
            assert output[position:position + 1] == [shown], f"README line {shown!r} is not printed:\n{result.out}"
        position += 1
        gap = False


def test_the_readme_email_section_names_every_variable_and_its_delivery_block_works(
        tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    email = README[README.index("## Email delivery"):]
    email = email[:email.index("\n## ", 5)]
    for field in ("unsubscribe_secret_env", "username_env", "password_env"):
        variable = next(f.default for f in dataclasses.fields(DeliverySettings) if f.name == field)
        assert f"`{variable}`" in email, f"README's email section does not name {variable}"
    block = re.search(r"A minimal `delivery:` block.*?```yaml\n(delivery:\n.*?)```", email, re.S)
    assert block, "README's email section has no minimal `delivery:` block"

    # Pasted at the end of the demo's sources.yaml, with the one variable the README says is always needed.
    (tmp_path / "feeds").symlink_to(REPO / "examples" / "feeds")
    config = tmp_path / "sources.yaml"
    config.write_text((REPO / "examples" / "demo.yaml").read_text(encoding="utf-8") + "\n" + block.group(1),
                      encoding="utf-8")
    (tmp_path / "topics.yaml").symlink_to(REPO / "topics.yaml")
    (tmp_path / "recipients.csv").write_text("email,name,topics\n", encoding="utf-8")
    where = ("--config", config, "--db", tmp_path / "db.sqlite3")
    assert run_cli("run", *where, "--output", tmp_path / "out", "--date", "2025-05-06", cwd=tmp_path).code == 0
    added = run_cli("subscribers", "add", "jeanne@example.org", "--name", "Jeanne Morel", *where, cwd=tmp_path)
    assert added.code == 0, added.err
    monkeypatch.delenv("TECH_MATIN_UNSUBSCRIBE_SECRET", raising=False)
    unset = run_cli("send", *where, "--date", "2025-05-06", "--dry-run", cwd=tmp_path)
    assert unset.code == 2 and "TECH_MATIN_UNSUBSCRIBE_SECRET" in unset.err, unset  # it names what is missing
    monkeypatch.setenv("TECH_MATIN_UNSUBSCRIBE_SECRET", "a-secret-of-at-least-thirty-two-bytes-0123")
    sent = run_cli("send", *where, "--date", "2025-05-06", "--dry-run", cwd=tmp_path)
    assert sent.code == 0, sent.err
    assert len(list((tmp_path / "outbox" / "2025-05-06").glob("*.eml"))) == 1, sent.out
