"""Nothing stored is lost: killed runs, full disks and old stores leave everything consistent."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.store.sqlite import SqliteStore
from pipeline.store.sqlite.schema import MIGRATIONS

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"
FIXTURE_V1 = REPO / "tests" / "fixtures" / "store-v1.sqlite3"


def run_args(root: Path, date: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "run", "--config", str(DEMO), "--date", date,
            "--db", str(root / "db.sqlite3"), "--output", str(root / "out")]


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def assert_consistent(root: Path) -> None:
    db = root / "db.sqlite3"
    if db.exists():
        with sqlite3.connect(db) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    out = root / "out"
    if out.exists():
        leftovers = [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]
        assert not leftovers, f"partial files left in output/: {leftovers}"
        for page in out.rglob("*.html"):
            assert page.read_text(encoding="utf-8").rstrip().endswith("</html>"), f"truncated {page}"


def test_sigkill_at_ten_points_loses_nothing(tmp_path: Path) -> None:
    # One date throughout: which run first sees an undated item decides its issue, so mixing
    # dates would change the output for reasons other than the kills.
    reference = tmp_path / "reference"
    started = time.monotonic()
    subprocess.run(run_args(reference, "2025-05-06"), cwd=REPO, check=True, capture_output=True, timeout=120)
    duration = time.monotonic() - started

    victim = tmp_path / "victim"
    # Ten kills at points spread over a whole run, from interpreter start-up to the last write.
    # A run that finishes before its kill point does not count (machine load varies), so the
    # loop goes on until ten runs were really killed.
    kills: list[float] = []
    for attempt in range(40):
        if len(kills) == 10:
            break
        delay = duration * ((attempt * 7) % 10 + 0.5) / 10
        process = subprocess.Popen(run_args(victim, "2025-05-06"), cwd=REPO, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills.append(delay)
        else:
            duration *= 0.85  # runs are quicker than the reference now: pull the kill points in
        process.wait(timeout=60)
        assert_consistent(victim)
    assert len(kills) == 10, f"only {len(kills)} runs could be killed before they ended"

    subprocess.run(run_args(victim, "2025-05-06"), cwd=REPO, check=True, capture_output=True, timeout=120)
    assert_consistent(victim)
    assert snapshot(victim / "out") == snapshot(reference / "out")


def test_disk_full_keeps_previous_output(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["run", "--config", DEMO, "--date", "2025-05-06", "--db", tmp_path / "db.sqlite3",
            "--output", tmp_path / "out"]
    assert cli(*args).code == 0
    before = snapshot(tmp_path / "out")
    page = tmp_path / "out" / "2025-05-06" / "index.html"
    page.write_text(page.read_text(encoding="utf-8").replace("Tech Matin", "Tech  Matin"), encoding="utf-8")
    before = snapshot(tmp_path / "out")

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pipeline.archive.os.replace", full)
    result = cli(*args)
    assert result.code == 1
    assert result.err.count("\n") == 1 and "No space left on device" in result.err
    assert snapshot(tmp_path / "out") == before  # old pages whole, no temp file left


def test_read_only_output_is_a_clear_error(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def read_only(path: object, flags: int, *args: object, **kwargs: object) -> int:
        # What a read-only output folder answers to any file creation in it (named or O_TMPFILE).
        tmpfile = getattr(os, "O_TMPFILE", 0)
        creates = flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile)
        if creates and str(path).startswith(str(tmp_path / "out")):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("pipeline.archive.os.open", read_only)
    result = cli("run", "--config", DEMO, "--date", "2025-05-06", "--db", tmp_path / "db.sqlite3",
                 "--output", tmp_path / "out")
    assert result.code == 1
    assert "Read-only file system" in result.err and "Traceback" not in result.err


def test_store_from_the_first_schema_upgrades_in_place(tmp_path: Path, cli) -> None:
    path = tmp_path / "old.sqlite3"
    shutil.copy(FIXTURE_V1, path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    with SqliteStore(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.integrity_ok()
        assert {i.id for i in store.all_items()} == {"i1", "i2"}
        state = store.feed_states([])  # no configured feed: nothing asked, nothing lost
        assert state == {}
        assert [health.feed_id for health in store.feed_health()] == ["cnil"]
        assert [i.date.isoformat() for i in store.issues()] == ["2025-05-06"]
        hits = store.search_stories("courtier donnees")  # stories stored before search existed
        assert [h.date.isoformat() if hasattr(h.date, "isoformat") else h.date for h in hits] == ["2025-05-06"]
    with SqliteStore(path) as store:  # opening again is a no-op
        assert store.schema_version == len(MIGRATIONS)
        assert [i.code_fingerprint for i in store.issues()] == [""]  # not known
    # The code an issue was built by before the store kept it is not known: not said to have changed.
    listed = cli("archive", "list", "--config", DEMO, "--topics", REPO / "topics.yaml", "--db", path)
    assert listed.code == 0, listed.err
    assert listed.out.endswith("  (rules and templates changed since built: rebuild)\n"), listed.out


def test_interrupted_migration_leaves_the_old_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.sqlite3"
    shutil.copy(FIXTURE_V1, path)
    broken = (*MIGRATIONS[:1], "CREATE TABLE half (x INTEGER); THIS IS NOT SQL")
    monkeypatch.setattr("pipeline.store.sqlite.schema.MIGRATIONS", broken)
    with pytest.raises(Exception):  # noqa: B017 - any failure; what matters is what is left behind
        SqliteStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "half" not in tables and "items" in tables


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_wal_mode_is_on(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "db.sqlite3").close()
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
