"""The build lock shared by `pipeline run`, `pipeline rebuild` and the scheduler.

Real processes: a helper process takes the lock and sleeps; a real `python -m pipeline` waits
for it, then fails with exit code 1 and one clear line. A SIGKILLed holder leaves no stale lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import RunFailed
from pipeline.lock import BuildLock, build_lock, lock_path_for
from pipeline.store import StoreTarget, open_store
from tests.localfeed import write_config

REPO = Path(__file__).resolve().parents[1]


HOLDER = """
import sys, time
from pathlib import Path
from pipeline.lock import BuildLock
lock = BuildLock(Path(sys.argv[1]))
lock.acquire(5, "test helper holding the lock")
print("locked", flush=True)
time.sleep(60)
"""




def pipeline_cmd(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture
def holder() -> Iterator[object]:
    """Start a real process that takes a lock file and sleeps; yields a starter function."""
    procs: list[subprocess.Popen[str]] = []

    def start(lock_file: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_file)], cwd=REPO, stdout=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"  # blocks until the helper holds the lock
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def test_lock_file_sits_beside_the_database(tmp_path: Path) -> None:
    assert lock_path_for(tmp_path / "data" / "a.sqlite3") == tmp_path / "data" / "a.sqlite3.lock"


def test_second_holder_in_the_same_process_waits_then_fails_naming_the_first(tmp_path: Path) -> None:
    first = BuildLock(tmp_path / "x.lock")
    first.acquire(0, "pipeline run 2025-05-06")
    try:
        second = BuildLock(tmp_path / "x.lock")
        started = time.monotonic()
        with pytest.raises(RunFailed) as failure:
            second.acquire(0.3, "pipeline rebuild --all")
        assert time.monotonic() - started >= 0.3  # it did wait the bounded time
        message = str(failure.value)
        assert f"pid {os.getpid()}: pipeline run 2025-05-06" in message
        assert "gave up waiting after 0.3 s" in message and "\n" not in message
        assert failure.value.exit_code == 1
        assert not second.held
    finally:
        first.release()
    with BuildLock(tmp_path / "x.lock").hold(0, "after release") as lock:
        assert lock.held
        assert "after release" in (lock.holder() or "")
    assert BuildLock(tmp_path / "x.lock").holder() is None  # released: nobody named


def test_a_held_lock_is_passed_through_and_a_foreign_one_refused(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite3"
    lock = BuildLock.for_database(db)
    with pytest.raises(ValueError, match="not held"), build_lock(db, 0, "x", held=lock):
        pass
    with lock.hold(0, "scheduler"), build_lock(db, 0, "run", held=lock) as inner:
        assert inner is lock  # not taken twice (which would deadlock on itself)
    other = BuildLock.for_database(tmp_path / "b.sqlite3")
    with other.hold(0, "other archive"), pytest.raises(ValueError, match=r"a\.sqlite3\.lock"), \
            build_lock(db, 0, "run", held=other):
        pass


def test_manual_run_waits_for_another_process_then_exits_1_with_one_line(tmp_path: Path, holder) -> None:
    config = write_config(tmp_path)
    db = tmp_path / "data" / "archive.sqlite3"
    helper = holder(lock_path_for(db))
    started = time.monotonic()
    result = pipeline_cmd("run", "--config", config, "--topics", REPO / "topics.yaml", "--date", "2025-05-06",
                          "--lock-timeout", "0.5")
    assert time.monotonic() - started >= 0.5
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("pipeline: error: another build is running on this archive")
    assert f"pid {helper.pid}: test helper holding the lock" in lines[0]
    assert "--lock-timeout" in lines[0]
    # The waiting run touched nothing: no run recorded, no issue written.
    assert not (tmp_path / "out" / "2025-05-06").exists()
    if db.exists():
        with open_store(StoreTarget(db)) as store:
            assert store.runs() == []

    helper.kill()
    helper.wait(timeout=10)
    result = pipeline_cmd("run", "--config", config, "--topics", REPO / "topics.yaml", "--date", "2025-05-06",
                          "--lock-timeout", "0")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "2025-05-06" / "index.html").is_file()


def test_rebuild_waits_for_the_lock_too(tmp_path: Path, holder) -> None:
    config = write_config(tmp_path)
    topics = REPO / "topics.yaml"
    assert pipeline_cmd("run", "--config", config, "--topics", topics, "--date", "2025-05-06").returncode == 0
    helper = holder(lock_path_for(tmp_path / "data" / "archive.sqlite3"))
    result = pipeline_cmd("rebuild", "--config", config, "--topics", topics, "--date", "2025-05-06",
                          "--lock-timeout", "0.3")
    assert result.returncode == 1
    assert f"pid {helper.pid}" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_lock_of_a_sigkilled_process_is_taken_over_at_once(tmp_path: Path, holder) -> None:
    lock_file = tmp_path / "archive.sqlite3.lock"
    helper = holder(lock_file)
    with pytest.raises(RunFailed, match=f"pid {helper.pid}"):
        BuildLock(lock_file).acquire(0, "too early")
    os.kill(helper.pid, signal.SIGKILL)
    assert helper.wait(timeout=10) == -signal.SIGKILL
    # The dead holder's note is still in the file, but the kernel released its flock.
    assert f"pid {helper.pid}" in (BuildLock(lock_file).holder() or "")
    lock = BuildLock(lock_file)
    lock.acquire(0, "successor")  # timeout 0: must succeed on the first try
    try:
        assert f"pid {os.getpid()}: successor" in (lock.holder() or "")
    finally:
        lock.release()


def test_unusable_lock_folder_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="cannot open the build lock"):
        BuildLock(tmp_path / "file" / "x.lock").acquire(0, "x")


def test_send_and_recipients_locks_are_the_same_flock_and_never_wait(tmp_path: Path, holder) -> None:
    from pipeline.deliver import add_recipient
    from pipeline.errors import PipelineError
    from pipeline.lock import exclusive

    recipients = tmp_path / "recipients.csv"
    helper = holder(tmp_path / "recipients.csv.lock")  # another process, holding the file's flock
    started = time.monotonic()
    with pytest.raises(PipelineError) as failure:
        add_recipient(recipients, "jeanne@example.org")
    assert time.monotonic() - started < 2  # refused at once, not after a wait
    assert str(failure.value) == (f"{tmp_path / 'recipients.csv.lock'}: another edit of the recipients file is "
                                  "already running; try again when it ends")
    assert failure.value.exit_code == 2 and not recipients.exists()
    with pytest.raises(PipelineError, match="another `pipeline send` on this database is already running"), \
            exclusive(tmp_path / "recipients.csv.lock", "another `pipeline send` on this database"):
        pass
    helper.kill()
    helper.wait(timeout=10)
    assert add_recipient(recipients, "jeanne@example.org").email == "jeanne@example.org"
    with exclusive(tmp_path / "db.sqlite3.send-lock", "another `pipeline send` on this database") as lock:
        assert f"pid {os.getpid()}: another `pipeline send`" in (lock.holder() or "")
    assert lock.holder() is None and not lock.held
