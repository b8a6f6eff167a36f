"""Schedule stage: the daily job, every morning, never missed and never doubled.

What it owns: when to build (an APScheduler cron trigger in a time zone), catching up after
downtime, retries of a failed morning, one build at a time, and a clean stop on SIGTERM/SIGINT.
What it does not own: building. A build is one call of `Pipeline.run(date=...)` (pipeline.app).

How "never missed, never twice" is kept:

* Every path that may build (the cron fire, the check at start-up, the periodic watch, a retry)
  goes through `DailyScheduler.tick`, which decides with the pure function `decide` from the
  clock, today's scheduled time, whether the store already holds today's issue and the day's
  failures. So a trigger firing twice (a cron time inside the repeated hour of a DST change,
  a catch-up racing the cron fire, a manual run at dawn) still builds a date at most once.
* The store check and the build happen under the archive's build lock (`pipeline.lock`), shared
  with `pipeline run` and `pipeline rebuild`, so no other process can build in between.
* With a `delivery:` section, the built issue is then emailed by `Pipeline.send`,
  which resumes an interrupted send and never mails a reader twice; a send that leaves readers
  unreached is retried like a build.
* A check at start-up builds today's issue at once if it is due and missing (machine restarted),
  and a watch every `watch_interval_seconds` does the same (machine asleep through the morning:
  its timers stop during sleep, so APScheduler would only see a misfire past the grace time).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import threading
import traceback
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TextIO

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from pipeline.app import Pipeline
from pipeline.deliver import summarize_delivery
from pipeline.errors import PipelineError
from pipeline.models import ScheduleSettings

Clock = Callable[[], dt.datetime]

DAILY_JOB = "daily"
WATCH_JOB = "watch"
APPROVAL_POLL_SECONDS = 60  # how often a send waiting for the editor's approval looks again


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------- the plan: validated settings


@dataclass(frozen=True)
class SchedulePlan:
    """ScheduleSettings after command-line overrides, validated and compiled."""

    cron: str
    zone: zoneinfo.ZoneInfo
    trigger: CronTrigger
    misfire_grace_seconds: int
    max_retries: int
    retry_delay_seconds: int
    watch_interval_seconds: int
    lock_timeout_seconds: float
    log_file: Path | None


def parse_timezone(name: str, where: str = "--timezone") -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise PipelineError(f"{where}: unknown time zone {name!r} (use an IANA name such as Europe/Paris)") \
            from None


def parse_cron(expression: str, zone: zoneinfo.ZoneInfo, where: str = "--cron") -> CronTrigger:
    """A five-field crontab expression (minute hour day month weekday) as an APScheduler trigger."""
    try:
        return CronTrigger.from_crontab(expression, timezone=zone)
    except ValueError as exc:
        raise PipelineError(f"{where}: invalid cron expression {expression!r}: {exc} "
                            f"(expected 5 fields: minute hour day month weekday)") from None


def make_plan(settings: ScheduleSettings, config_path: Path, cron: str | None = None,
              timezone: str | None = None, log_file: Path | None = None,
              lock_timeout: float | None = None, draft_time: dt.time | None = None) -> SchedulePlan:
    """Merge command-line overrides into the config's `schedule:` section and validate the result.
    Errors name the option, or the config file and key, that holds the bad value. `draft_time`
    (delivery.draft_time) builds the issue every day at that time instead of schedule.cron;
    --cron still wins over both."""
    zone = parse_timezone(timezone or settings.timezone,
                          "--timezone" if timezone else f"{config_path}: schedule.timezone")
    if cron is None and draft_time is not None:
        expression, where = f"{draft_time.minute} {draft_time.hour} * * *", f"{config_path}: delivery.draft_time"
    else:
        expression = cron if cron is not None else settings.cron
        where = "--cron" if cron is not None else f"{config_path}: schedule.cron"
    trigger = parse_cron(expression, zone, where)
    for key in ("misfire_grace_seconds", "watch_interval_seconds"):
        if getattr(settings, key) < 1:
            raise PipelineError(f"{config_path}: schedule.{key}: must be at least 1")
    if lock_timeout is not None and lock_timeout < 0:
        raise PipelineError("--lock-timeout: must not be negative")
    if log_file is not None:
        log_path: Path | None = Path(log_file)
    elif settings.log_file:
        log_path = config_path.parent / settings.log_file  # relative to the config, like storage paths
    else:
        log_path = None
    return SchedulePlan(
        cron=expression, zone=zone, trigger=trigger, misfire_grace_seconds=settings.misfire_grace_seconds,
        max_retries=settings.max_retries, retry_delay_seconds=settings.retry_delay_seconds,
        watch_interval_seconds=settings.watch_interval_seconds,
        lock_timeout_seconds=settings.lock_timeout_seconds if lock_timeout is None else lock_timeout,
        log_file=log_path,
    )


# ---------------------------------------------------------------- pure decisions (no I/O, no clock)


def next_fire_times(trigger: CronTrigger, start: dt.datetime, count: int) -> list[dt.datetime]:
    """The next `count` fire times at or after `start`, as APScheduler will fire them."""
    times: list[dt.datetime] = []
    previous: dt.datetime | None = None
    current = start
    while len(times) < count:
        fire = trigger.get_next_fire_time(previous, current)
        if fire is None:
            break
        times.append(fire)
        previous = fire
        # Step in UTC: local arithmetic drops `fold`, and in the repeated hour of October that
        # would step back to the first 02:30 after the second.
        current = fire.astimezone(dt.UTC) + dt.timedelta(microseconds=1)
    return times


def scheduled_time(trigger: CronTrigger, zone: zoneinfo.ZoneInfo, day: dt.date) -> dt.datetime | None:
    """The first time the trigger fires on local calendar day `day`, or None if it does not fire
    that day (a weekday-only cron on a Sunday). Later fires the same day are for the same issue."""
    midnight = dt.datetime.combine(day, dt.time(0), zone)
    fires = next_fire_times(trigger, midnight, 1)
    if not fires or fires[0].astimezone(zone).date() != day:
        return None
    return fires[0]


def due_issue(now: dt.datetime, trigger: CronTrigger, zone: zoneinfo.ZoneInfo) -> tuple[dt.date, dt.datetime] | None:
    """Is today's issue due? (today's local date, its scheduled time) once that time has passed
    today, else None. The issue date is the local date in the schedule's time zone."""
    today = now.astimezone(zone).date()
    at = scheduled_time(trigger, zone, today)
    if at is None or now < at:
        return None
    return today, at


class Action(StrEnum):
    NOT_DUE = "not-due"  # today's scheduled time has not come (or the cron skips today)
    DONE = "done"  # today's issue is in the store: never build it twice
    BUILD = "build"
    WAIT = "wait"  # failed earlier today; the next retry is at `retry_at`
    GIVE_UP = "give-up"  # failed 1 + max_retries times today; try again tomorrow
    # Outcomes of DailyScheduler.tick (decide never returns these):
    BUILT = "built"
    FAILED = "failed"


@dataclass(frozen=True)
class Decision:
    action: Action
    date: dt.date | None = None
    scheduled: dt.datetime | None = None
    retry_at: dt.datetime | None = None
    attempt: int = 0  # the number of the attempt BUILD would make (1 = first)


def decide(now: dt.datetime, due: tuple[dt.date, dt.datetime] | None, built: bool,
           failures: Sequence[dt.datetime], max_retries: int, retry_delay_seconds: float) -> Decision:
    """What to do about today's issue, from facts only: `failures` are the times today's earlier
    attempts failed, oldest first."""
    if due is None:
        return Decision(Action.NOT_DUE)
    date, at = due
    if built:
        return Decision(Action.DONE, date, at)
    if len(failures) > max_retries:
        return Decision(Action.GIVE_UP, date, at, attempt=len(failures))
    if failures:
        retry_at = max(failures) + dt.timedelta(seconds=retry_delay_seconds)
        if now < retry_at:
            return Decision(Action.WAIT, date, at, retry_at=retry_at, attempt=len(failures) + 1)
    return Decision(Action.BUILD, date, at, attempt=len(failures) + 1)


# ---------------------------------------------------------------- the log


class ScheduleLog:
    """One line per event to a stream (stderr) and, if set, appended to a log file. The file is
    opened per line so that logrotate can move it at any time."""

    def __init__(self, stream: TextIO, path: Path | None, zone: zoneinfo.ZoneInfo, clock: Clock = utc_now):
        self.stream = stream
        self.path = path
        self.zone = zone
        self.clock = clock
        self._lock = threading.Lock()  # jobs and the main thread both log
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8"):
                    pass
            except OSError as exc:
                raise PipelineError(f"{path}: cannot open the log file: {exc.strerror or exc}") from None

    def _write(self, text: str) -> None:
        stamp = self.clock().astimezone(self.zone).isoformat(timespec="seconds")
        lines = "".join(f"{stamp} {line}\n" for line in text.rstrip("\n").splitlines())
        with self._lock:
            self.stream.write(lines)
            self.stream.flush()
            if self.path is not None:
                try:
                    with self.path.open("a", encoding="utf-8") as handle:
                        handle.write(lines)
                except OSError as exc:
                    # A full disk must not stop the scheduler: say so on stderr and go on.
                    self.stream.write(f"{stamp} warning: cannot write {self.path}: {exc.strerror or exc}\n")

    def info(self, message: str) -> None:
        self._write(message)

    def error(self, message: str, exc: BaseException | None = None) -> None:
        if exc is not None:
            message += "\n" + "".join(traceback.format_exception(exc)).rstrip()
        self._write(message)


# ---------------------------------------------------------------- the scheduler


class DailyScheduler:
    """The daily job on an APScheduler BackgroundScheduler.

    `pipeline` makes the Pipeline of the archive; it is called before each build (and closed
    after), so edits to topics.yaml take effect on the next morning without a restart (the
    schedule itself is read once, at start). `clock` is injectable for tests.
    """

    def __init__(self, pipeline: Callable[[], Pipeline], plan: SchedulePlan, log: ScheduleLog,
                 clock: Clock = utc_now, failures_from_store: bool = False):
        self.pipeline = pipeline
        self.plan = plan
        self.log = log
        self.clock = clock
        # In `--once` mode the process lives for one check, so the day's failures are counted
        # from the store's runs table; a long-running scheduler remembers them itself (which
        # also counts failures the store never saw, like a lock wait that timed out).
        self.failures_from_store = failures_from_store
        self._failures: dict[dt.date, list[dt.datetime]] = {}
        self._delivery_failures: dict[dt.date, list[dt.datetime]] = {}
        # The last date known to be built: the watch then answers without reading the config or
        # taking the lock, so a typo made in sources.yaml after 06:00 cannot fail a built day.
        self._built: dt.date | None = None
        # The last date whose email delivery is settled (everyone reached, or no `delivery:`).
        self._delivered: dt.date | None = None
        self._waiting: dt.date | None = None  # the date whose wait for an approval was logged
        self._stopping = threading.Event()
        self._scheduler: BackgroundScheduler | None = None

    # -- one decision and, maybe, one build

    def failures(self, date: dt.date) -> list[dt.datetime]:
        return list(self._failures.get(date, []))

    def delivery_failures(self, date: dt.date) -> list[dt.datetime]:
        return list(self._delivery_failures.get(date, []))

    def tick(self, reason: str) -> Decision:
        """Build today's issue if it is due, missing and not waiting for a retry, then email it
        if `delivery:` is configured. Never raises: every failure is logged and remembered, so
        the scheduler keeps running."""
        if self._stopping.is_set():
            return Decision(Action.NOT_DUE)
        now = self.clock()
        due = due_issue(now, self.plan.trigger, self.plan.zone)
        if due is None:
            return Decision(Action.NOT_DUE)
        date = due[0]
        for failures in (self._failures, self._delivery_failures):  # only today's failures matter
            for old in [d for d in failures if d != date]:
                del failures[old]
        early = decide(now, due, self._built == date, self.failures(date), self.plan.max_retries,
                       self.plan.retry_delay_seconds)
        if early.action is Action.DONE:
            self._report_skip(early, reason)
            if self._delivered != date:
                self._settle_delivery(None, date, reason)
            return early
        if early.action in (Action.WAIT, Action.GIVE_UP):
            return early  # no need to take the lock to know that
        app: Pipeline | None = None
        try:
            try:
                app = self.pipeline()
                outcome = self._build_if_missing(app, date, due, reason)
            except PipelineError as exc:  # RunFailed too: no feed readable, disk full, lock busy
                self._failed(self._failures, date, reason, str(exc), None)
                return Decision(Action.FAILED, date, due[1], attempt=len(self.failures(date)))
            except Exception as exc:  # a bug: keep the traceback, keep the scheduler alive
                self._failed(self._failures, date, reason, f"unexpected error: {exc!r}", exc)
                return Decision(Action.FAILED, date, due[1], attempt=len(self.failures(date)))
            if outcome.action in (Action.BUILT, Action.DONE) and self._delivered != date:
                self._settle_delivery(app, date, reason)  # outside the build lock: a send may take long
            return outcome
        finally:
            if app is not None:
                app.close()

    def _build_if_missing(self, app: Pipeline, date: dt.date, due: tuple[dt.date, dt.datetime],
                          reason: str) -> Decision:
        """Under the build lock: look in the store, and build only if the issue is not there."""
        with app.build_lock(self.plan.lock_timeout_seconds, f"pipeline schedule {date} ({reason})") as lock:
            built = app.issue_built(date)
            stored_failures = app.failed_runs(date) if self.failures_from_store else []
            if self.failures_from_store:
                self._failures[date] = list(stored_failures)
            decision = decide(self.clock(), due, built, self.failures(date), self.plan.max_retries,
                              self.plan.retry_delay_seconds)
            if decision.action is Action.DONE:
                self._built = date
            if decision.action is not Action.BUILD:
                self._report_skip(decision, reason)
                return decision
            self.log.info(f"building {date} ({reason}, attempt {decision.attempt} of {self.plan.max_retries + 1})")
            report = app.run(date, now=self.clock(), lock=lock)
        self._built = date
        self.log.info(f"ok {report.summary()}")
        return Decision(Action.BUILT, date, due[1], attempt=decision.attempt)

    def _settle_delivery(self, app: Pipeline | None, date: dt.date, reason: str) -> None:
        """Email the built issue when `delivery:` is configured. `Pipeline.send` resumes where an
        earlier send stopped and never mails a reader twice, so calling it again is safe; it is
        retried like a build (max_retries, retry_delay_seconds) while readers remain unreached."""
        failures = self._delivery_failures.get(date, [])
        if len(failures) > self.plan.max_retries:
            return
        if failures and self.clock() < max(failures) + dt.timedelta(seconds=self.plan.retry_delay_seconds):
            return
        own = app is None  # made here, so closed here
        try:
            app = app or self.pipeline()
            if app.config.delivery is None:
                self._delivered = date
                return
            gate = app.send_gate(date, self.clock())
            if gate.action == "wait":
                self._wait_for_approval(date, gate.reason, gate.until)
                return
            if gate.action == "hold":
                self.log.info(gate.reason)
                self._delivered = date
                return
            if gate.action == "send_anyway" or app.require_approval:
                self.log.info(gate.reason)
            report = app.send(date, now=self.clock)
        except PipelineError as exc:
            self._failed(self._delivery_failures, date, reason, f"email delivery: {exc}", None)
            return
        except Exception as exc:
            self._failed(self._delivery_failures, date, reason, f"email delivery: unexpected error: {exc!r}", exc)
            return
        finally:
            if own and app is not None:
                app.close()
        if report.sent or not report.complete or failures:
            self.log.info(f"sent {summarize_delivery(report)}")
        if report.failed_temporary or report.aborted:
            stopped = f"; stopped: {report.aborted}" if report.aborted else ""
            unreached = (report.recipients - report.sent - report.skipped - report.failed_permanent
                         - len(report.uncertain))
            self._failed(self._delivery_failures, date, reason,
                         f"email delivery: {unreached} reader(s) not reached yet{stopped}", None)
            return
        self._delivered = date
        if report.uncertain:
            self.log.error(f"email delivery {date}: {len(report.uncertain)} message(s) may or may not have "
                           f"been delivered; check, then `pipeline send --date {date} --resend-uncertain`")

    def _wait_for_approval(self, date: dt.date, reason: str, until: dt.datetime | None) -> None:
        """Log the wait once per issue, and look again within APPROVAL_POLL_SECONDS (the watch
        would, but later), and at `until` exactly."""
        if self._waiting != date:
            self._waiting = date
            self.log.info(reason)
        if self._scheduler is None or self._stopping.is_set():
            return
        again = self.clock() + dt.timedelta(seconds=APPROVAL_POLL_SECONDS)
        if until is not None:
            again = min(again, until)
        self._scheduler.add_job(self.tick, DateTrigger(again), args=["approval"], id=f"approval-{date}",
                                replace_existing=True, misfire_grace_time=None)

    def _report_skip(self, decision: Decision, reason: str) -> None:
        if decision.action is Action.DONE and reason in ("start", "once"):
            self.log.info(f"issue {decision.date} already built; nothing to catch up")
        elif decision.action is Action.DONE and reason == "scheduled":
            self.log.info(f"issue {decision.date} already built (by another run); not building it twice")
        elif decision.action is Action.WAIT:
            self.log.info(f"issue {decision.date}: waiting to retry at {self._local(decision.retry_at)}")
        elif decision.action is Action.GIVE_UP:
            self.log.info(f"issue {decision.date}: gave up after {decision.attempt} failed attempts today")

    def _failed(self, record: dict[dt.date, list[dt.datetime]], date: dt.date, reason: str, message: str,
                exc: Exception | None) -> None:
        """Log a failed build or delivery, remember it in `record`, and plan the retry."""
        failed_at = self.clock()
        kind = "email" if record is self._delivery_failures else "build"
        failures = record.setdefault(date, [])
        failures.append(failed_at)
        attempts = self.plan.max_retries + 1
        line = f"FAILED {date} ({reason}, attempt {len(failures)} of {attempts}): {message}"
        if len(failures) >= attempts:
            self.log.error(f"{line}; giving up on {date} until the next scheduled day", exc)
            return
        retry_at = failed_at + dt.timedelta(seconds=self.plan.retry_delay_seconds)
        self.log.error(f"{line}; retry at {self._local(retry_at)}", exc)
        if self._scheduler is not None and not self._stopping.is_set():
            # A one-off job at the exact retry time; the watch would also retry, but later.
            self._scheduler.add_job(self.tick, DateTrigger(retry_at), args=["retry"],
                                    id=f"retry-{kind}-{date}-{len(failures)}", replace_existing=True,
                                    misfire_grace_time=None)

    def _local(self, when: dt.datetime | None) -> str:
        return when.astimezone(self.plan.zone).strftime("%Y-%m-%d %H:%M:%S %Z") if when else "?"

    # -- the APScheduler side

    def start(self) -> None:
        """Start the background scheduler: the cron job, the watch, and a check right now."""
        plan = self.plan
        # One worker: jobs (cron fire, watch, retries, the check at start) never overlap in this
        # process, and the build lock keeps other processes out.
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": plan.misfire_grace_seconds},
            timezone=plan.zone,
        )
        scheduler.add_job(self.tick, plan.trigger, args=["scheduled"], id=DAILY_JOB, name="daily issue")
        scheduler.add_job(self.tick, IntervalTrigger(seconds=plan.watch_interval_seconds, timezone=plan.zone),
                          args=["watch"], id=WATCH_JOB, name="missed-issue watch")
        scheduler.add_job(self.tick, DateTrigger(self.clock()), args=["start"], id="start",
                          name="catch-up at start", misfire_grace_time=None)
        scheduler.add_listener(self._missed, EVENT_JOB_MISSED)
        self._scheduler = scheduler
        scheduler.start()

    def _missed(self, event: JobExecutionEvent) -> None:
        if event.job_id == DAILY_JOB:
            self.log.info(f"the {self._local(event.scheduled_run_time)} run was missed (machine asleep or "
                          f"stopped?); the watch builds the issue if it is still missing")

    def next_run_time(self) -> dt.datetime | None:
        if self._scheduler is None:
            return next_fire_times(self.plan.trigger, self.clock(), 1)[0]
        job = self._scheduler.get_job(DAILY_JOB)
        return job.next_run_time if job else None

    def shutdown(self) -> None:
        """Stop taking new work and wait for a running build to finish: a build is never cut in
        the middle (the store commits per step and output/ is written by rename in any case)."""
        self._stopping.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running


# ---------------------------------------------------------------- the process: serve and once


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[str]]:
    """SIGTERM and SIGINT set `stop` (the handler does nothing else: it runs between two
    bytecodes of the main thread, where logging could deadlock). Restores the old handlers."""
    received: list[str] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def serve(scheduler: DailyScheduler, out: TextIO, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM or SIGINT (or `stop` is set), then finish the current build and return 0."""
    stop = stop or threading.Event()
    with _stop_on_signals(stop) as received:
        plan = scheduler.plan
        scheduler.log.info(f"scheduler started: cron {plan.cron!r} in {plan.zone.key}, misfire grace "
                           f"{plan.misfire_grace_seconds} s, {plan.max_retries} retries "
                           f"{plan.retry_delay_seconds} s apart")
        due = due_issue(scheduler.clock(), plan.trigger, plan.zone)
        if due is not None:
            scheduler.log.info(f"today's issue ({due[0]}) was due at {scheduler._local(due[1])}: "
                               f"building it now unless it is already built")
        scheduler.start()
        print(f"next scheduled run: {scheduler._local(scheduler.next_run_time())}", file=out, flush=True)
        while not stop.wait(3600):  # wakes at once on a signal; the hour only bounds the wait
            pass
        why = received[0] if received else "stop requested"
        scheduler.log.info(f"{why}: stopping after the current build, if any")
        scheduler.shutdown()
        scheduler.log.info("scheduler stopped")
    return 0


def run_once(scheduler: DailyScheduler, out: TextIO) -> int:
    """One check, for cron: build today's issue if it is due and missing, and email it if
    `delivery:` is configured and some reader has not had it. Exit code 1 if that build or send
    failed, else 0 (not due yet, already built and sent, waiting for a retry, or done now)."""
    today = scheduler.clock().astimezone(scheduler.plan.zone).date()
    sends_failed = len(scheduler.delivery_failures(today))
    with _stop_on_signals(threading.Event()):
        decision = scheduler.tick("once")
    if len(scheduler.delivery_failures(today)) > sends_failed:
        return 1
    if decision.action is Action.NOT_DUE:
        print(f"today's issue is not due yet; next scheduled run: {scheduler._local(scheduler.next_run_time())}",
              file=out)
    return 1 if decision.action is Action.FAILED else 0
