"""Trying a rule change on stored items before it goes live (`pipeline try-rules`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("stored")
    assert main(["run", "--config", str(DEMO), "--date", "2025-05-06", "--db", str(root / "db.sqlite3"),
                 "--output", str(root / "out")]) == 0
    return root


def candidate(tmp_path: Path, threshold: str) -> Path:
    text = (REPO / "topics.yaml").read_text(encoding="utf-8")
    assert "\nthreshold: 3\n" in text
    path = tmp_path / "candidate.yaml"
    path.write_text(text.replace("\nthreshold: 3\n", f"\nthreshold: {threshold}\n"), encoding="utf-8")
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_stricter_candidate_lists_the_items_that_would_drop_out(stored: Path, tmp_path: Path, cli) -> None:
    before = digest(stored / "db.sqlite3")
    result = cli("try-rules", candidate(tmp_path, "6"), "--config", DEMO, "--db", stored / "db.sqlite3")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert any(line.split()[1].startswith("-") for line in lines[:-1])
    assert not any("+" in line.split()[1] for line in lines[:-1] if line[:4].isdigit())
    assert "0 gain a topic" in lines[-1] and "Nothing was written" in lines[-1]
    assert digest(stored / "db.sqlite3") == before  # read-only


def test_a_looser_candidate_shows_what_gains_a_topic_and_why(stored: Path, tmp_path: Path, cli) -> None:
    result = cli("try-rules", candidate(tmp_path, "1"), "--config", DEMO, "--db", stored / "db.sqlite3",
                 "--since", "2025-05-05", "--until", "2025-05-05")
    assert result.code == 0, result.err
    gained = [line for line in result.out.splitlines() if " +" in line]
    assert gained and all(line.startswith("2025-05-05") for line in gained)
    # every gained topic is explained by the words that matched, with their field
    assert "(title)" in result.out or "(summary)" in result.out or "(content)" in result.out


def test_the_same_rules_change_nothing(stored: Path, cli) -> None:
    result = cli("try-rules", REPO / "topics.yaml", "--config", DEMO, "--db", stored / "db.sqlite3")
    assert result.code == 0
    assert result.out.startswith("0 of 81 stored items would change")


def test_a_broken_candidate_is_one_clear_line(tmp_path: Path, cli) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("topics:\n  - id: x\n    heading: X\n    theme: X\n    rules:\n      - name: r\n        any: []\n",
                   encoding="utf-8")
    result = cli("try-rules", bad, "--config", DEMO, "--db", tmp_path / "db.sqlite3")
    assert result.code == 2
    assert str(bad) in result.err and len(result.err.strip().splitlines()) == 1
