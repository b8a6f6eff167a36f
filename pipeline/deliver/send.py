"""The exactly-once send loop (see the package docstring), the dry run's outbox, and the report."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.archive import atomic_write
from pipeline.deliver.message import build_message, new_message_id, unsubscribe_links
from pipeline.deliver.recipients import Recipient, issue_topics, load_recipients, wants_issue
from pipeline.deliver.transport import ConnectionTrouble, Credentials, Refused, SmtpTransport, Uncertain
from pipeline.errors import PipelineError, printable, unexpected_error
from pipeline.models import DeliverySettings, Issue, RenderedIssue
from pipeline.store import DeliveryRecord, DeliveryStatus, DeliveryStore


@dataclass(frozen=True)
class DeliveryEvent:
    """One reader's outcome, for progress output."""

    email: str
    outcome: str  # sent | written | failed-permanent | failed-temporary | uncertain | retrying
    detail: str = ""


@dataclass
class DeliveryReport:
    date: dt.date
    dry_run: bool = False
    recipients: int = 0
    sent: int = 0  # (dry run: messages written to the outbox)
    already_sent: int = 0
    suppressed: int = 0  # on the suppression list, or refused permanently by an earlier send
    not_interested: int = 0  # topics of interest not in this issue
    failed_permanent: int = 0
    failed_temporary: int = 0
    uncertain: list[tuple[str, str]] = field(default_factory=list)  # (address, Message-ID)
    # The operator's findings on uncertain deliveries recorded by this send (address, Message-ID):
    # delivered ones are done; lost ones are mailed again by this very send (`lost_resent`).
    settled_delivered: list[tuple[str, str]] = field(default_factory=list)
    settled_lost: list[tuple[str, str]] = field(default_factory=list)
    lost_resent: int = 0
    empty_issue: bool = False  # an issue with no story, not sent (delivery.send_empty: false)
    aborted: str | None = None  # the server could not be reached: the rest was left for a resume
    outbox: Path | None = None
    connections: int = 0
    duration: float = 0.0

    @property
    def skipped(self) -> int:
        return self.already_sent + self.suppressed + self.not_interested

    @property
    def failed(self) -> int:
        return self.failed_permanent + self.failed_temporary

    @property
    def complete(self) -> bool:
        """Every reader got the issue or was rightly skipped: nothing left to resume."""
        return not (self.failed_temporary or self.uncertain or self.aborted)


def summarize_delivery(report: DeliveryReport) -> str:
    day = report.date.isoformat()
    skipped = (f"{report.skipped} skipped ({report.already_sent} already sent, {report.suppressed} suppressed, "
               f"{report.not_interested} not interested)")
    if report.empty_issue:
        return f"{day}: the issue has no story; nothing sent (set delivery.send_empty: true to send it anyway)"
    if report.dry_run:
        failed = f", {report.failed} failed" if report.failed else ""
        return (f"{day} (dry run): {report.sent} message(s) written to {report.outbox}, {skipped}{failed}; "
                "nothing recorded as sent")
    line = (f"{day}: {report.sent} sent, {skipped}, {report.failed} failed ({report.failed_permanent} permanent, "
            f"{report.failed_temporary} temporary), {len(report.uncertain)} uncertain, "
            f"{report.recipients} recipient(s), {report.duration:.1f} s")
    if report.settled_delivered or report.settled_lost:
        line += (f"; settled by the operator: {len(report.settled_delivered)} delivered (not sent again), "
                 f"{len(report.settled_lost)} lost ({report.lost_resent} sent again)")
    if report.aborted:
        line += f"; stopped: {report.aborted}"
    return line


def settle_findings(delivered: Sequence[str], lost: Sequence[str]) -> list[tuple[str, bool]]:
    """The operator's findings on uncertain deliveries as (Message-ID, delivered) pairs: each
    Message-ID with its angle brackets (`abc@host` or `<abc@host>` alike), once; a Message-ID
    given both ways is an error."""
    findings: dict[str, bool] = {}
    for texts, outcome, option in ((delivered, True, "--confirm-delivered"), (lost, False, "--confirm-lost")):
        for text in texts:
            message_id = text.strip()
            if not message_id.strip("<>"):
                raise PipelineError(f"{option}: empty Message-ID")
            message_id = message_id if message_id.startswith("<") else f"<{message_id}>"
            if findings.get(message_id, outcome) != outcome:
                raise PipelineError(f"Message-ID {printable(message_id)} is given both as delivered and as lost")
            findings[message_id] = outcome
    return list(findings.items())


class _Pacer:
    """At most `rate` messages per second (0: no limit), measured from the previous send."""

    def __init__(self, rate: float, sleep: Callable[[float], None]):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.sleep = sleep
        self.next_at = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        delay = self.next_at - time.monotonic()
        if delay > 0:
            self.sleep(delay)
        self.next_at = max(self.next_at, time.monotonic()) + self.interval


def _not_built(exc: Exception) -> str:
    """Why one reader's message could not be built, on one line."""
    return "message not built: " + (printable(str(exc)) if isinstance(exc, PipelineError) else unexpected_error(exc))


def _safe_name(email: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", email)


@dataclass(frozen=True)
class Mailing:
    """One issue ready to mail: what every message of a send is built from."""

    issue: Issue
    rendered: RenderedIssue  # rendered for email (absolute links)
    settings: DeliverySettings
    recipients: tuple[Recipient, ...]
    secret: str | None  # the key of the unsubscribe tokens
    topics: frozenset[str]  # every topic of the issue's stories

    @property
    def date(self) -> dt.date:
        return self.issue.date


def prepare_mailing(issue: Issue, settings: DeliverySettings, known_topics: Sequence[str], env: Mapping[str, str],
                    render: Callable[[], RenderedIssue]) -> Mailing | None:
    """Read the recipients and check the unsubscribe secret, then render the issue (`render`):
    everything that can fail does so before any message is sent. None for an issue without any
    story when delivery.send_empty is false (nothing to send)."""
    if issue.is_empty and not settings.send_empty:
        return None
    recipients = load_recipients(settings.recipients, known_topics)
    secret = env.get(settings.unsubscribe_secret_env) or None
    unsubscribe_links(settings, "check@example.org", secret)  # a missing secret fails before any send
    return Mailing(issue=issue, rendered=render(), settings=settings, recipients=tuple(recipients), secret=secret,
                   topics=frozenset(issue_topics(issue)))


def write_outbox(store: DeliveryStore, mailing: Mailing, outbox: Path, *, resend_uncertain: bool = False,
                 now: Callable[[], dt.datetime], on_event: Callable[[DeliveryEvent], None] | None = None
                 ) -> DeliveryReport:
    """The dry run: one .eml per reader a real send would mail now, in `outbox`/DATE/; nothing is
    recorded in the store."""
    emit = on_event or (lambda event: None)
    report = DeliveryReport(date=mailing.date, dry_run=True, recipients=len(mailing.recipients))
    folder = outbox / mailing.date.isoformat()
    report.outbox = folder
    plan = _plan(store, mailing, report, resend_uncertain)
    written: list[Path] = []
    at = now()
    built: list[tuple[int, Recipient]] = []
    for position, recipient in plan:
        try:
            message = build_message(mailing.issue, mailing.rendered, mailing.settings, recipient,
                                    new_message_id(mailing.date, mailing.settings), at, mailing.secret).as_bytes()
        except Exception as exc:  # as in a real send, that reader alone fails
            report.failed_temporary += 1
            emit(DeliveryEvent(recipient.email, "failed-temporary", _not_built(exc)))
            continue
        target = folder / f"{position:04d}-{_safe_name(recipient.key)}.eml"
        atomic_write(target, message)
        written.append(target)
        built.append((position, recipient))
    # Messages of readers no longer planned (removed, suppressed since) would mislead.
    keep = set(written)
    for stale in folder.glob("*.eml") if folder.is_dir() else ():
        if stale not in keep:
            stale.unlink()
    for path, (_, recipient) in zip(written, built, strict=True):
        emit(DeliveryEvent(recipient.email, "written", str(path)))
    report.sent = len(written)
    return report


def send_mailing(store: DeliveryStore, mailing: Mailing, credentials: Credentials | None, *,
                 resend_uncertain: bool = False, findings: Sequence[tuple[str, bool]] = (),
                 now: Callable[[], dt.datetime], sleep: Callable[[float], None] = time.sleep,
                 on_event: Callable[[DeliveryEvent], None] | None = None) -> DeliveryReport:
    """Send the issue to every reader who has not had it yet, over one reused SMTP connection, at
    the configured rate. The caller holds the send lock and made the store's commits durable.
    Safe to call again after any interruption: see the module docstring. `findings` (see
    settle_findings) are recorded first, all or none: a delivery found lost is then mailed again
    by this send, one found delivered never is."""
    emit = on_event or (lambda event: None)
    report = DeliveryReport(date=mailing.date, recipients=len(mailing.recipients))
    settle(store, mailing.date, findings, now(), report)
    plan = _plan(store, mailing, report, resend_uncertain)
    _send_all(store, mailing, [recipient for _, recipient in plan], credentials, now, sleep, report, emit)
    if report.settled_lost:
        records = store.deliveries(mailing.date)
        report.lost_resent = sum(1 for email, _ in report.settled_lost
                                 if records[email.lower()].status is DeliveryStatus.SENT)
    return report


def settle(store: DeliveryStore, date: dt.date, findings: Sequence[tuple[str, bool]], at: dt.datetime,
           report: DeliveryReport) -> None:
    """Record the operator's findings (Store.settle_deliveries, all or none) into `report`."""
    if not findings:
        return
    for record in store.settle_deliveries(date, findings, at):
        (report.settled_delivered if record.settled == "delivered" else report.settled_lost).append(
            (record.email, record.message_id))


TEST_SUBJECT_PREFIX = "[TEST] "


def send_test(issue: Issue, rendered: RenderedIssue, settings: DeliverySettings, address: str,
              credentials: Credentials | None, secret: str | None, now: dt.datetime) -> str:
    """Send the issue to one address (an editor's, before approving), subject marked "[TEST] ":
    no delivery record is read or written, so readers' exactly-once sends are untouched.
    Returns the server's acceptance reply; any refusal or trouble is a PipelineError."""
    from email.headerregistry import Address

    from pipeline.errors import PipelineError

    try:
        Address(addr_spec=address)
    except (ValueError, IndexError):
        raise PipelineError(f"test address {address!r} is not an email address") from None
    if "@" not in address:
        raise PipelineError(f"test address {address!r} is not an email address")
    recipient = Recipient(email=address)
    message = build_message(issue, rendered, settings, recipient, new_message_id(issue.date, settings), now, secret)
    subject = message["Subject"]
    del message["Subject"]
    message["Subject"] = TEST_SUBJECT_PREFIX + str(subject)
    transport = SmtpTransport(settings, credentials)
    try:
        return transport.send(settings.from_address, address, message.as_bytes(), on_handover=lambda: None)
    except (Refused, ConnectionTrouble, Uncertain) as trouble:
        raise PipelineError(f"test send to {address} failed: {trouble}") from None
    finally:
        transport.close()


def _send_all(store: DeliveryStore, mailing: Mailing, recipients: Sequence[Recipient],
              credentials: Credentials | None, now: Callable[[], dt.datetime], sleep: Callable[[float], None],
              report: DeliveryReport, emit: Callable[[DeliveryEvent], None]) -> None:
    """One message per reader over one reused connection, at the configured rate; stops early
    when the server is gone (`report.aborted`)."""
    transport = SmtpTransport(mailing.settings, credentials)
    pacer = _Pacer(mailing.settings.rate, sleep)
    try:
        for recipient in recipients:
            if not _send_one(store, transport, pacer, mailing, recipient, now, sleep, report, emit):
                break
    finally:
        transport.close()
        report.connections = transport.connections


def _plan(store: DeliveryStore, mailing: Mailing, report: DeliveryReport,
          resend_uncertain: bool) -> list[tuple[int, Recipient]]:
    """Who gets a message in this send, after what the store remembers of earlier sends."""
    records = store.deliveries(mailing.date)
    suppressed = store.suppressions()
    plan: list[tuple[int, Recipient]] = []
    for position, recipient in enumerate(mailing.recipients, start=1):
        record: DeliveryRecord | None = records.get(recipient.key)
        if record is not None and record.status is DeliveryStatus.SENT:
            report.already_sent += 1
        elif record is not None and record.status is DeliveryStatus.FAILED_PERMANENT:
            report.suppressed += 1
        elif (record is not None and record.status is DeliveryStatus.SENDING and record.handed_over is not None
              and not resend_uncertain):
            report.uncertain.append((recipient.email, record.message_id))
        elif recipient.key in suppressed:
            report.suppressed += 1
        elif not wants_issue(recipient, mailing.topics):
            report.not_interested += 1
        else:
            plan.append((position, recipient))
    return plan


def _send_one(store: DeliveryStore, transport: SmtpTransport, pacer: _Pacer, mailing: Mailing,
              recipient: Recipient, clock: Callable[[], dt.datetime], sleep: Callable[[float], None],
              report: DeliveryReport, emit: Callable[[DeliveryEvent], None]) -> bool:
    """Deliver to one reader with bounded retries. False when the whole send must stop."""
    date, settings = mailing.date, mailing.settings
    retries = 0
    while True:
        pacer.wait()
        record = store.begin_delivery(date, recipient.key, new_message_id(date, settings), clock())
        try:
            payload = build_message(mailing.issue, mailing.rendered, settings, recipient, record.message_id, clock(),
                                    mailing.secret).as_bytes()
        except Exception as exc:  # one reader's message, whatever broke it, fails that reader alone
            # Nothing went to the server: 'failed-temporary', so the send after a fix of the file mails it.
            problem = _not_built(exc)
            store.finish_delivery(date, recipient.key, DeliveryStatus.FAILED_TEMPORARY, problem, clock())
            report.failed_temporary += 1
            emit(DeliveryEvent(recipient.email, "failed-temporary", problem))
            return True
        try:
            reply = transport.send(settings.from_address, recipient.email, payload,
                                   on_handover=lambda: store.mark_handed_over(date, recipient.key, clock()))
        except Refused as refusal:
            if refusal.permanent:
                store.finish_delivery(date, recipient.key, DeliveryStatus.FAILED_PERMANENT, refusal.reply, clock(),
                                      suppress_reason="bounced" if settings.suppress_bounces else None)
                report.failed_permanent += 1
                emit(DeliveryEvent(recipient.email, "failed-permanent", refusal.reply))
                return True
            problem, connection = refusal.reply, False
        except ConnectionTrouble as trouble:
            problem, connection = str(trouble), True
        except Uncertain as broken:
            report.uncertain.append((recipient.email, record.message_id))
            emit(DeliveryEvent(recipient.email, "uncertain", f"{broken} (Message-ID {record.message_id})"))
            return True
        else:
            store.finish_delivery(date, recipient.key, DeliveryStatus.SENT, reply, clock())
            report.sent += 1
            emit(DeliveryEvent(recipient.email, "sent", reply))
            return True
        # A temporary failure: nothing was accepted, so another try can never make a duplicate.
        if retries >= settings.max_retries:
            store.finish_delivery(date, recipient.key, DeliveryStatus.FAILED_TEMPORARY, problem, clock())
            report.failed_temporary += 1
            emit(DeliveryEvent(recipient.email, "failed-temporary", problem))
            if connection:  # the server is gone: leave the others for a resume instead of waiting on each
                report.aborted = problem
                return False
            return True
        delay = settings.retry_delay * (2 ** retries)
        retries += 1
        emit(DeliveryEvent(recipient.email, "retrying", f"{problem}; try {retries + 1} in {delay:g} s"))
        sleep(delay)


# ---------------------------------------------------------------- the distributed mode's batches


def queue_mailing(store: DeliveryStore, mailing: Mailing, now: Callable[[], dt.datetime]) -> DeliveryReport:
    """The first step of a send by the workers: every delivery a send would make now is recorded
    as 'queued', its Message-ID fixed there, for batches to claim (`send_batch`). Readers served
    before, suppressed or not interested are counted as a send counts them; uncertain ones are
    listed, never queued again. `report.recipients` is how many deliveries wait in the queue."""
    report = DeliveryReport(date=mailing.date, recipients=len(mailing.recipients))
    plan = _plan(store, mailing, report, resend_uncertain=False)
    report.recipients = store.queue_deliveries(
        mailing.date, [(recipient.key, new_message_id(mailing.date, mailing.settings)) for _, recipient in plan],
        now())
    return report


def send_batch(store: DeliveryStore, mailing: Mailing, batch: str, limit: int, credentials: Credentials | None, *,
               now: Callable[[], dt.datetime], sleep: Callable[[float], None] = time.sleep,
               on_event: Callable[[DeliveryEvent], None] | None = None) -> DeliveryReport:
    """Claim up to `limit` queued deliveries for `batch` and send them as `send_mailing` does,
    each with its own protocol ('sending' then `handed_over` before the end of the data, the
    Message-ID fixed when it was queued). Run again under the same name after a crash, a batch
    first takes back its own deliveries never handed over; those handed over are listed as
    uncertain in `report.uncertain` and never sent again automatically."""
    emit = on_event or (lambda event: None)
    report = DeliveryReport(date=mailing.date)
    claimed = store.claim_deliveries(mailing.date, batch, limit, now())
    report.recipients = len(claimed)
    report.uncertain = [(record.email, record.message_id) for record in store.deliveries(mailing.date).values()
                        if record.batch == batch and record.status is DeliveryStatus.SENDING
                        and record.handed_over is not None]
    readers = {recipient.key: recipient for recipient in mailing.recipients}
    for record in claimed:
        if record.email not in readers:  # removed from the recipients file since the issue was queued
            store.finish_delivery(mailing.date, record.email, DeliveryStatus.FAILED_PERMANENT,
                                  "no longer a reader when its batch ran", now())
            report.suppressed += 1
    _send_all(store, mailing, [readers[r.email] for r in claimed if r.email in readers], credentials, now, sleep,
              report, emit)
    return report
