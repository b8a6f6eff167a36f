"""Workers of the distributed mode: procrastinate jobs on the PostgreSQL store.

With `storage.backend: postgresql`, the work is spread over `pipeline worker` processes on any
number of machines, through procrastinate (a job queue kept in the same PostgreSQL database:
jobs claimed with FOR UPDATE SKIP LOCKED, retries, stalled-job recovery, periodic tasks deferred
once per time slot however many workers run). This module only wires jobs to the `Pipeline`
object (pipeline.app) and the store: it decides nothing about feeds, issues or mail.

Queues and jobs (job name: what it calls):

* schedule (`pipeline schedule` in this mode runs only this queue: it enqueues, never fetches)
  - `enqueue_due_feeds`, every `workers.tick_seconds`: `Pipeline.claim_due_feeds`, then one
    `fetch_feed` job per feed claimed;
  - `enqueue_build`, every tick: when today's issue is due (schedule.cron, or delivery.draft_time)
    and not built, one `build_issue` job for that date;
  - `enqueue_approved_mailing`, every tick, with delivery.require_approval: today's built issue
    gets its `queue_mailing` job once an editor approved it, or at delivery.approve_by when
    delivery.on_no_approval is send_anyway (`Pipeline.send_gate`); logged either way.
* feeds - `fetch_feed(feed_id)`: `Pipeline.refresh_feed` (fetch, parse, classify, store, set the
  next fetch time). Its procrastinate lock is one of `fetch.per_host` slots of the feed's host,
  so at most that many fetches of one host run at once across all workers.
* build - `build_issue(date)`: `Pipeline.build` (compose, render, publish; nothing when the issue
  exists), under the lock `build:<newsletter>` and the queueing lock `build:<date>`: one build
  of an archive at a time, never two waiting for one date. Then `queue_mailing` when email is on
  and no approval is required.
* email - `queue_mailing(date)`: `Pipeline.queue_mailing` (deliveries queued with their
  Message-IDs), then one `send_batch` job per `workers.email_batch` deliveries;
  `send_batch(date, batch)`: `Pipeline.send_batch`, which claims rows with SKIP LOCKED. A batch
  stopped by a dead server fails, and procrastinate retries it later under the same name.
* maintenance - `maintenance`, every tick: jobs of workers silent for
  `workers.stalled_after_seconds` (killed, machine lost) are retried (a retried batch takes back
  its own deliveries never handed over), uncertain deliveries are reported, finished jobs older
  than a week deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import math
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import procrastinate
from procrastinate import exceptions as queue_errors

from pipeline.app import Pipeline, utc_now
from pipeline.errors import PipelineError
from pipeline.models import FeedSource
from pipeline.schedule import SchedulePlan, due_issue, make_plan
from pipeline.store import DeliveryStatus

QUEUES = ("feeds", "build", "email", "maintenance")  # what `pipeline worker` runs by default
SCHEDULE_QUEUE = "schedule"  # what `pipeline schedule` runs in the distributed mode
ALL_QUEUES = (SCHEDULE_QUEUE, *QUEUES)
FINISHED_JOBS_KEPT_HOURS = 7 * 24

log = logging.getLogger("pipeline.worker")
P = ParamSpec("P")
R = TypeVar("R")


def reported(job: Callable[P, R]) -> Callable[P, R]:
    """A job's user-facing failure (bad config, missing secret…) as one error line in the worker's
    log, then raised for procrastinate to record and retry."""

    @functools.wraps(job)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return job(*args, **kwargs)
        except PipelineError as exc:
            log.error("%s(%s): %s", job.__name__, ", ".join(f"{k}={v}" for k, v in kwargs.items()), exc)
            raise

    return run


def host_slot(feed: FeedSource, per_host: int) -> str:
    """The procrastinate lock of a feed's fetch: one of `per_host` slots of its host."""
    host = urlsplit(feed.url).hostname or "local"
    return f"host:{host}:{zlib.crc32(feed.id.encode()) % max(per_host, 1)}"


def tick_cron(seconds: int) -> str:
    """A cron expression firing every `seconds` (croniter's sixth field is the second)."""
    return "* * * * *" if seconds >= 60 else f"* * * * * */{seconds}"


@dataclass(frozen=True)
class QueueApp:
    """A procrastinate App with the pipeline's tasks, each job run with this thread's Pipeline."""

    app: procrastinate.App
    pipeline: Callable[[], Pipeline]


def build_queue_app(dsn: str, new_pipeline: Callable[[], Pipeline], tick_seconds: int) -> QueueApp:
    """The tasks of every queue, bound to Pipelines made by `new_pipeline` (one per worker thread:
    a store connection is not shared between threads)."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    local = threading.local()

    def pipeline() -> Pipeline:
        if getattr(local, "pipeline", None) is None:
            local.pipeline = new_pipeline()
            local.pipeline.parse_workers = 1  # a job parses its one feed in its thread: no process pool per job
        current: Pipeline = local.pipeline
        return current

    cron = tick_cron(tick_seconds)
    retry = procrastinate.RetryStrategy(max_attempts=5, exponential_wait=5)

    @app.periodic(cron=cron, periodic_id="feeds")
    @app.task(name="enqueue_due_feeds", queue=SCHEDULE_QUEUE, queueing_lock="enqueue_due_feeds")
    @reported
    def enqueue_due_feeds(timestamp: int) -> int:
        current = pipeline()
        per_host = current.config.fetch.per_host
        enqueued = 0
        for feed in current.claim_due_feeds():
            try:
                fetch_feed.configure(lock=host_slot(feed, per_host), queueing_lock=f"feed:{feed.id}").defer(
                    feed_id=feed.id)
                enqueued += 1
            except queue_errors.AlreadyEnqueued:  # its job from an earlier slot still waits
                pass
        log.info("slot %s: %d feed(s) due, enqueued", timestamp, enqueued)
        return enqueued

    @app.task(name="fetch_feed", queue="feeds", retry=retry)
    @reported
    def fetch_feed(feed_id: str) -> str:
        report, next_fetch = pipeline().refresh_feed(feed_id)
        log.info("feed %s: %s, %d new item(s), next fetch %s", feed_id, report.status, report.new_items,
                 next_fetch.isoformat(timespec="seconds"))
        return report.status

    @app.periodic(cron=cron, periodic_id="build")
    @app.task(name="enqueue_build", queue=SCHEDULE_QUEUE, queueing_lock="enqueue_build")
    @reported
    def enqueue_build(timestamp: int) -> str | None:
        current = pipeline()
        plan = _daily_plan(current)
        due = due_issue(utc_now(), plan.trigger, plan.zone)
        if due is None or current.issue_built(due[0]):
            return None
        defer_build(due[0])
        return due[0].isoformat()

    # The dates whose approval outcome this process has logged, and those it has mailed.
    told: set[tuple[dt.date, str]] = set()
    mailed: set[dt.date] = set()

    @app.periodic(cron=cron, periodic_id="approval")
    @app.task(name="enqueue_approved_mailing", queue=SCHEDULE_QUEUE, queueing_lock="enqueue_approved_mailing")
    @reported
    def enqueue_approved_mailing(timestamp: int) -> str | None:
        """With delivery.require_approval: today's built issue is mailed once approved, or at
        delivery.approve_by as delivery.on_no_approval says (see Pipeline.send_gate)."""
        current = pipeline()
        if not current.require_approval:
            return None
        now = utc_now()
        plan = _daily_plan(current)
        due = due_issue(now, plan.trigger, plan.zone)
        if due is None or due[0] in mailed or not current.issue_built(due[0]):
            return None
        date = due[0]
        gate = current.send_gate(date, now)
        if (date, gate.action) not in told:
            told.add((date, gate.action))
            log.info("%s", gate.reason)
        if gate.action in ("wait", "hold"):
            return gate.action
        mailed.add(date)
        with contextlib.suppress(queue_errors.AlreadyEnqueued):
            queue_mailing.configure(queueing_lock=f"mailing:{date.isoformat()}").defer(date=date.isoformat())
        return gate.action

    def defer_build(date: dt.date) -> None:
        newsletter = pipeline().config.newsletter.name
        with contextlib.suppress(queue_errors.AlreadyEnqueued):
            build_issue.configure(lock=f"build:{newsletter}", queueing_lock=f"build:{date.isoformat()}").defer(
                date=date.isoformat())

    @app.task(name="build_issue", queue="build", retry=retry)
    @reported
    def build_issue(date: str) -> int | None:
        current = pipeline()
        result = current.build(dt.date.fromisoformat(date))
        if result is None:
            log.info("issue %s already built: nothing to do", date)
            return None
        log.info("issue %s built: %d stories", date, result.stories)
        if current.config.delivery is not None and not current.require_approval:
            # With require_approval, enqueue_approved_mailing mails it once approved (or at approve_by).
            queue_mailing.configure(queueing_lock=f"mailing:{date}").defer(date=date)
        return result.stories

    @app.task(name="queue_mailing", queue="email", retry=retry)
    @reported
    def queue_mailing(date: str) -> int:
        current = pipeline()
        report = current.queue_mailing(dt.date.fromisoformat(date))
        if report is None:
            return 0
        for email, message_id in report.uncertain:
            log.warning("issue %s: uncertain delivery to %s (Message-ID %s), not resent", date, email, message_id)
        batches = math.ceil(report.recipients / current.config.workers.email_batch)
        for number in range(batches):
            name = f"{date}#{number}"
            send_batch.configure(lock=f"batch:{name}").defer(date=date, batch=name)
        log.info("issue %s: %d deliveries queued in %d batch(es)", date, report.recipients, batches)
        return batches

    @app.task(name="send_batch", queue="email", retry=retry)
    @reported
    def send_batch(date: str, batch: str) -> int:
        report = pipeline().send_batch(dt.date.fromisoformat(date), batch)
        for email, message_id in report.uncertain:
            log.warning("batch %s: uncertain delivery to %s (Message-ID %s), not resent", batch, email, message_id)
        log.info("batch %s: %d sent, %d failed, %d uncertain", batch, report.sent, report.failed,
                 len(report.uncertain))
        if report.aborted:  # the rest of the batch stays claimed: the retry takes it back
            raise RuntimeError(f"batch {batch} stopped: {report.aborted}")
        return report.sent

    @app.periodic(cron=cron, periodic_id="maintenance")
    @app.task(name="maintenance", queue="maintenance", queueing_lock="maintenance")
    async def maintenance(timestamp: int) -> int:
        current = pipeline()
        stalled = list(await app.job_manager.get_stalled_jobs(
            seconds_since_heartbeat=current.config.workers.stalled_after_seconds))
        for job in stalled:
            log.warning("job %s %s(%s) was running on a worker that stopped answering: retried", job.id,
                        job.task_name, job.task_kwargs)
            await app.job_manager.retry_job(job)
        for date, email, message_id in await asyncio.to_thread(_uncertain_deliveries, current):
            log.warning("issue %s: uncertain delivery to %s (Message-ID %s): check the mail server's log, then "
                        "`pipeline send --date %s --resend-uncertain` if it never left", date, email, message_id, date)
        await app.job_manager.delete_old_jobs(nb_hours=FINISHED_JOBS_KEPT_HOURS)
        return len(stalled)

    return QueueApp(app=app, pipeline=pipeline)


def _daily_plan(app: Pipeline) -> SchedulePlan:
    """The daily build's plan: at schedule.cron, or at delivery.draft_time when set."""
    delivery = app.config.delivery
    return make_plan(app.config.schedule, app.config.path, draft_time=delivery.draft_time if delivery else None)


def _uncertain_deliveries(app: Pipeline) -> list[tuple[str, str, str]]:
    """Deliveries of the last issues handed over to the server without a recorded answer."""
    store = app.store
    found = []
    for date in store.issue_dates()[-3:]:
        for record in store.deliveries(date).values():
            if record.status is DeliveryStatus.SENDING and record.handed_over is not None:
                found.append((date.isoformat(), record.email, record.message_id))
    return found


def parse_queues(text: str | None) -> tuple[str, ...]:
    """`--queues feeds,build`: names checked against the known queues (default: all but schedule)."""
    if not text:
        return QUEUES
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ALL_QUEUES]
    if unknown or not names:
        raise PipelineError(f"--queues: unknown queue {', '.join(unknown) or repr(text)} "
                            f"(known: {', '.join(ALL_QUEUES)})")
    return names


def install_queue_schema(app: procrastinate.App) -> None:
    """procrastinate's tables, created on first use (a worker starting on a new database)."""
    try:
        app.job_manager.list_queues()
    except queue_errors.ConnectorException:
        try:
            app.schema_manager.apply_schema()
        except queue_errors.ConnectorException:  # another worker created them at the same moment
            app.job_manager.list_queues()


def run_worker(new_pipeline: Callable[[], Pipeline], queues: Sequence[str], concurrency: int,
               name: str = "worker", wait: bool = True) -> None:
    """Run a worker until SIGTERM/SIGINT (or, with wait=False, until its queues are empty)."""
    first = new_pipeline()
    config = first.config
    if config.store_backend != "postgresql" or not first.store_target.dsn:
        raise PipelineError(f"{config.path}: `pipeline worker` needs storage.backend: postgresql "
                            "(and $TECH_MATIN_DATABASE_URL); with SQLite, use `pipeline run` or `pipeline schedule`")
    first.store.item_count()  # connects, and migrates the store before any job runs
    first.close()
    queue_app = build_queue_app(first.store_target.dsn, new_pipeline, config.workers.tick_seconds)
    options: dict[str, Any] = {
        "queues": list(queues), "concurrency": concurrency, "name": name, "wait": wait,
        "update_heartbeat_interval": config.workers.heartbeat_seconds,
        "stalled_worker_timeout": config.workers.stalled_after_seconds,
        "fetch_job_polling_interval": 1.0, "abort_job_polling_interval": 5.0,
    }
    with queue_app.app.open():
        install_queue_schema(queue_app.app)
        queue_app.app.run_worker(**options)


def enqueue_mailing(new_pipeline: Callable[[], Pipeline], date: dt.date, resend_uncertain: bool = False) -> None:
    """`pipeline send` in the distributed mode: one `queue_mailing` job, for the email workers."""
    if resend_uncertain:
        raise PipelineError("--resend-uncertain is not available with storage.backend: postgresql: the email "
                            "workers never send again a message that may have been delivered (see the "
                            "Message-IDs their logs list)")
    app = new_pipeline()
    dsn = app.store_target.dsn
    app.close()
    if not dsn:
        raise PipelineError("the distributed mode needs $TECH_MATIN_DATABASE_URL")
    queue_app = build_queue_app(dsn, new_pipeline, app.config.workers.tick_seconds)
    with queue_app.app.open():
        install_queue_schema(queue_app.app)
        with contextlib.suppress(queue_errors.AlreadyEnqueued):
            queue_app.app.configure_task("queue_mailing", queueing_lock=f"mailing:{date.isoformat()}").defer(
                date=date.isoformat())
