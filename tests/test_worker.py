"""The distributed mode with real parts: `pipeline worker` processes on the session's PostgreSQL,
feeds over real HTTP on 127.0.0.1, a real SMTP sink. Small scale, the properties of issue 19:
each feed fetched once per slot however many workers run, no double build, every reader mailed
exactly once even when a worker is SIGKILLed mid-batch (its batch resumed, at most one send
uncertain), and the interval of each feed adapting to how often it publishes."""

from __future__ import annotations

import datetime as dt
import signal
from pathlib import Path

import psycopg
import pytest
from distributed import FeedServer, SmtpSink, Workers, rss, wait_for, worker_env, write_config

from pipeline.app import Pipeline
from pipeline.cadence import fetch_interval
from pipeline.compose import issue_window
from pipeline.models import WorkerSettings
from pipeline.store import DeliveryStatus
from pipeline.worker import host_slot, parse_queues
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
NOW = dt.datetime.now(dt.UTC)
SECRET = "unsubscribe-key-for-the-worker-tests-0123456789"


def rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as db:
        return db.execute(sql).fetchall()  # type: ignore[arg-type]  # the test's own query


def pipeline_of(config: Path) -> Pipeline:
    """The config's pipeline in this process ($TECH_MATIN_DATABASE_URL set by the test)."""
    return Pipeline.from_files(config, REPO / "topics.yaml")


# ---------------------------------------------------------------- pure parts


def test_the_interval_follows_the_publishing_rate_within_bounds_and_never_beats_ttl_or_retry_after() -> None:
    settings = WorkerSettings(min_fetch_interval=15, max_fetch_interval=1440)
    assert fetch_interval(settings, 0) == dt.timedelta(days=1)  # silent: the maximum
    assert fetch_interval(settings, 7) == dt.timedelta(days=1)  # one a day
    assert fetch_interval(settings, 7 * 24) == dt.timedelta(hours=1)  # one an hour
    assert fetch_interval(settings, 100_000) == dt.timedelta(minutes=15)  # a flood: the minimum
    assert fetch_interval(settings, 7 * 24, ttl_minutes=180) == dt.timedelta(hours=3)
    assert fetch_interval(settings, 7 * 24, retry_after=7200) == dt.timedelta(hours=2)
    assert fetch_interval(settings, 7 * 24, failures=3) == dt.timedelta(minutes=120)  # backs off
    assert fetch_interval(settings, 7 * 24, failures=50) == dt.timedelta(days=1)


def test_queues_are_checked_and_hosts_share_a_bounded_number_of_slots() -> None:
    assert parse_queues(None) == ("feeds", "build", "email", "maintenance")
    assert parse_queues("feeds, build") == ("feeds", "build")
    with pytest.raises(Exception, match="unknown queue mail"):
        parse_queues("feeds,mail")
    from pipeline.models import FeedSource

    slots = {host_slot(FeedSource(id=f"f{n}", name="x", url="https://one.example/f"), 4) for n in range(100)}
    assert len(slots) == 4 and all(slot.startswith("host:one.example:") for slot in slots)


def test_worker_needs_postgresql(tmp_path: Path, cli) -> None:
    config = tmp_path / "sources.yaml"
    config.write_text("feeds:\n  - name: Exemple\n    url: https://example.org/rss\n", encoding="utf-8")
    result = cli("worker", "--config", config, "--topics", REPO / "topics.yaml")
    assert result.code == 2
    assert result.err.endswith("`pipeline worker` needs storage.backend: postgresql (and $TECH_MATIN_DATABASE_URL);"
                               " with SQLite, use `pipeline run` or `pipeline schedule`\n")


# ---------------------------------------------------------------- with workers


def test_three_workers_fetch_each_feed_once_per_slot_and_build_once(tmp_path: Path, pg_database: str) -> None:
    feeds = 6
    with FeedServer(["127.0.0.1"], lambda n: rss(n, 3, NOW)) as server:
        config = write_config(
            tmp_path, [f"http://127.0.0.1:{server.port}/feed/{n}.xml" for n in range(feeds)],
            workers={"tick_seconds": 1, "min_fetch_interval": 60, "heartbeat_seconds": 1,
                     "stalled_after_seconds": 5},
            schedule={"cron": "0 0 * * *", "timezone": "UTC"})  # today's issue is due at once
        workers = Workers(config, worker_env(pg_database))
        try:
            for number in range(3):
                workers.start("--queues", "schedule,feeds,build,maintenance", name=f"w{number}")
            wait_for(lambda: len(server.requests) == feeds, 60, "every feed fetched", workers)
            today = NOW.date().isoformat()
            wait_for(lambda: rows(pg_database, f"SELECT count(*) FROM runs WHERE kind = 'build' AND status = 'ok'"
                                               f" AND issue_date = '{today}'") == [(1,)], 60, "the build", workers)
            slots = lambda: rows(pg_database, "SELECT count(DISTINCT args->>'timestamp') FROM procrastinate_jobs"  # noqa: E731
                                              " WHERE task_name = 'enqueue_due_feeds'")[0][0]
            first = slots()
            wait_for(lambda: slots() >= first + 3, 30, "three more slots", workers)
        finally:
            workers.stop()
    # Once, though every slot of three deferrers asked again (even a slot deferred twice by a lagging
    # deferrer claims nothing: claim_due_feeds moves each feed's next fetch in the same transaction).
    assert set(server.requests.values()) == {1}, server.requests
    assert rows(pg_database, "SELECT count(*) FROM runs WHERE kind = 'build'") == [(1,)]  # no double build
    assert rows(pg_database, "SELECT count(*) FROM items") == [(feeds * 3,)]
    assert rows(pg_database, "SELECT count(*) FROM classifications") == [(feeds * 3,)]  # classified by the job
    due = rows(pg_database, "SELECT min(next_fetch) FROM feeds")[0][0]
    assert isinstance(due, dt.datetime) and due > NOW + dt.timedelta(minutes=59)  # within the bounds
    assert (tmp_path / "output" / today / "index.html").is_file()


def test_a_worker_killed_mid_batch_leaves_every_reader_one_message(tmp_path: Path, pg_database: str, cli,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    readers = [f"lecteur{n:03d}@example.org" for n in range(120)]
    (tmp_path / "recipients.csv").write_text("email,name,topics\n" + "".join(f"{r},,\n" for r in readers),
                                             encoding="utf-8")
    sink = SmtpSink.start(port, delay=0.02)
    feed = tmp_path / "feed.xml"
    config = write_config(
        tmp_path, [feed.as_uri()],
        workers={"tick_seconds": 1, "email_batch": 20, "heartbeat_seconds": 0.5, "stalled_after_seconds": 3},
        delivery={"from_address": "lettre@techmatin.example.org", "smtp_host": "127.0.0.1",
                  "smtp_port": port, "security": "none", "rate": 0, "recipients": "recipients.csv",
                  "unsubscribe_url": "https://techmatin.example.org/desinscription?email={email}&token={token}"})
    env = worker_env(pg_database, TECH_MATIN_UNSUBSCRIBE_SECRET=SECRET)
    workers = Workers(config, env)
    # Yesterday's issue, its items dated in the hours before its cut-off: a window wholly in the past
    # whatever the hour the test runs at (today's window ends at the morning's issue time).
    today = NOW.date() - dt.timedelta(days=1)
    monkeypatch.setenv("TECH_MATIN_DATABASE_URL", pg_database)
    monkeypatch.setenv("TECH_MATIN_UNSUBSCRIBE_SECRET", SECRET)
    try:
        with pipeline_of(config) as app:
            feed.write_bytes(rss(0, 4, issue_window(today, app.config.newsletter)[1]))
            built = app.run(today).build  # the issue to mail, built on PostgreSQL
            assert built is not None and built.stories > 0
        sent = cli("send", "--config", config, "--topics", REPO / "topics.yaml", "--date", today.isoformat())
        assert sent.code == 0 and "queued for the email workers" in sent.out, sent.err
        victim = workers.start("--queues", "email", name="victim")
        wait_for(lambda: sink.inbox.total >= 10, 60, "the victim's first messages", workers)
        victim.send_signal(signal.SIGKILL)  # mid-batch: no chance to record anything more
        victim.wait(10)
        killed_at = sink.inbox.total
        assert killed_at < len(readers)
        workers.start("--queues", "email,maintenance", name="survivor")
        workers.start("--queues", "email,maintenance", name="survivor")

        def settled() -> bool:  # every delivery sent, or handed over without an answer (uncertain)
            return rows(pg_database, f"SELECT count(*) FROM deliveries WHERE issue_date = '{today}'"
                                     " AND (status = 'sent' OR handed_over IS NOT NULL)") == [(len(readers),)]

        wait_for(settled, 90, "every delivery sent or uncertain", workers)
    finally:
        workers.stop()
        sink.stop()
    with pipeline_of(config) as app:
        records = app.store.deliveries(today)
    assert len({r.message_id for r in records.values()}) == len(readers)
    uncertain = [r.email for r in records.values() if r.status is DeliveryStatus.SENDING]
    assert len(uncertain) <= 1  # the one message the victim may have handed over when it died
    for reader in readers:
        got = sink.inbox.by_recipient[reader]
        assert got == 1 or (got == 0 and reader in uncertain), (reader, got, uncertain)
    retried = rows(pg_database, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'send_batch'"
                                " AND attempts > 1")
    assert retried[0][0] >= 1  # the killed batch was taken up again
    if uncertain:
        assert f"uncertain delivery to {uncertain[0]}" in workers.logs()


def test_the_operators_findings_settle_uncertain_deliveries_for_the_email_workers(tmp_path: Path, pg_database: str,
                                                                                cli, monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    """Issue 18, point 7 on PostgreSQL: `send --confirm-delivered / --confirm-lost` records the
    findings at once; the lost delivery is queued again and mailed once by a worker, the
    delivered one never."""
    port = free_port()
    readers = ["arrive@example.org", "perdu@example.org", "autre@example.org"]
    (tmp_path / "recipients.csv").write_text("email,name,topics\n" + "".join(f"{r},,\n" for r in readers),
                                             encoding="utf-8")
    sink = SmtpSink.start(port)
    feed = tmp_path / "feed.xml"
    config = write_config(
        tmp_path, [feed.as_uri()], workers={"tick_seconds": 1},
        delivery={"from_address": "lettre@techmatin.example.org", "smtp_host": "127.0.0.1",
                  "smtp_port": port, "security": "none", "rate": 0, "recipients": "recipients.csv",
                  "unsubscribe_url": "https://techmatin.example.org/desinscription?email={email}&token={token}"})
    workers = Workers(config, worker_env(pg_database, TECH_MATIN_UNSUBSCRIBE_SECRET=SECRET))
    day = NOW.date() - dt.timedelta(days=1)
    monkeypatch.setenv("TECH_MATIN_DATABASE_URL", pg_database)
    monkeypatch.setenv("TECH_MATIN_UNSUBSCRIBE_SECRET", SECRET)
    args = ["--config", config, "--topics", REPO / "topics.yaml", "--date", day.isoformat()]
    try:
        with pipeline_of(config) as app:
            feed.write_bytes(rss(0, 4, issue_window(day, app.config.newsletter)[1]))
            assert app.run(day).build is not None
            for reader in readers[:2]:  # what a worker killed after the end of the data leaves behind
                app.store.begin_delivery(day, reader, f"<{reader.split('@')[0]}@techmatin.example.org>", NOW)
                app.store.mark_handed_over(day, reader, NOW)
        refused = cli("send", *args, "--confirm-delivered", "arrive@techmatin.example.org", "--confirm-lost",
                      "<autre@techmatin.example.org>")
        assert refused.code == 2 and f"no delivery of {day} has Message-ID <autre@techmatin.example.org>" in refused.err
        queue = rows(pg_database, "SELECT to_regclass('procrastinate_jobs') IS NOT NULL")[0][0]
        assert not queue or rows(pg_database, "SELECT count(*) FROM procrastinate_jobs") == [(0,)], "nothing queued"

        sent = cli("send", *args, "--confirm-delivered", "arrive@techmatin.example.org", "--confirm-lost",
                   "perdu@techmatin.example.org")
        assert sent.code == 0 and "queued for the email workers" in sent.out, sent.err
        assert "settled by the operator: 1 delivered (not sent again), 1 lost (queued again)" in sent.out
        with pipeline_of(config) as app:
            records = app.store.deliveries(day)
        assert (records["arrive@example.org"].status, records["arrive@example.org"].settled) == ("sent", "delivered")
        assert records["perdu@example.org"].settled == "lost"
        workers.start("--queues", "email", name="email")
        wait_for(lambda: sink.inbox.total >= 2, 60, "the lost message and the third reader's", workers)
        wait_for(lambda: rows(pg_database, f"SELECT count(*) FROM deliveries WHERE issue_date = '{day}'"
                                           " AND status = 'sent'") == [(3,)], 30, "every delivery sent", workers)
    finally:
        workers.stop()
        sink.stop()
    assert dict(sink.inbox.by_recipient) == {"perdu@example.org": 1, "autre@example.org": 1}


def test_a_feed_job_sets_the_next_fetch_from_its_rate_its_ttl_and_retry_after(tmp_path: Path) -> None:
    """Pipeline.refresh_feed (the feed job) on a SQLite store, with a fetcher and a parser given."""
    from pipeline.config import load_config
    from pipeline.config.topics import load_topics
    from pipeline.models import FetchResult, FetchStatus, Item, ParseResult
    from pipeline.store import StoreTarget

    config_path = tmp_path / "sources.yaml"
    config_path.write_text("feeds:\n  - id: f\n    name: Flux\n    url: https://example.org/rss\n"
                           "workers:\n  min_fetch_interval: 10\n  max_fetch_interval: 2880\n", encoding="utf-8")
    answers: list[FetchResult] = []
    ttl: list[int | None] = [None]

    def fetcher(feeds, settings, states, on_result=None):  # type: ignore[no-untyped-def]
        return [answers.pop(0)]

    def parser(result: FetchResult, seen_at: dt.datetime) -> ParseResult:
        items = tuple(Item(id=f"i{n}", feed_id="f", source="Flux", title=f"Titre {n}", url=None, summary="",
                           published=seen_at - dt.timedelta(hours=n), first_seen=seen_at) for n in range(14))
        return ParseResult(feed=result.feed, items=items, ttl_minutes=ttl[0])

    app = Pipeline(load_config(config_path), load_topics(REPO / "topics.yaml"),
                   store=StoreTarget(tmp_path / "db.sqlite3"), output_dir=tmp_path / "out", fetcher=fetcher,
                   parser=parser)
    feed = app.config.feeds[0]
    now = dt.datetime(2025, 5, 6, 8, 0, tzinfo=dt.UTC)
    with app:
        answers.append(FetchResult(feed=feed, status=FetchStatus.NEW, url=feed.url, body=b"<rss/>"))
        report, next_fetch = app.refresh_feed("f", now)
        assert (report.new_items, next_fetch - now) == (14, dt.timedelta(hours=12))  # 14 items a week
        assert app.store.classifications([f"i{n}" for n in range(14)], app.classification_key)  # classified
        assert app.claim_due_feeds(now + dt.timedelta(hours=11)) == []
        assert [f.id for f in app.claim_due_feeds(now + dt.timedelta(hours=12))] == ["f"]
        ttl[0] = 24 * 60
        answers.append(FetchResult(feed=feed, status=FetchStatus.NEW, url=feed.url, body=b"<rss/>"))
        assert app.refresh_feed("f", now)[1] - now == dt.timedelta(hours=24)  # never before its <ttl>
        answers.append(FetchResult(feed=feed, status=FetchStatus.FAILED, url=feed.url, error="HTTP 503",
                                   retry_after=5 * 3600))
        assert app.refresh_feed("f", now)[1] - now == dt.timedelta(hours=5)  # never before Retry-After
