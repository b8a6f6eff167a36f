"""Approve, then send: with delivery.require_approval the scheduled send waits for an editor's
approval until delivery.approve_by, then holds or sends anyway, logged either way. A real SMTP
server on 127.0.0.1 (aiosmtpd, tests/smtpserver.py) receives what is sent; the scheduler's
clock is a fake one."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from distributed import SmtpSink, Workers, rss, wait_for, worker_env
from distributed import write_config as write_workers_config
from smtpserver import SmtpServer

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.models import ScheduleSettings
from pipeline.schedule import Action, make_plan
from tests.helpers import free_port
from tests.test_schedule import (
    PARIS,
    FakeClock,
    make_scheduler,
    pipeline_of,
    plan,
    write_delivery_config,
)

REPO = Path(__file__).resolve().parents[1]
DATE = dt.date(2025, 5, 6)
WORKER_SECRET = "unsubscribe-key-for-the-worker-tests-0123456789"
READERS = ["idriss@example.net", "jeanne@example.org"]


@pytest.fixture
def relay(smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> SmtpServer:
    """The test's SMTP server (conftest's `smtp`), and the unsubscribe secret a send needs."""
    monkeypatch.setenv("TECH_MATIN_UNSUBSCRIBE_SECRET", "a-secret-of-at-least-thirty-two-bytes")
    return smtp


def approval_config(folder: Path, port: int, on_no_approval: str) -> Path:
    config = write_delivery_config(folder, port)
    config.write_text(config.read_text(encoding="utf-8") + (
        f"  require_approval: true\n  approve_by: \"06:45\"\n  on_no_approval: {on_no_approval}\n"), encoding="utf-8")
    return config


def test_an_approved_issue_is_sent_at_once(tmp_path: Path, relay: SmtpServer) -> None:
    inbox, port = relay.inbox, relay.port
    config = approval_config(tmp_path, port, "hold")
    clock = FakeClock(dt.datetime(2025, 5, 6, 6, 0, tzinfo=PARIS))
    scheduler, log = make_scheduler(config, plan(), clock)
    assert scheduler.tick("scheduled").action is Action.BUILT
    assert inbox.recipients() == []
    assert "issue 2025-05-06: waiting for an editor's approval until 06:45 (Europe/Paris)" in log.getvalue()
    clock.now += dt.timedelta(minutes=5)
    assert scheduler.tick("approval").action is Action.DONE and inbox.recipients() == []
    assert log.getvalue().count("waiting for an editor's approval") == 1  # said once
    with pipeline_of(config) as app:
        app.approve(DATE, "Louise Garnier", now=clock.now.astimezone(dt.UTC))
    clock.now += dt.timedelta(minutes=1)
    assert scheduler.tick("approval").action is Action.DONE
    assert sorted(inbox.recipients()) == READERS
    assert "issue 2025-05-06: approved by Louise Garnier at 2025-05-06 04:05 UTC: sending" in log.getvalue()
    assert "sent 2025-05-06: 2 sent" in log.getvalue()
    clock.now += dt.timedelta(hours=1)
    assert scheduler.tick("watch").action is Action.DONE and len(inbox.recipients()) == 2  # never twice


def test_not_approved_by_approve_by_with_hold_sends_nothing_and_says_so(tmp_path: Path,
                                                                        relay: SmtpServer) -> None:
    inbox, port = relay.inbox, relay.port
    config = approval_config(tmp_path, port, "hold")
    clock = FakeClock(dt.datetime(2025, 5, 6, 6, 0, tzinfo=PARIS))
    scheduler, log = make_scheduler(config, plan(), clock)
    assert scheduler.tick("scheduled").action is Action.BUILT
    clock.now = dt.datetime(2025, 5, 6, 6, 44, 59, tzinfo=PARIS)
    scheduler.tick("approval")
    assert "not approved" not in log.getvalue()
    clock.now = dt.datetime(2025, 5, 6, 6, 45, tzinfo=PARIS)
    assert scheduler.tick("approval").action is Action.DONE
    assert inbox.recipients() == []
    assert ("issue 2025-05-06: not approved by 06:45: held, not sent (delivery.on_no_approval: hold)"
            in log.getvalue())
    clock.now += dt.timedelta(hours=2)
    scheduler.tick("watch")
    assert inbox.recipients() == [] and log.getvalue().count("held, not sent") == 1
    with pipeline_of(config) as app:
        assert app.store.deliveries(DATE) == {} and not app.draft(DATE).published
        index = (app.output_dir / "index.html").read_text(encoding="utf-8")
    assert "2025-05-06" not in index  # a held draft stays out of the archive's listings


def test_not_approved_by_approve_by_with_send_anyway_sends_and_says_so(tmp_path: Path,
                                                                       relay: SmtpServer) -> None:
    inbox, port = relay.inbox, relay.port
    config = approval_config(tmp_path, port, "send_anyway")
    clock = FakeClock(dt.datetime(2025, 5, 6, 6, 0, tzinfo=PARIS))
    scheduler, log = make_scheduler(config, plan(), clock)
    assert scheduler.tick("scheduled").action is Action.BUILT and inbox.recipients() == []
    clock.now = dt.datetime(2025, 5, 6, 6, 45, tzinfo=PARIS)
    assert scheduler.tick("approval").action is Action.DONE
    assert sorted(inbox.recipients()) == READERS
    assert ("issue 2025-05-06: not approved by 06:45: sending it anyway (delivery.on_no_approval: send_anyway)"
            in log.getvalue())
    assert "sent 2025-05-06: 2 sent" in log.getvalue()
    with pipeline_of(config) as app:
        assert app.draft(DATE).published  # mailed: listed in the archive
        assert "2025-05-06" in (app.output_dir / "index.html").read_text(encoding="utf-8")


def test_a_decision_after_the_approval_makes_the_send_wait_again(tmp_path: Path, relay: SmtpServer) -> None:
    from pipeline.models import EditorialDecision

    inbox, port = relay.inbox, relay.port
    config = approval_config(tmp_path, port, "hold")
    clock = FakeClock(dt.datetime(2025, 5, 6, 6, 0, tzinfo=PARIS))
    scheduler, _log = make_scheduler(config, plan(), clock)
    assert scheduler.tick("scheduled").action is Action.BUILT
    with pipeline_of(config) as app:
        app.approve(DATE, "Louise", now=dt.datetime(2025, 5, 6, 4, 0, 1, tzinfo=dt.UTC))
        story = app.draft(DATE).stories[0].story
        app.decide(EditorialDecision(DATE, "kicker", story.id, "Victor", dt.datetime(2025, 5, 6, 4, 1, tzinfo=dt.UTC),
                                     text="Courtier sanctionné"))
        gate = app.send_gate(DATE, dt.datetime(2025, 5, 6, 4, 2, tzinfo=dt.UTC))
    assert gate.action == "wait" and "(changed since its last approval)" in gate.reason
    clock.now += dt.timedelta(minutes=2)
    scheduler.tick("approval")
    assert inbox.recipients() == []


def test_approval_settings_are_checked_with_one_line_errors(tmp_path: Path) -> None:
    config = write_delivery_config(tmp_path, 2525)
    base = config.read_text(encoding="utf-8")
    cases = {
        "  require_approval: yes please\n": "delivery.require_approval: must be true or false",
        "  require_approval: true\n": "delivery.approve_by: require_approval is true: set approve_by",
        "  require_approval: true\n  approve_by: \"25:00\"\n": "delivery.approve_by: must be a time HH:MM",
        "  require_approval: true\n  approve_by: \"06:45\"\n  on_no_approval: later\n":
            "delivery.on_no_approval: must be one of send_anyway, hold, got 'later'",
        "  require_approval: true\n  draft_time: \"07:00\"\n  approve_by: \"06:45\"\n":
            "delivery.approve_by: must be after draft_time (07:00), got 06:45",
    }
    for lines, message in cases.items():
        config.write_text(base + lines, encoding="utf-8")
        with pytest.raises(ConfigError, match=re.escape(message)) as caught:
            load_config(config)
        assert "\n" not in str(caught.value) and "sources.yaml:" in str(caught.value)
    config.write_text(base + "  require_approval: true\n  draft_time: \"05:30\"\n  approve_by: \"06:45\"\n",
                      encoding="utf-8")
    delivery = load_config(config).delivery
    assert delivery is not None and delivery.on_no_approval == "hold"
    assert (delivery.draft_time, delivery.approve_by) == (dt.time(5, 30), dt.time(6, 45))
    # The scheduler builds the draft at draft_time instead of schedule.cron (--cron still wins).
    drafted = make_plan(ScheduleSettings(), config, draft_time=delivery.draft_time)
    assert drafted.cron == "30 5 * * *"
    assert make_plan(ScheduleSettings(), config, cron="0 7 * * *", draft_time=delivery.draft_time).cron == "0 7 * * *"


# ---------------------------------------------------------------- the workers (PostgreSQL mode)


def approval_workers(tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch, timezone: str,
                     approve_by: str, on_no_approval: str) -> tuple[Path, dt.date, SmtpSink, Workers]:
    """Today's issue (UTC) built on PostgreSQL, and one worker running the schedule, build and
    email queues. `timezone` (the newsletter's) places approve_by wholly after, or wholly before,
    any moment of the test's UTC day, whatever the hour it runs at."""
    from pipeline.app import Pipeline
    from pipeline.compose import issue_window

    port = free_port()
    (tmp_path / "recipients.csv").write_text("email,name,topics\n" + "".join(f"{r},,\n" for r in READERS),
                                             encoding="utf-8")
    feed = tmp_path / "feed.xml"
    config = write_workers_config(
        tmp_path, [feed.as_uri()], workers={"tick_seconds": 1, "heartbeat_seconds": 0.5},
        schedule={"cron": "0 0 * * *", "timezone": "UTC"},
        delivery={"from_address": "lettre@techmatin.example.org", "smtp_host": "127.0.0.1", "smtp_port": port,
                  "security": "none", "rate": 0, "recipients": "recipients.csv", "require_approval": True,
                  "approve_by": approve_by, "on_no_approval": on_no_approval,
                  "unsubscribe_url": "https://techmatin.example.org/desinscription?email={email}&token={token}"})
    text = config.read_text(encoding="utf-8").replace("newsletter:\n", f"newsletter:\n  timezone: {timezone}\n", 1)
    config.write_text(text, encoding="utf-8")
    today = dt.datetime.now(dt.UTC).date()
    monkeypatch.setenv("TECH_MATIN_DATABASE_URL", pg_database)
    monkeypatch.setenv("TECH_MATIN_UNSUBSCRIBE_SECRET", WORKER_SECRET)
    with Pipeline.from_files(config, REPO / "topics.yaml") as app:
        feed.write_bytes(rss(0, 3, issue_window(today, app.config.newsletter)[1]))
        built = app.run(today).build
        assert built is not None and built.stories > 0
    sink = SmtpSink.start(port)
    workers = Workers(config, worker_env(pg_database, TECH_MATIN_UNSUBSCRIBE_SECRET=WORKER_SECRET))
    workers.start("--queues", "schedule,build,email", name="w")
    return config, today, sink, workers


def test_workers_mail_an_issue_once_approved(tmp_path: Path, pg_database: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.app import Pipeline

    config, today, sink, workers = approval_workers(tmp_path, pg_database, monkeypatch, "Etc/GMT+12", "23:59",
                                                    "hold")
    try:
        wait_for(lambda: "waiting for an editor's approval until 23:59" in workers.logs(), 60, "the wait", workers)
        assert sink.inbox.total == 0
        with Pipeline.from_files(config, REPO / "topics.yaml") as app:
            app.approve(today, "Louise Garnier")
        wait_for(lambda: sink.inbox.total == len(READERS), 60, "the mailing after the approval", workers)
        assert f"issue {today}: approved by Louise Garnier" in workers.logs()
    finally:
        workers.stop()
        sink.stop()
    assert sorted(sink.inbox.by_recipient) == READERS


def test_workers_hold_an_issue_not_approved_by_approve_by(tmp_path: Path, pg_database: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _config, today, sink, workers = approval_workers(tmp_path, pg_database, monkeypatch, "Etc/GMT-14", "00:01",
                                                     "hold")
    try:
        wait_for(lambda: f"issue {today}: not approved by 00:01: held, not sent" in workers.logs(), 60, "the hold",
                 workers)
    finally:
        workers.stop()
        sink.stop()
    assert sink.inbox.total == 0
