"""Deliver stage: mail a built issue to every reader, exactly once.

What it does, in order, for `pipeline send --date D` (and for the scheduler, both through
`pipeline.app.Pipeline.send`, which loads the stored issue: deliver never composes nor fetches):

1. `prepare_mailing`: read the recipients file (CSV or YAML), check the unsubscribe secret,
   render the issue for email;
2. `send_mailing`: skip suppressed addresses and readers whose topics are not in the issue;
   for each remaining reader, one MIME message addressed to that reader alone, sent over one
   reused SMTP connection at a bounded rate (`write_outbox` writes them to files instead).

Exactly once. Each attempt is written to the store as 'sending' BEFORE the first SMTP command
of its transaction, marked `handed_over` just before the end of the message data goes out, and
finished as 'sent', 'failed-permanent' or 'failed-temporary' once the server has answered.
On resume (`pipeline send --date D` again):

* 'sent' and 'failed-permanent' rows are skipped;
* 'failed-temporary' rows and 'sending' rows WITHOUT `handed_over` are sent again: the server
  never received the end of their data, and SMTP delivers nothing before it does;
* 'sending' rows WITH `handed_over` are the one window where the server may have accepted the
  message while we never learned it (crash or broken connection between the final "." and the
  recorded reply). They are NOT resent automatically, since the issue requires "never twice":
  they are reported with their Message-ID, to look up in the mail server's log, and
  `--resend-uncertain` sends them again once an operator has checked.

A lock file beside the database keeps two sends from working on the same store at once, and
store commits are fsynced (`Store.durable_commits`) so that a power cut cannot forget a 'sent'.
Credentials come from environment variables only and are never printed, logged or stored.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import functools
import hashlib
import hmac
import html
import io
import os
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy as email_policy
from email.headerregistry import Address, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from pipeline.archive import atomic_write
from pipeline.config.sources import email_address_problem
from pipeline.config.yamlfile import YamlList, YamlMap, load_yaml
from pipeline.errors import ConfigError, PipelineError
from pipeline.models import DeliverySettings, Issue, RenderedIssue
from pipeline.render import french_date
from pipeline.store import DeliveryRecord, DeliveryStatus, DeliveryStore

RECIPIENT_FIELDS = ("email", "name", "topics")
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

# ---------------------------------------------------------------- recipients file


@dataclass(frozen=True)
class Recipient:
    email: str  # as written in the file
    name: str = ""
    topics: tuple[str, ...] = ()  # topics of interest; empty: every issue
    line: int = 0  # line in the recipients file, for error messages

    @property
    def key(self) -> str:
        """The address as the store knows it: domains are case-insensitive, and no real
        mailbox tells Jeanne@ from jeanne@, so one reader is one lower-cased address."""
        return self.email.lower()


def _split_topics(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    words = [str(v).strip() for v in value] if isinstance(value, list) else re.split(r"[\s;,]+", str(value))
    return tuple(w for w in words if w)


def _check_recipient(path: Path, recipient: Recipient, seen: dict[str, int],
                     known_topics: Sequence[str] | None) -> None:
    problem = email_address_problem(recipient.email)
    if problem:
        raise ConfigError(path, f"bad address {recipient.email!r}: {problem}", recipient.line, "email")
    if recipient.key in seen:
        raise ConfigError(path, f"duplicate address {recipient.email!r} (first at line {seen[recipient.key]})",
                          recipient.line, "email")
    seen[recipient.key] = recipient.line
    if known_topics is not None:
        for topic in recipient.topics:
            if topic not in known_topics:
                raise ConfigError(path, f"unknown topic {topic!r} (known: {', '.join(known_topics)})",
                                  recipient.line, "topics")


def _read_csv(path: Path, text: str) -> list[Recipient]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    recipients: list[Recipient] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            unknown = [h for h in header if h not in RECIPIENT_FIELDS]
            if "email" not in header or unknown:
                raise ConfigError(path, f"the first line must be the header {','.join(RECIPIENT_FIELDS)} "
                                  f"(got {','.join(row)!r})", line)
            continue
        if len(row) > len(header):
            raise ConfigError(path, f"{len(row)} columns, the header has {len(header)} "
                              "(quote a name that contains a comma)", line)
        values = dict(zip(header, [cell.strip() for cell in row], strict=False))
        recipients.append(Recipient(email=values.get("email", ""), name=values.get("name", ""),
                                    topics=_split_topics(values.get("topics")), line=line))
    return recipients


def _read_yaml(path: Path) -> list[Recipient]:
    data = load_yaml(path)
    if not isinstance(data, YamlList):
        raise ConfigError(path, "must be a list of {email, name, topics}", getattr(data, "line", 1))
    recipients: list[Recipient] = []
    for index, (entry, line) in enumerate(zip(data, data.item_lines, strict=True)):
        where = f"[{index}]"
        if isinstance(entry, str):  # a bare address is a reader without name nor topics
            recipients.append(Recipient(email=entry.strip(), line=line))
            continue
        if not isinstance(entry, YamlMap):
            raise ConfigError(path, f"must be a mapping with an email, got {type(entry).__name__}", line, where)
        unknown = [k for k in entry if k not in RECIPIENT_FIELDS]
        if unknown:
            raise ConfigError(path, f"unknown key (expected one of: {', '.join(RECIPIENT_FIELDS)})",
                              entry.line_of(unknown[0]), f"{where}.{unknown[0]}")
        if not isinstance(entry.get("email"), str):
            raise ConfigError(path, "missing email", entry.line, f"{where}.email")
        topics = entry.get("topics")
        if topics is not None and not isinstance(topics, str | list):
            raise ConfigError(path, "must be a list of topic ids", entry.line_of("topics"), f"{where}.topics")
        recipients.append(Recipient(email=entry["email"].strip(), name=str(entry.get("name") or "").strip(),
                                    topics=_split_topics(topics), line=entry.line_of("email")))
    return recipients


def load_recipients(path: Path, known_topics: Sequence[str] | None = None) -> list[Recipient]:
    """Read and validate a recipients file: CSV with header `email,name,topics`, or a YAML list
    of {email, name, topics}. Errors name the file, the line and the reason."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: recipients file not found; add a reader with "
                            "`pipeline subscribers add EMAIL`")
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.read_bytes().strip():
            return []
        recipients = _read_yaml(path)
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets write a BOM
        except UnicodeDecodeError as exc:
            raise ConfigError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        recipients = _read_csv(path, text)
    seen: dict[str, int] = {}
    for recipient in recipients:
        _check_recipient(path, recipient, seen, known_topics)
    return recipients


def _recipients_bytes(path: Path, recipients: Sequence[Recipient]) -> bytes:
    if path.suffix.lower() in (".yaml", ".yml"):
        rows: list[dict[str, Any]] = []
        for r in recipients:
            row: dict[str, Any] = {"email": r.email}
            if r.name:
                row["name"] = r.name
            if r.topics:
                row["topics"] = list(r.topics)
            rows.append(row)
        return yaml.safe_dump(rows, allow_unicode=True, sort_keys=False).encode("utf-8")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RECIPIENT_FIELDS)
    for r in recipients:
        writer.writerow([r.email, r.name, " ".join(r.topics)])
    return buffer.getvalue().encode("utf-8")


@contextmanager
def exclusive_lock(lock_path: Path, what: str) -> Iterator[None]:
    """An exclusive advisory lock, released by the kernel even on SIGKILL."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"{lock_path}: {what} is already running; try again when it ends") from None
        yield
    finally:
        os.close(handle)


def add_recipient(path: Path, email: str, name: str = "", topics: Sequence[str] = (),
                  known_topics: Sequence[str] | None = None) -> Recipient:
    """Append a reader to the recipients file (created if missing), atomically."""
    path = Path(path)
    with exclusive_lock(path.with_name(path.name + ".lock"), "another edit of the recipients file"):
        current = load_recipients(path) if path.exists() else []
        recipient = Recipient(email=email.strip(), name=name.strip(), topics=tuple(topics),
                              line=(max((r.line for r in current), default=1) + 1))
        problem = email_address_problem(recipient.email)
        if problem:
            raise PipelineError(f"bad address {recipient.email!r}: {problem}")
        if any(r.key == recipient.key for r in current):
            raise PipelineError(f"{recipient.email} is already in {path}")
        for topic in recipient.topics:
            if known_topics is not None and topic not in known_topics:
                raise PipelineError(f"unknown topic {topic!r} (known: {', '.join(known_topics)})")
        atomic_write(path, _recipients_bytes(path, [*current, recipient]))
    return recipient


def remove_recipient(path: Path, email: str) -> Recipient:
    """Take a reader out of the recipients file, atomically."""
    path = Path(path)
    with exclusive_lock(path.with_name(path.name + ".lock"), "another edit of the recipients file"):
        current = load_recipients(path)
        key = email.strip().lower()
        found = [r for r in current if r.key == key]
        if not found:
            raise PipelineError(f"{email} is not in {path}")
        atomic_write(path, _recipients_bytes(path, [r for r in current if r.key != key]))
    return found[0]


def issue_topics(issue: Issue) -> set[str]:
    """Every topic of every story of the issue (lead, sections, further reading)."""
    return {topic for story in issue.stories() for topic in story.topics}


def wants_issue(recipient: Recipient, topics: Set[str]) -> bool:
    """The rule for topics of interest: a reader without topics gets every issue; a reader with
    topics gets an issue when at least one story carries one of them (the whole issue is sent,
    not only those stories)."""
    return not recipient.topics or not topics.isdisjoint(recipient.topics)


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    user: str = field(repr=False)
    password: str = field(repr=False)

    def __repr__(self) -> str:  # never show a secret, even in a traceback's locals
        return "Credentials(<hidden>)"


def credentials_from_env(settings: DeliverySettings, env: Mapping[str, str]) -> Credentials | None:
    """SMTP credentials from the environment variables named in the config; None if unset."""
    user = env.get(settings.username_env, "")
    password = env.get(settings.password_env, "")
    if not user and not password:
        return None
    if not user or not password:
        missing = settings.username_env if not user else settings.password_env
        raise PipelineError(f"environment variable {missing} is not set (both {settings.username_env} and "
                            f"{settings.password_env} are needed to log in to the SMTP server)")
    if settings.security == "none" and settings.smtp_host not in LOOPBACK_HOSTS:
        raise PipelineError(f"refusing to send SMTP credentials unencrypted to {settings.smtp_host}: set "
                            "delivery.security to starttls or tls")
    return Credentials(user=user, password=password)


# ---------------------------------------------------------------- messages


class _ListUnsubscribeHeader(UnstructuredHeader):
    """List-Unsubscribe folded only between its URIs. The stock folder turns an URL longer than
    a line into RFC 2047 encoded words, which no mail client reads as a link (RFC 2369 wants
    the URIs verbatim); a line up to 998 octets is allowed by RFC 5322."""

    def fold(self, *, policy: Any) -> str:
        return f"{self.name}: " + ("," + policy.linesep + " ").join(str(self).split(", ")) + policy.linesep


@functools.cache  # built once: a registry makes its header classes on first use, ~2 ms a message
def _message_policy() -> email_policy.EmailPolicy:
    registry = HeaderRegistry()  # our own registry: never change the shared one of policy.SMTP
    registry.map_to_type("list-unsubscribe", _ListUnsubscribeHeader)
    return email_policy.SMTP.clone(header_factory=registry)


def subject_for(issue: Issue) -> str:
    """'Tech Matin du mardi 6 mai — META ET L'IA.': name, French date, the lead's kicker."""
    subject = f"{issue.newsletter.name} du {french_date(issue.date)}"
    if issue.lead and issue.lead.kicker:
        subject += f" — {issue.lead.kicker}"
    return subject


def unsubscribe_token(secret: str, email: str) -> str:
    """An HMAC of the address: the unsubscribe endpoint can check a request without a database,
    and nobody can unsubscribe someone else by guessing."""
    return hmac.new(secret.encode("utf-8"), email.lower().encode("utf-8"), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class UnsubscribeLinks:
    mailto: str
    https: str


def unsubscribe_links(settings: DeliverySettings, email: str, secret: str | None) -> UnsubscribeLinks:
    needs_token = "{token}" in settings.unsubscribe_url or "{token}" in settings.unsubscribe_mailto
    if needs_token and not secret:
        raise PipelineError(f"delivery.unsubscribe_url uses {{token}} but environment variable "
                            f"{settings.unsubscribe_secret_env} is not set")
    token = unsubscribe_token(secret, email) if secret else ""
    values = {"email": quote(email, safe=""), "token": token}
    mailto = settings.unsubscribe_mailto or f"mailto:{settings.from_address}?subject=unsubscribe"
    return UnsubscribeLinks(mailto=mailto.format(**values), https=settings.unsubscribe_url.format(**values))


def _with_unsubscribe_footer(rendered: RenderedIssue, name: str, links: UnsubscribeLinks) -> tuple[str, str]:
    """The issue's text and HTML with a personal unsubscribe line at the very end."""
    text = rendered.text.rstrip("\n") + f"\n\nPour ne plus recevoir {name} :\n{links.https}\n"
    line = (f'<p style="font-family:Arial,Helvetica,sans-serif;font-size:12px;color:#666666;text-align:center;'
            f'margin:16px 0">Pour ne plus recevoir {html.escape(name)} : '
            f'<a href="{html.escape(links.https)}" style="color:#666666">se désinscrire</a></p>\n')
    page = rendered.html
    end = page.rfind("</body>")
    page = page[:end] + line + page[end:] if end >= 0 else page + line
    return text, page


def build_message(issue: Issue, rendered: RenderedIssue, settings: DeliverySettings, recipient: Recipient,
                  message_id: str, now: dt.datetime, unsubscribe_secret: str | None) -> EmailMessage:
    """One message for one reader: multipart/alternative (text, then HTML), To that reader only."""
    name = issue.newsletter.name
    links = unsubscribe_links(settings, recipient.email, unsubscribe_secret)
    text, page = _with_unsubscribe_footer(rendered, name, links)
    message = EmailMessage(policy=_message_policy())
    message["Subject"] = subject_for(issue)
    message["From"] = Address(settings.from_name or name, addr_spec=settings.from_address)
    message["To"] = Address(recipient.name, addr_spec=recipient.email)
    if settings.reply_to:
        message["Reply-To"] = settings.reply_to
    message["Date"] = format_datetime(now.astimezone(dt.UTC))
    message["Message-ID"] = message_id
    domain = settings.from_address.rsplit("@", 1)[1]
    message["List-Id"] = f"{name} <{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.{domain}>"
    message["List-Unsubscribe"] = f"<{links.mailto}>, <{links.https}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # quoted-printable keeps every line under 78 octets and the text greppable in the raw bytes.
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(page, subtype="html", charset="utf-8", cte="quoted-printable")
    return message


def new_message_id(date: dt.date, settings: DeliverySettings) -> str:
    return make_msgid(idstring=f"techmatin.{date.isoformat()}", domain=settings.from_address.rsplit("@", 1)[1])


# ---------------------------------------------------------------- SMTP


class _Refused(Exception):
    """The server answered no for this recipient: 5xx (permanent) or 4xx (temporary)."""

    def __init__(self, code: int, reply: str):
        super().__init__(reply)
        self.code = code
        self.reply = reply

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600


class _ConnectionTrouble(Exception):
    """No usable connection (refused, reset, timeout, 421) before the message was handed over."""


class _Uncertain(Exception):
    """The connection broke after the end of the data was sent: accepted or not, we cannot know."""


def _reply(code: int, text: bytes | str) -> str:
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(words.split())}"


def _dot_stuffed(payload: bytes) -> bytes:
    """The DATA section of RFC 5321 §4.5.2: CRLF lines, leading dots doubled, ended by CRLF.CRLF."""
    data = re.sub(rb"\r?\n", b"\r\n", payload)
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class SmtpTransport:
    """One SMTP connection reused for every message of a send, reopened after trouble.

    smtplib's sendmail() is not used: it hides the moment the end of the data is written, and
    that moment is what tells a safe retry from a possible duplicate."""

    def __init__(self, settings: DeliverySettings, credentials: Credentials | None):
        self.settings = settings
        self._credentials = credentials
        self._smtp: smtplib.SMTP | None = None
        self._local_name = socket.getfqdn()
        self.connections = 0  # how many times a connection was opened (reuse is measurable)

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.settings.tls_ca_file:
            context.load_verify_locations(cafile=str(self.settings.tls_ca_file))
        return context

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.smtp_host, s.port, local_hostname=self._local_name,
                                                      timeout=s.timeout, context=self._tls_context())
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.port, local_hostname=self._local_name, timeout=s.timeout)
            smtp.ehlo()
            if s.security == "starttls":
                if not smtp.has_extn("starttls"):
                    smtp.close()
                    raise PipelineError(f"SMTP server {s.smtp_host}:{s.port} does not offer STARTTLS "
                                        "(delivery.security: starttls)")
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
        except ssl.SSLError as exc:
            raise PipelineError(f"TLS with {s.smtp_host}:{s.port} failed: {exc.reason or exc}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise _ConnectionTrouble(f"cannot connect to {s.smtp_host}:{s.port}: {_describe(exc)}") from None
        if self._credentials is not None:
            try:
                smtp.login(self._credentials.user, self._credentials.password)
            except smtplib.SMTPAuthenticationError as exc:
                smtp.close()
                # The reply is the server's; the credentials themselves are never part of a message.
                raise PipelineError(f"SMTP server {s.smtp_host}:{s.port} refused the credentials of "
                                    f"${s.username_env} / ${s.password_env}: {_reply(exc.smtp_code, exc.smtp_error)}"
                                    ) from None
            except smtplib.SMTPNotSupportedError:
                smtp.close()
                raise PipelineError(f"SMTP server {s.smtp_host}:{s.port} does not offer AUTH; unset "
                                    f"${s.username_env} / ${s.password_env} or use another server") from None
            except (OSError, smtplib.SMTPException) as exc:
                smtp.close()
                raise _ConnectionTrouble(f"login to {s.smtp_host}:{s.port} failed: {_describe(exc)}") from None
        self.connections += 1
        return smtp

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def _reset(self) -> None:
        """End a refused transaction so that the next one starts clean."""
        if self._smtp is None:
            return
        try:
            self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    def send(self, sender: str, recipient: str, payload: bytes, on_handover: Callable[[], None]) -> str:
        """One SMTP transaction; returns the server's acceptance reply. Calls `on_handover` just
        before the end of the data is written. Raises _Refused, _ConnectionTrouble or _Uncertain."""
        if self._smtp is None:
            self._smtp = self._connect()
        smtp = self._smtp
        try:
            for command, argument in (("mail", sender), ("rcpt", recipient)):
                code, text = smtp.mail(argument) if command == "mail" else smtp.rcpt(argument)
                if code == 421:
                    self._drop()
                    raise _ConnectionTrouble(_reply(code, text))
                if not 200 <= code < 300:
                    self._reset()
                    if command == "mail" and 500 <= code < 600:
                        raise PipelineError(f"SMTP server refused the sender {sender}: {_reply(code, text)}")
                    raise _Refused(code, _reply(code, text))
            code, text = smtp.docmd("data")
            if code == 421:
                self._drop()
                raise _ConnectionTrouble(_reply(code, text))
            if code != 354:
                self._reset()
                raise _Refused(code, _reply(code, text))
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            raise _ConnectionTrouble(_describe(exc)) from None
        on_handover()
        try:
            smtp.send(_dot_stuffed(payload))
            code, text = smtp.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            raise _Uncertain(_describe(exc)) from None
        if 200 <= code < 300:
            return _reply(code, text)
        if code == 421:
            self._drop()
        raise _Refused(code, _reply(code, text))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------- the send


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
        return (f"{day} (dry run): {report.sent} message(s) written to {report.outbox}, {skipped}; "
                "nothing recorded as sent")
    line = (f"{day}: {report.sent} sent, {skipped}, {report.failed} failed ({report.failed_permanent} permanent, "
            f"{report.failed_temporary} temporary), {len(report.uncertain)} uncertain, "
            f"{report.recipients} recipient(s), {report.duration:.1f} s")
    if report.aborted:
        line += f"; stopped: {report.aborted}"
    return line


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
    for position, recipient in plan:
        message = build_message(mailing.issue, mailing.rendered, mailing.settings, recipient,
                                new_message_id(mailing.date, mailing.settings), at, mailing.secret)
        target = folder / f"{position:04d}-{_safe_name(recipient.key)}.eml"
        atomic_write(target, message.as_bytes())
        written.append(target)
    # Messages of readers no longer planned (removed, suppressed since) would mislead.
    keep = set(written)
    for stale in folder.glob("*.eml") if folder.is_dir() else ():
        if stale not in keep:
            stale.unlink()
    for path, (_, recipient) in zip(written, plan, strict=True):
        emit(DeliveryEvent(recipient.email, "written", str(path)))
    report.sent = len(written)
    return report


def send_mailing(store: DeliveryStore, mailing: Mailing, credentials: Credentials | None, *,
                 resend_uncertain: bool = False, now: Callable[[], dt.datetime],
                 sleep: Callable[[float], None] = time.sleep,
                 on_event: Callable[[DeliveryEvent], None] | None = None) -> DeliveryReport:
    """Send the issue to every reader who has not had it yet, over one reused SMTP connection, at
    the configured rate. The caller holds the send lock and made the store's commits durable.
    Safe to call again after any interruption: see the module docstring."""
    emit = on_event or (lambda event: None)
    report = DeliveryReport(date=mailing.date, recipients=len(mailing.recipients))
    plan = _plan(store, mailing, report, resend_uncertain)
    transport = SmtpTransport(mailing.settings, credentials)
    pacer = _Pacer(mailing.settings.rate, sleep)
    try:
        for _, recipient in plan:
            if not _send_one(store, transport, pacer, mailing, recipient, now, sleep, report, emit):
                break
    finally:
        transport.close()
        report.connections = transport.connections
    return report


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
        payload = build_message(mailing.issue, mailing.rendered, settings, recipient, record.message_id, clock(),
                                mailing.secret).as_bytes()
        try:
            reply = transport.send(settings.from_address, recipient.email, payload,
                                   on_handover=lambda: store.mark_handed_over(date, recipient.key, clock()))
        except _Refused as refusal:
            if refusal.permanent:
                store.finish_delivery(date, recipient.key, DeliveryStatus.FAILED_PERMANENT, refusal.reply, clock(),
                                      suppress_reason="bounced" if settings.suppress_bounces else None)
                report.failed_permanent += 1
                emit(DeliveryEvent(recipient.email, "failed-permanent", refusal.reply))
                return True
            problem, connection = refusal.reply, False
        except _ConnectionTrouble as trouble:
            problem, connection = str(trouble), True
        except _Uncertain as broken:
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
