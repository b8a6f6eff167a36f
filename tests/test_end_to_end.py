"""The walking skeleton, end to end: the CLI builds the demo issue from the bundled feeds."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.compose import issue_window
from pipeline.models import NewsletterSettings

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"
DATE = "2025-05-06"
LABELS = json.loads((REPO / "tests" / "fixtures" / "demo_labels.json").read_text(encoding="utf-8"))["items"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run of the CLI on the demo config (in a separate process, as a user runs it)."""
    root = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--config", str(DEMO), "--date", DATE,
         "--db", str(root / "db.sqlite3"), "--output", str(root / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return root


def window_items(root: Path) -> list[tuple[dict[str, object], str]]:
    """Labelled demo items in the 2025-05-06 window, with their canonical URL from the store."""
    start, end = issue_window(dt.date.fromisoformat(DATE), NewsletterSettings())
    with sqlite3.connect(root / "db.sqlite3") as db:
        rows = {(f, g): (u, t) for f, g, u, t in db.execute("SELECT feed_id, guid, url, effective_time FROM items")}
    found = []
    for label in LABELS:
        url, effective = rows[(label["feed_id"], label["guid"])]
        if start <= dt.datetime.fromisoformat(effective) < end:
            found.append((label, url))
    return found


def test_outputs_exist(built: Path) -> None:
    out = built / "out"
    for name in (f"{DATE}/index.html", f"{DATE}/digest.txt", "index.html"):
        assert (out / name).is_file(), name
    assert f'href="{DATE}/index.html"' in (out / "index.html").read_text(encoding="utf-8")


def test_passes_the_shared_issue_checker(built: Path, shared: Path) -> None:
    proc = subprocess.run([sys.executable, str(shared / "tools" / "check_issue.py"), str(built / "out"), DATE],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sections_in_order(built: Path) -> None:
    text = (built / "out" / DATE / "digest.txt").read_text(encoding="utf-8")
    parts = ["Par Camille Roux", "AU MENU |", "nous sommes le mardi 6 mai et vous lisez Tech Matin.",
             "LE FAIT DU JOUR |", "META ET L’IA |", "DONNÉES PERSONNELLES |", "DU CÔTÉ DE BRUXELLES |",
             "MÉDIAS |", "ORDRE DU JOUR |", "RESTEZ BRANCHÉS |"]
    flat = " ".join(text.split())
    positions = [flat.find(part) for part in parts]
    assert -1 not in positions, [p for p, i in zip(parts, positions, strict=True) if i < 0]
    assert positions == sorted(positions)


def test_every_topical_item_appears_and_nothing_else(built: Path) -> None:
    text = (built / "out" / DATE / "digest.txt").read_text(encoding="utf-8")
    items = window_items(built)
    topical = [(label, url) for label, url in items if label["labels"]]
    unrelated = [(label, url) for label, url in items if not label["labels"]]
    assert len(topical) >= 12 and len(unrelated) >= 10  # the demo day is a full one
    missing = [label["title"] for label, url in topical if url not in text]
    assert not missing, f"topical items missing from the digest: {missing}"
    leaked = [label["title"] for label, url in unrelated if url in text]
    assert not leaked, f"unrelated items in the digest: {leaked}"


def test_the_four_outlet_story_appears_once(built: Path) -> None:
    text = (built / "out" / DATE / "digest.txt").read_text(encoding="utf-8")
    story = [(label, url) for label, url in window_items(built) if label["story"] == "meta-training-eu"]
    assert len(story) == 4
    assert all(url in text for _, url in story)  # every outlet is cited…
    with sqlite3.connect(built / "db.sqlite3") as db:
        (stories_json,) = db.execute("SELECT issue_json FROM issues WHERE date = ?", (DATE,)).fetchone()
    issue = json.loads(stories_json)
    all_stories = ([issue["lead"]] + [s for sec in issue["sections"] for s in sec["stories"]]
                   + issue["further_reading"])
    holders = [s for s in all_stories if any(url == s["url"] for _, url in story)]
    assert len(holders) == 1, "the Meta story must be one story"  # … within one story
    assert len(holders[0]["also_on"]) == 3
    assert text.count(holders[0]["kicker"]) == 1


def test_deadline_is_on_the_agenda(built: Path) -> None:
    text = " ".join((built / "out" / DATE / "digest.txt").read_text(encoding="utf-8").split())
    agenda = text.split("ORDRE DU JOUR |", 1)[1].split("RESTEZ BRANCHÉS |", 1)[0]
    assert "27 mai" in agenda
    assert "2 février 2025" not in agenda  # past dates are left out


def test_running_twice_gives_the_same_output(built: Path, tmp_path: Path) -> None:
    before = {p.relative_to(built / "out"): p.read_bytes() for p in (built / "out").rglob("*") if p.is_file()}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--config", str(DEMO), "--date", DATE,
         "--db", str(built / "db.sqlite3"), "--output", str(built / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    after = {p.relative_to(built / "out"): p.read_bytes() for p in (built / "out").rglob("*") if p.is_file()}
    assert after == before


def test_a_broken_feed_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    config = tmp_path / "demo.yaml"
    text = DEMO.read_text(encoding="utf-8").replace("feeds:\n", "feeds:\n  - name: Flux cassé\n"
                                                    "    url: feeds/does-not-exist.xml\n", 1)
    (tmp_path / "feeds").symlink_to(DEMO.parent / "feeds")
    config.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--config", str(config), "--date", DATE,
         "--db", str(tmp_path / "db.sqlite3"), "--output", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "flux-casse" in proc.stderr and "file not found" in proc.stderr
    assert (tmp_path / "out" / DATE / "index.html").is_file()


def test_no_readable_feed_exits_non_zero(tmp_path: Path) -> None:
    config = tmp_path / "sources.yaml"
    config.write_text("feeds:\n  - name: Absent\n    url: absent.xml\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--config", str(config), "--topics", str(REPO / "topics.yaml"),
         "--date", DATE, "--db", str(tmp_path / "db.sqlite3"), "--output", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "no feed could be read" in proc.stderr and "Traceback" not in proc.stderr
    assert "absent" in proc.stderr and "file not found" in proc.stderr  # why, feed by feed
