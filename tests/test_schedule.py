"""The daily schedule: never missed, never doubled.

Time is controlled with an injected clock (`FakeClock`) wherever the scheduler decides; the
APScheduler trigger itself is checked on its computed fire times across the DST changes of
2025. Builds are real (`Pipeline.run` on a local feed, SQLite in tmp_path); SIGTERM is
sent to a real `pipeline schedule` process while it is fetching from a 127.0.0.1 server.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zoneinfo
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import time_machine
from smtpserver import start_server

from pipeline.app import Pipeline, RunReport
from pipeline.config import load_config
from pipeline.config.topics import load_topics
from pipeline.errors import PipelineError
from pipeline.lock import BuildLock, lock_path_for
from pipeline.models import ScheduleSettings
from pipeline.render import DEFAULT_TEMPLATES
from pipeline.schedule import (
    Action,
    DailyScheduler,
    ScheduleLog,
    SchedulePlan,
    decide,
    due_issue,
    make_plan,
    next_fire_times,
    parse_cron,
    scheduled_time,
)
from pipeline.store import StoreTarget, open_store
from pipeline.store.sqlite import SqliteStore
from tests.helpers import free_port
from tests.localfeed import RSS, write_config

REPO = Path(__file__).resolve().parents[1]
TOPICS = REPO / "topics.yaml"
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
UTC = dt.UTC



class FakeClock:
    """The scheduler's `now()`: moves only when a test moves it."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now




def pipeline_of(config: Path, kind: type[Pipeline] = Pipeline) -> Pipeline:
    loaded = load_config(config)
    assert loaded.db_path is not None and loaded.output_dir is not None
    return kind(loaded, load_topics(TOPICS), store=StoreTarget(loaded.db_path), output_dir=loaded.output_dir,
                templates_dir=DEFAULT_TEMPLATES)


def plan(cron: str = "0 6 * * *", timezone: str = "Europe/Paris", **settings: Any) -> SchedulePlan:
    return make_plan(ScheduleSettings(**settings), Path("sources.yaml"), cron=cron, timezone=timezone,
                     lock_timeout=settings.pop("lock_timeout_seconds", None))


def make_scheduler(config: Path, the_plan: SchedulePlan, clock: Callable[[], dt.datetime],
                   kind: type[Pipeline] = Pipeline) -> tuple[DailyScheduler, io.StringIO]:
    stream = io.StringIO()
    log = ScheduleLog(stream, the_plan.log_file, the_plan.zone, clock)
    return DailyScheduler(lambda: pipeline_of(config, kind), the_plan, log, clock=clock), stream


def runs_of(db: Path) -> list[tuple[str, str | None, str]]:
    with open_store(StoreTarget(db)) as store:
        return [(r.kind, r.issue_date.isoformat() if r.issue_date else None, r.status)
                for r in reversed(store.runs(100))]


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll until `condition` holds; the timeout only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# ---------------------------------------------------------------- the trigger across DST changes


@pytest.mark.parametrize(
    ("start", "change", "offset_before", "offset_after"),
    [
        (dt.date(2025, 3, 27), dt.date(2025, 3, 30), 1, 2),  # last Sunday of March: 02:00 → 03:00
        (dt.date(2025, 10, 23), dt.date(2025, 10, 26), 2, 1),  # last Sunday of October: 03:00 → 02:00
    ],
)
def test_default_cron_fires_once_a_day_at_six_across_dst(start: dt.date, change: dt.date, offset_before: int,
                                                         offset_after: int) -> None:
    trigger = parse_cron("0 6 * * *", PARIS)
    fires = next_fire_times(trigger, dt.datetime.combine(start, dt.time(0), PARIS), 7)
    local = [f.astimezone(PARIS) for f in fires]
    assert [f.date() for f in local] == [start + dt.timedelta(days=n) for n in range(7)]  # no day skipped or doubled
    assert all(f.time() == dt.time(6, 0) for f in local)
    for fire in local:
        expected = offset_before if fire.date() < change else offset_after
        assert fire.utcoffset() == dt.timedelta(hours=expected), fire
    # The instants are 23 h and 25 h apart across the changes, 24 h otherwise.
    instants = [f.astimezone(UTC) for f in fires]  # same-zone subtraction would give wall-clock gaps
    gaps = {(b - a) for a, b in itertools.pairwise(instants)}
    assert gaps == {dt.timedelta(hours=24), dt.timedelta(hours=24 + offset_before - offset_after)}


def test_default_cron_fires_exactly_once_on_every_day_of_2025() -> None:
    trigger = parse_cron("0 6 * * *", PARIS)
    fires = [f.astimezone(PARIS) for f in next_fire_times(trigger, dt.datetime(2025, 1, 1, tzinfo=PARIS), 365)]
    assert len({f.date() for f in fires}) == 365 and fires[-1].date() == dt.date(2025, 12, 31)
    assert {f.time() for f in fires} == {dt.time(6, 0)}


def test_cron_in_the_missing_hour_still_fires_on_the_spring_change() -> None:
    trigger = parse_cron("30 2 * * *", PARIS)  # 02:30 does not exist on 30 March 2025
    at = scheduled_time(trigger, PARIS, dt.date(2025, 3, 30))
    assert at is not None
    assert due_issue(dt.datetime(2025, 3, 30, 3, 45, tzinfo=PARIS), trigger, PARIS) == (dt.date(2025, 3, 30), at)


def test_cron_in_the_repeated_hour_fires_twice_but_builds_once(tmp_path: Path) -> None:
    """APScheduler fires 02:30 twice on 26 October 2025 (CEST, then CET); the per-date check
    turns the second fire into nothing."""
    trigger = parse_cron("30 2 * * *", PARIS)
    fires = next_fire_times(trigger, dt.datetime(2025, 10, 26, 0, 0, tzinfo=PARIS), 3)
    on_the_day = [f for f in fires if f.astimezone(PARIS).date() == dt.date(2025, 10, 26)]
    assert len(on_the_day) == 2
    assert on_the_day[1].astimezone(UTC) - on_the_day[0].astimezone(UTC) == dt.timedelta(hours=1)

    config = write_config(tmp_path)
    clock = FakeClock(on_the_day[0])
    scheduler, log = make_scheduler(config, plan("30 2 * * *"), clock)
    assert scheduler.tick("scheduled").action is Action.BUILT
    clock.now = on_the_day[1]
    assert scheduler.tick("scheduled").action is Action.DONE
    assert runs_of(tmp_path / "data" / "archive.sqlite3") == [("run", "2025-10-26", "ok")]
    assert "not building it twice" in log.getvalue()


# ---------------------------------------------------------------- pure decisions


def test_due_only_once_todays_scheduled_time_has_passed() -> None:
    trigger = parse_cron("0 6 * * *", PARIS)
    day = dt.date(2025, 5, 6)
    assert due_issue(dt.datetime(2025, 5, 6, 5, 59, 59, tzinfo=PARIS), trigger, PARIS) is None
    six = dt.datetime(2025, 5, 6, 6, 0, tzinfo=PARIS)
    assert due_issue(six, trigger, PARIS) == (day, six)
    assert due_issue(dt.datetime(2025, 5, 6, 23, 59, tzinfo=PARIS), trigger, PARIS) == (day, six)
    # 23:30 UTC on the 5th is already the 6th in Paris: the issue date is the local one.
    assert due_issue(dt.datetime(2025, 5, 5, 23, 30, tzinfo=UTC), trigger, PARIS) is None
    assert due_issue(dt.datetime(2025, 5, 6, 4, 0, tzinfo=UTC), trigger, PARIS) == (day, six)


def test_a_cron_that_skips_a_day_is_never_due_that_day() -> None:
    weekdays = parse_cron("0 6 * * 1-5", PARIS)
    sunday = dt.datetime(2025, 5, 4, 12, 0, tzinfo=PARIS)
    assert scheduled_time(weekdays, PARIS, sunday.date()) is None
    assert due_issue(sunday, weekdays, PARIS) is None
    first_of_month = parse_cron("0 0 1 * *", UTC)  # midnight itself counts
    assert due_issue(dt.datetime(2025, 6, 1, 0, 0, tzinfo=UTC), first_of_month, UTC) is not None


def test_decide() -> None:
    day = dt.date(2025, 5, 6)
    six = dt.datetime(2025, 5, 6, 6, 0, tzinfo=PARIS)
    due = (day, six)
    now = six + dt.timedelta(minutes=30)
    failed = [six, six + dt.timedelta(minutes=10)]
    assert decide(now, None, False, [], 3, 600).action is Action.NOT_DUE
    assert decide(now, due, True, [], 3, 600).action is Action.DONE
    assert decide(now, due, True, failed, 0, 600).action is Action.DONE  # built wins over failures
    first = decide(now, due, False, [], 3, 600)
    assert (first.action, first.date, first.attempt) == (Action.BUILD, day, 1)
    waiting = decide(six + dt.timedelta(minutes=15), due, False, failed, 3, 600)
    assert waiting.action is Action.WAIT and waiting.retry_at == six + dt.timedelta(minutes=20)
    retry = decide(six + dt.timedelta(minutes=20), due, False, failed, 3, 600)
    assert (retry.action, retry.attempt) == (Action.BUILD, 3)
    assert decide(now, due, False, failed, 1, 600).action is Action.GIVE_UP  # 2 failures > 1 retry


# ---------------------------------------------------------------- validation of the schedule


def test_bad_cron_or_time_zone_is_one_line_exit_2(tmp_path: Path, cli) -> None:
    config = write_config(tmp_path)
    for args, needle in [
        (["--cron", "0 25 * * *"], "--cron: invalid cron expression '0 25 * * *'"),
        (["--cron", "0 6 * *"], "--cron: invalid cron expression"),
        (["--timezone", "Europe/Atlantis"], "--timezone: unknown time zone 'Europe/Atlantis'"),
    ]:
        result = cli("schedule", "--config", config, "--topics", TOPICS, *args)
        assert result.code == 2, result.err
        assert len(result.err.strip().splitlines()) == 1 and needle in result.err
    assert cli("schedule", "--config", config, "--lock-timeout", "-1").code == 2


def test_bad_cron_in_sources_yaml_names_file_line_and_key(tmp_path: Path, cli) -> None:
    config = write_config(tmp_path, schedule='  cron: "every morning"\n')
    result = cli("schedule", "--config", config, "--topics", TOPICS)
    assert result.code == 2
    assert f"{config}:5: schedule.cron: invalid cron expression 'every morning'" in result.err
    config = write_config(tmp_path, schedule="  watch_interval_seconds: 0\n")
    result = cli("check", "--config", config, "--topics", TOPICS)
    assert result.code == 2 and "schedule.watch_interval_seconds: must be at least 1" in result.err


def test_plan_takes_overrides_over_the_config(tmp_path: Path) -> None:
    settings = ScheduleSettings(cron="0 7 * * *", timezone="UTC", log_file="logs/schedule.log",
                                lock_timeout_seconds=5)
    merged = make_plan(settings, tmp_path / "sources.yaml", cron="15 6 * * 1-5", timezone="Europe/Paris")
    assert merged.cron == "15 6 * * 1-5" and merged.zone == PARIS and merged.lock_timeout_seconds == 5
    assert merged.log_file == tmp_path / "logs" / "schedule.log"
    kept = make_plan(settings, tmp_path / "sources.yaml", log_file=Path("/x/y.log"), lock_timeout=1)
    assert kept.cron == "0 7 * * *" and kept.zone.key == "UTC" and kept.log_file == Path("/x/y.log")
    assert kept.lock_timeout_seconds == 1
    with pytest.raises(PipelineError, match=r"schedule\.cron"):
        make_plan(ScheduleSettings(cron="* *"), tmp_path / "sources.yaml")


# ---------------------------------------------------------------- catch-up and one build per date


def test_catch_up_builds_a_missed_morning_at_start(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    db = tmp_path / "data" / "archive.sqlite3"
    clock = FakeClock(dt.datetime(2025, 5, 6, 9, 30, tzinfo=PARIS))  # the machine was off at 06:00
    scheduler, log = make_scheduler(config, plan(), clock)
    decision = scheduler.tick("start")
    assert (decision.action, decision.date) == (Action.BUILT, dt.date(2025, 5, 6)), log.getvalue()
    with open_store(StoreTarget(db)) as store:
        issue = store.issue(dt.date(2025, 5, 6))
        assert issue is not None and issue.built_at == clock.now.astimezone(UTC)
        assert issue.story_count >= 1  # the CNIL item of the 5th is in the 6 May issue
    assert (tmp_path / "out" / "2025-05-06" / "index.html").is_file()
    lines = log.getvalue().splitlines()
    ok = [line for line in lines if " ok 2025-05-06: " in line]
    assert len(ok) == 1
    assert ok[0].startswith("2025-05-06T09:30:00+02:00 ok 2025-05-06: 1 feeds read, 0 failed, 1 new items,")
    assert str(tmp_path / "out" / "2025-05-06") in ok[0]


def test_catch_up_does_not_rebuild_an_issue_that_exists(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    db = tmp_path / "data" / "archive.sqlite3"
    # A manual run built today's issue at 06:40; the scheduler starts at 07:00.
    with pipeline_of(config) as app:
        app.run(dt.date(2025, 5, 6), now=dt.datetime(2025, 5, 6, 6, 40, tzinfo=PARIS))
    with open_store(StoreTarget(db)) as store:
        before = store.issue(dt.date(2025, 5, 6))
    index = tmp_path / "out" / "2025-05-06" / "index.html"
    mtime = index.stat().st_mtime_ns
    clock = FakeClock(dt.datetime(2025, 5, 6, 7, 0, tzinfo=PARIS))
    scheduler, log = make_scheduler(config, plan(), clock)
    for reason in ("start", "scheduled", "watch"):
        assert scheduler.tick(reason).action is Action.DONE
    assert runs_of(db) == [("run", "2025-05-06", "ok")]  # still only the manual run
    with open_store(StoreTarget(db)) as store:
        assert store.issue(dt.date(2025, 5, 6)) == before
    assert index.stat().st_mtime_ns == mtime
    assert "already built; nothing to catch up" in log.getvalue()


def test_nothing_happens_before_the_scheduled_time(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    clock = FakeClock(dt.datetime(2025, 5, 6, 5, 59, tzinfo=PARIS))
    scheduler, log = make_scheduler(config, plan(), clock)
    assert scheduler.tick("start").action is Action.NOT_DUE
    assert not (tmp_path / "data").exists() and log.getvalue() == ""
    clock.now = dt.datetime(2025, 5, 6, 6, 0, 1, tzinfo=PARIS)
    assert scheduler.tick("scheduled").action is Action.BUILT
    # The next morning is a new date: built again, once.
    clock.now = dt.datetime(2025, 5, 7, 6, 0, 1, tzinfo=PARIS)
    assert scheduler.tick("scheduled").action is Action.BUILT
    assert scheduler.tick("watch").action is Action.DONE
    assert runs_of(tmp_path / "data" / "archive.sqlite3") == [("run", "2025-05-06", "ok"),
                                                              ("run", "2025-05-07", "ok")]


def test_scheduler_waits_for_a_manual_build_holding_the_lock_then_retries(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    db = tmp_path / "data" / "archive.sqlite3"
    clock = FakeClock(dt.datetime(2025, 5, 6, 6, 0, tzinfo=PARIS))
    scheduler, log = make_scheduler(config, plan(lock_timeout_seconds=0.2, retry_delay_seconds=60), clock)
    manual = BuildLock(lock_path_for(db))
    manual.acquire(0, "pipeline run 2025-05-06")
    try:
        failed = scheduler.tick("scheduled")
    finally:
        manual.release()
    assert failed.action is Action.FAILED
    assert "another build is running" in log.getvalue() and "retry at 2025-05-06 06:01:00 CEST" in log.getvalue()
    clock.now += dt.timedelta(seconds=30)
    assert scheduler.tick("watch").action is Action.WAIT  # not before the retry delay
    clock.now += dt.timedelta(seconds=30)
    assert scheduler.tick("retry").action is Action.BUILT
    assert runs_of(db) == [("run", "2025-05-06", "ok")]


# ---------------------------------------------------------------- failures, retries, survival


def test_failing_job_is_retried_then_given_up_and_the_scheduler_survives(tmp_path: Path) -> None:
    config = write_config(tmp_path, feed_url="missing.xml")  # no feed readable: RunFailed
    db = tmp_path / "data" / "archive.sqlite3"
    log_file = tmp_path / "logs" / "schedule.log"
    the_plan = make_plan(ScheduleSettings(max_retries=2, retry_delay_seconds=0), config, cron="0 0 * * *",
                         timezone="UTC", log_file=log_file)
    scheduler, log = make_scheduler(config, the_plan, lambda: dt.datetime.now(UTC))
    scheduler.start()  # real APScheduler: the check at start fails, then two retries
    try:
        wait_for(lambda: "giving up" in log.getvalue())
        today = dt.datetime.now(UTC).date()
        assert len(scheduler.failures(today)) == 3
        assert scheduler.running
        next_run = scheduler.next_run_time()
        assert next_run is not None and next_run.date() == today + dt.timedelta(days=1)
        text = log.getvalue()
        assert text.count(f"FAILED {today}") == 3
        assert "attempt 1 of 3): no feed could be read (1 failed, 0 skipped); no issue built; retry at" in text
        assert f"attempt 3 of 3): no feed could be read (1 failed, 0 skipped); no issue built; giving up on {today}" \
            in text
        assert "Traceback" not in text  # expected failures get their reason, not a traceback
        assert scheduler.tick("watch").action is Action.GIVE_UP  # no more tries today
    finally:
        scheduler.shutdown()
    assert [status for _, _, status in runs_of(db)] == ["failed"] * 3
    assert log_file.read_text(encoding="utf-8") == log.getvalue()  # same lines in the log file


def test_unexpected_exception_is_logged_with_traceback_and_retried(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    calls: list[dt.date] = []

    class FlakyPipeline(Pipeline):
        def run(self, date: dt.date | None = None, **kwargs: Any) -> RunReport:
            assert date is not None
            calls.append(date)
            if len(calls) == 1:
                raise ZeroDivisionError("a bug in a stage")
            return super().run(date, **kwargs)

    the_plan = make_plan(ScheduleSettings(max_retries=1, retry_delay_seconds=0), config, cron="0 0 * * *",
                         timezone="UTC")
    scheduler, log = make_scheduler(config, the_plan, lambda: dt.datetime.now(UTC), kind=FlakyPipeline)
    scheduler.start()
    try:
        wait_for(lambda: " ok " in log.getvalue())
        assert scheduler.running
    finally:
        scheduler.shutdown()
    today = calls[0]
    assert calls == [today, today]
    text = log.getvalue()
    assert f"FAILED {today} (start, attempt 1 of 2): unexpected error: ZeroDivisionError('a bug in a stage')" in text
    assert "Traceback (most recent call last):" in text and "ZeroDivisionError: a bug in a stage" in text
    with open_store(StoreTarget(tmp_path / "data" / "archive.sqlite3")) as store:
        assert store.issue(today) is not None


# ---------------------------------------------------------------- --once (the cron line)


def test_once_builds_when_due_and_never_twice(tmp_path: Path, cli) -> None:
    config = write_config(tmp_path)
    db = tmp_path / "data" / "archive.sqlite3"
    args = ["schedule", "--once", "--config", config, "--topics", TOPICS, "--cron", "0 0 * * *", "--timezone", "UTC"]
    first = cli(*args)
    assert first.code == 0, first.err
    today = dt.datetime.now(UTC).date().isoformat()
    assert f" ok {today}: 1 feeds read" in first.err
    second = cli(*args)
    assert second.code == 0 and "already built; nothing to catch up" in second.err
    assert runs_of(db) == [("run", today, "ok")]
    not_due = cli("schedule", "--once", "--config", config, "--topics", TOPICS, "--cron", "0 0 1 1 *",
                  "--timezone", "UTC")
    if dt.datetime.now(UTC).strftime("%m-%d") != "01-01":
        assert not_due.code == 0 and "not due yet; next scheduled run:" in not_due.out


def test_once_counts_failures_from_the_store_and_gives_up(tmp_path: Path, cli) -> None:
    config = write_config(tmp_path, feed_url="missing.xml",
                          schedule="  max_retries: 1\n  retry_delay_seconds: 0\n")
    args = ["schedule", "--once", "--config", config, "--topics", TOPICS, "--cron", "0 0 * * *", "--timezone", "UTC"]
    first, second, third = cli(*args), cli(*args), cli(*args)
    assert first.code == 1 and "attempt 1 of 2" in first.err
    assert second.code == 1 and "attempt 2 of 2" in second.err and "giving up" in second.err
    assert third.code == 0 and "gave up after 2 failed attempts today" in third.err
    assert [status for _, _, status in runs_of(tmp_path / "data" / "archive.sqlite3")] == ["failed", "failed"]


# ---------------------------------------------------------------- a real process and SIGTERM


class SlowFeed:
    """A 127.0.0.1 feed server that holds its answer until the test releases it."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.release = threading.Event()
        slow = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                slow.requested.set()
                slow.release.wait(30)
                body = RSS.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/feed.xml"

    def __enter__(self) -> SlowFeed:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def schedule_process(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], queue.Queue[str]]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(config: Path, *extra: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "schedule", "--config", str(config), "--topics", str(TOPICS),
             "--cron", "0 0 * * *", "--timezone", "UTC", *extra],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(proc)
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        return proc, lines

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def read_until(lines: queue.Queue[str], needle: str, seen: list[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise AssertionError(f"no line with {needle!r}; got: {''.join(seen)}") from None
        seen.append(line)
        if needle in line:
            return line


def test_sigterm_during_a_build_finishes_it_and_exits_0(tmp_path: Path, schedule_process) -> None:
    with SlowFeed() as feed:
        config = write_config(tmp_path, feed_url=feed.url)
        proc, lines = schedule_process(config)
        seen: list[str] = []
        read_until(lines, "building ", seen)
        assert feed.requested.wait(30), "the scheduler never fetched the feed"
        proc.send_signal(signal.SIGTERM)  # mid-fetch: the build is in progress
        read_until(lines, "SIGTERM: stopping after the current build", seen)
        feed.release.set()  # only now can the build go on
        assert proc.wait(timeout=30) == 0
        rest = proc.stderr.read() if proc.stderr else ""
    text = "".join(seen) + rest
    while not lines.empty():
        text += lines.get()
    assert "scheduler stopped" in text and "Traceback" not in text
    today = dt.datetime.now(UTC).date()
    db = tmp_path / "data" / "archive.sqlite3"
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with open_store(StoreTarget(db)) as store:
        assert store.issue(today) is not None  # the build finished
        assert [r.status for r in store.runs()] == ["ok"]  # no run left 'running'
    issue_dir = tmp_path / "out" / today.isoformat()
    assert (issue_dir / "index.html").is_file() and (issue_dir / "digest.txt").is_file()
    assert not list((tmp_path / "out").rglob("*.tmp"))  # no half-written file left


def test_sigint_when_idle_exits_0_and_prints_the_next_run(tmp_path: Path, schedule_process) -> None:
    config = write_config(tmp_path)
    proc, lines = schedule_process(config)
    seen: list[str] = []
    read_until(lines, " ok ", seen)  # the check at start built today's issue
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    out = proc.stdout.read() if proc.stdout else ""
    tomorrow = dt.datetime.now(UTC).date() + dt.timedelta(days=1)
    assert f"next scheduled run: {tomorrow} 00:00:00 UTC" in out
    read_until(lines, "SIGINT: stopping", seen)
    with SqliteStore(tmp_path / "data" / "archive.sqlite3") as store:
        assert store.integrity_ok()


# ---------------------------------------------------------------- the real APScheduler at 06:00


def test_the_cron_job_fires_at_six_paris_time_and_builds_once(tmp_path: Path) -> None:
    """time-machine puts the real scheduler one second before 06:00 on 6 May 2025; the clock
    then ticks, APScheduler fires the daily job and the issue is built, once."""
    config = write_config(tmp_path)
    db = tmp_path / "data" / "archive.sqlite3"
    with time_machine.travel(dt.datetime(2025, 5, 6, 5, 59, 59, tzinfo=PARIS), tick=True):
        scheduler, log = make_scheduler(config, plan(), lambda: dt.datetime.now(UTC))
        scheduler.start()
        try:
            wait_for(lambda: " ok 2025-05-06: " in log.getvalue())
            next_run = scheduler.next_run_time()
        finally:
            scheduler.shutdown()
    assert "building 2025-05-06 (scheduled, attempt 1 of 4)" in log.getvalue()
    assert next_run == dt.datetime(2025, 5, 7, 6, 0, tzinfo=PARIS)
    assert runs_of(db) == [("run", "2025-05-06", "ok")]


def test_the_watch_builds_a_morning_slept_through_and_then_stays_quiet(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    clock = FakeClock(dt.datetime(2025, 5, 6, 5, 0, tzinfo=PARIS))
    scheduler, log = make_scheduler(config, plan(), clock)
    assert scheduler.tick("watch").action is Action.NOT_DUE  # 05:00, then the machine sleeps
    clock.now = dt.datetime(2025, 5, 6, 9, 5, tzinfo=PARIS)  # woke at 09:00; the 06:00 fire was missed
    assert scheduler.tick("watch").action is Action.BUILT
    # Later the same day an editor leaves a typo in sources.yaml: the built day is not affected.
    config.write_text(config.read_text(encoding="utf-8") + "oops: [\n", encoding="utf-8")
    clock.now = dt.datetime(2025, 5, 6, 9, 10, tzinfo=PARIS)
    assert scheduler.tick("watch").action is Action.DONE
    assert "FAILED" not in log.getvalue()
    # The next morning the typo is reported with its reason, and retried.
    clock.now = dt.datetime(2025, 5, 7, 6, 0, tzinfo=PARIS)
    assert scheduler.tick("scheduled").action is Action.FAILED
    assert f"FAILED 2025-05-07 (scheduled, attempt 1 of 4): {config}" in log.getvalue()
    assert runs_of(tmp_path / "data" / "archive.sqlite3") == [("run", "2025-05-06", "ok")]


# ---------------------------------------------------------------- email after the build


def write_delivery_config(folder: Path, port: int) -> Path:
    config = write_config(folder)
    (folder / "recipients.csv").write_text("email,name,topics\njeanne@example.org,Jeanne,\n"
                                           "idriss@example.net,Idriss,\n", encoding="utf-8")
    config.write_text(config.read_text(encoding="utf-8") + (
        "delivery:\n  from_address: lettre@techmatin.example.org\n  smtp_host: 127.0.0.1\n"
        f"  smtp_port: {port}\n  security: none\n  rate: 0\n  max_retries: 0\n  timeout: 5\n"
        "  unsubscribe_url: https://techmatin.example.org/desinscription?email={email}&token={token}\n"
    ), encoding="utf-8")
    return config


def test_the_built_issue_is_emailed_once_and_an_unreachable_server_is_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECH_MATIN_UNSUBSCRIBE_SECRET", "a-secret-of-at-least-thirty-two-bytes")

    port = free_port()
    config = write_delivery_config(tmp_path, port)
    clock = FakeClock(dt.datetime(2025, 5, 6, 6, 0, tzinfo=PARIS))
    scheduler, log = make_scheduler(config, plan(retry_delay_seconds=60), clock)
    # 06:00: the SMTP relay is down. The issue is built; the send fails and is planned again.
    assert scheduler.tick("scheduled").action is Action.BUILT
    assert len(scheduler.delivery_failures(dt.date(2025, 5, 6))) == 1
    assert "FAILED 2025-05-06 (scheduled, attempt 1 of 4): email delivery: 2 reader(s) not reached yet; " \
        "stopped: cannot connect to 127.0.0.1" in log.getvalue()
    server = start_server(port=port)
    inbox = server.inbox
    try:
        clock.now += dt.timedelta(seconds=30)
        assert scheduler.tick("watch").action is Action.DONE and inbox.recipients() == []  # not before the delay
        clock.now += dt.timedelta(seconds=30)
        assert scheduler.tick("retry").action is Action.DONE
        assert sorted(inbox.recipients()) == ["idriss@example.net", "jeanne@example.org"]
        assert "sent 2025-05-06: 2 sent" in log.getvalue()
        # Later checks, and a restarted scheduler, never mail anyone twice.
        clock.now += dt.timedelta(minutes=5)
        assert scheduler.tick("watch").action is Action.DONE
        restarted, _ = make_scheduler(config, plan(), clock)
        assert restarted.tick("start").action is Action.DONE
        assert len(inbox.recipients()) == 2
    finally:
        server.stop()
    assert runs_of(tmp_path / "data" / "archive.sqlite3") == [("run", "2025-05-06", "ok")]
