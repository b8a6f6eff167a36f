"""Email delivery against a real SMTP server on 127.0.0.1 (aiosmtpd, tests/smtpserver.py: the
`smtp` fixture), with a real built issue.

The issue is built once by the real pipeline (`pipeline run`) from a local RSS file; each test
works on its own copy of that database. The test server records every message as raw bytes and
can refuse given addresses permanently (550) or temporarily (451), require a login, or hold a
message's reply so that a real `python -m pipeline send` process can be SIGKILLed at a known point.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from email import policy
from email.parser import BytesParser
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from smtpserver import Inbox, SmtpServer, start_server

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.deliver import (
    Credentials,
    Recipient,
    add_recipient,
    load_recipients,
    subject_for,
    unsubscribe_token,
    wants_issue,
)
from pipeline.errors import ConfigError
from pipeline.models import DeliverySettings
from pipeline.store import StoreTarget, issue_from_json, open_store
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
TOPICS = REPO / "topics.yaml"
DATE = "2025-05-06"
BASE_URL = "https://techmatin.example.org/"
SECRET = "unsubscribe-key-for-tests-of-32-bytes-or-more"

FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Veille test</title><link>https://news.example.org/</link>
<description>Flux de test</description>
<item><title>Meta AI : l'entraînement sur les données des Européens contesté</title>
<link>https://news.example.org/meta-ai</link><guid>meta-ai-1</guid>
<pubDate>Mon, 05 May 2025 10:00:00 +0000</pubDate>
<description>Meta veut entraîner Meta AI et Llama sur les publications publiques des Européens.
Les utilisateurs ont jusqu'au 27 mai 2025 pour s'opposer.</description></item>
<item><title>La CNIL sanctionne une entreprise au titre du RGPD</title>
<link>https://news.example.org/cnil</link><guid>cnil-1</guid>
<pubDate>Mon, 05 May 2025 12:00:00 +0000</pubDate>
<description>La CNIL inflige une amende pour manquement au RGPD et aux droits des personnes.</description></item>
</channel></rss>
"""

READERS = [
    ("jeanne.morel@example.org", "Jeanne Morel", ""),
    ("idriss@example.net", "Idriss Benali", "rgpd"),
    ("camille.roux@example.com", "Camille Roux", ""),
    ("lea@example.fr", "Léa Dupré", ""),
    ("marc@example.org", "Marc Petit", "meta_ai ai_act"),
    ("nora@example.net", "", ""),
]


# ---------------------------------------------------------------- a built issue and a site


@pytest.fixture(scope="module")
def built_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue of 2025-05-06 built by the real `pipeline run` from a local RSS file."""
    if not TOPICS.is_file():
        pytest.skip("topics.yaml is missing (it is being written in another task); no issue can be built")
    folder = tmp_path_factory.mktemp("built")
    (folder / "feed.xml").write_text(FEED, encoding="utf-8")
    config = folder / "sources.yaml"
    config.write_text(yaml.safe_dump({
        "newsletter": {"name": "Tech Matin", "base_url": BASE_URL},
        "feeds": [{"id": "veille", "name": "Veille Test", "url": "feed.xml"}],
    }), encoding="utf-8")
    db = folder / "pipeline.sqlite3"
    code = main(["run", "--config", str(config), "--topics", str(TOPICS), "--date", DATE, "--db", str(db),
                 "--output", str(folder / "output")], out=open(os.devnull, "w"), err=open(os.devnull, "w"))  # noqa: SIM115
    assert code == 0, "the real pipeline could not build the test issue"
    with open_store(StoreTarget(db)) as store:
        stored = store.issue(dt_date(DATE))
        assert stored is not None and stored.story_count >= 2
    return db


def dt_date(text: str) -> Any:
    import datetime as dt

    return dt.date.fromisoformat(text)


@dataclasses.dataclass
class Site:
    root: Path
    db: Path
    config: Path
    recipients: Path

    def configure(self, port: int, **delivery: Any) -> Path:
        settings: dict[str, Any] = {
            "from_address": "lettre@techmatin.example.org",
            "reply_to": "redaction@techmatin.example.org",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "security": "none",
            "recipients": self.recipients.name,
            "rate": 0,
            "max_retries": 2,
            "retry_delay": 0.01,
            "timeout": 10,
            "unsubscribe_url": "https://techmatin.example.org/desinscription?email={email}&token={token}",
        }
        settings.update(delivery)
        self.config.write_text(yaml.safe_dump({
            "newsletter": {"name": "Tech Matin", "base_url": BASE_URL},
            "storage": {"db": self.db.name},
            "feeds": [{"id": "veille", "name": "Veille Test", "url": "feed.xml"}],
            "delivery": settings,
        }, allow_unicode=True), encoding="utf-8")
        return self.config

    def args(self, *extra: str) -> list[str]:
        return ["--config", str(self.config), "--topics", str(TOPICS), "--db", str(self.db), *extra]

    def deliveries(self) -> dict[str, Any]:
        with open_store(StoreTarget(self.db)) as store:
            return store.deliveries(dt_date(DATE))

    def suppressions(self) -> dict[str, Any]:
        with open_store(StoreTarget(self.db)) as store:
            return store.suppressions()


def write_readers(path: Path, readers: list[tuple[str, str, str]]) -> None:
    lines = ["email,name,topics"] + [f"{email},{name},{topics}" for email, name, topics in readers]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, built_db: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    for suffix in ("", "-wal", "-shm"):
        source = built_db.with_name(built_db.name + suffix)
        if source.exists():
            shutil.copy(source, tmp_path / (built_db.name + suffix))
    (tmp_path / "feed.xml").write_text(FEED, encoding="utf-8")
    site = Site(root=tmp_path, db=tmp_path / built_db.name, config=tmp_path / "sources.yaml",
                recipients=tmp_path / "recipients.csv")
    write_readers(site.recipients, READERS[:3])
    # A developer's own credentials must never reach the test server; the tests set their own.
    for name in ("TECH_MATIN_SMTP_USER", "TECH_MATIN_SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TECH_MATIN_UNSUBSCRIBE_SECRET", SECRET)
    return site


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str


def run(*args: str) -> Result:
    import io

    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(list(args), out=out, err=err)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def send(site: Site, *extra: str) -> Result:
    return run("send", *site.args("--date", DATE, *extra))


# ---------------------------------------------------------------- messages


def test_each_reader_gets_one_message_of_two_parts_addressed_to_them_alone(site: Site, smtp: SmtpServer) -> None:
    site.configure(smtp.port)
    result = send(site)
    assert result.code == 0, result.err
    assert "3 sent, 0 skipped" in result.out

    messages = smtp.inbox.messages
    assert sorted(m.rcpt_tos[0] for m in messages) == sorted(r[0] for r in READERS[:3])
    with open_store(StoreTarget(site.db)) as store:
        stored = store.issue(dt_date(DATE))
        assert stored is not None
        issue = issue_from_json(stored.issue_json, load_config(site.config).newsletter)
    message_ids = set()
    for received in messages:
        reader = received.rcpt_tos[0]
        assert received.rcpt_tos == [reader], "one envelope recipient per message"
        assert received.mail_from == "lettre@techmatin.example.org"
        message = received.parsed()
        name, address = parseaddr(str(message["To"]))
        assert address == reader and dict((r[0], r[1]) for r in READERS)[reader] == name
        assert message["Cc"] is None and message["Bcc"] is None
        others = [r[0] for r in READERS if r[0] != reader]
        text_part = message.get_body(("plain",))
        html_part = message.get_body(("html",))
        assert text_part is not None and html_part is not None
        text, page = text_part.get_content(), html_part.get_content()
        for other in others:  # nobody else's address anywhere: raw bytes, decoded parts
            assert other.encode() not in received.raw and other not in text and other not in page
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        assert all(p.get_content_charset() == "utf-8" for p in message.iter_parts())
        assert "Bonjour à toutes et à tous, nous sommes le mardi 6 mai" in text
        assert "LE FAIT DU JOUR |" in text and "LE FAIT DU JOUR |" in page
        # "Voir dans votre navigateur" points at the archive page; no previous/next links in email.
        assert f'href="{BASE_URL}{DATE}/"' in page and "Voir dans votre navigateur" in page
        assert 'rel="prev"' not in page and 'rel="next"' not in page and "../" not in page
        assert message["Subject"] == subject_for(issue)
        assert message["Subject"].startswith("Tech Matin du mardi 6 mai — ") and not message["Subject"].endswith(".")
        assert issue.lead is not None and issue.lead.kicker not in message["Subject"]  # no capitals
        assert parseaddr(str(message["From"])) == ("Tech Matin", "lettre@techmatin.example.org")
        assert str(message["Reply-To"]) == "redaction@techmatin.example.org"
        assert parsedate_to_datetime(str(message["Date"])).tzinfo is not None
        token = unsubscribe_token(SECRET, reader)
        quoted = reader.replace("@", "%40")
        assert str(message["List-Unsubscribe"]) == (
            "<mailto:lettre@techmatin.example.org?subject=unsubscribe>, "
            f"<https://techmatin.example.org/desinscription?email={quoted}&token={token}>")
        assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
        assert f"https://techmatin.example.org/desinscription?email={quoted}&token={token}" in text
        message_ids.add(str(message["Message-ID"]))
    assert len(message_ids) == 3
    assert len({m.peer for m in messages}) == 1, "one SMTP connection for the whole send"

    records = site.deliveries()
    assert {r.status for r in records.values()} == {"sent"}
    assert {r.message_id for r in records.values()} == message_ids
    assert all(r.attempts == 1 and r.handed_over is not None and r.reply.startswith("250") for r in records.values())

    head = messages[0].raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    print("\nRaw headers of one message received by the test server:\n" + head)


def test_sending_again_sends_nothing(site: Site, smtp: SmtpServer) -> None:
    site.configure(smtp.port)
    assert send(site).code == 0
    again = send(site)
    assert again.code == 0
    assert "0 sent, 3 skipped (3 already sent" in again.out
    assert len(smtp.inbox.messages) == 3


def test_no_issue_built_for_the_date_is_a_clear_error(site: Site, smtp: SmtpServer) -> None:
    site.configure(smtp.port)
    result = run("send", *site.args("--date", "2025-05-07"))
    assert result.code == 2
    assert result.err.strip() == ("pipeline: error: no issue built for 2025-05-07; run `pipeline run --date "
                                  "2025-05-07` first")
    assert smtp.inbox.messages == []


def test_topics_of_interest_skip_readers_whose_topics_are_not_in_the_issue(site: Site, smtp: SmtpServer) -> None:
    write_readers(site.recipients, [("a@example.org", "A", "rgpd"), ("b@example.org", "B", "media_partnership"),
                                    ("c@example.org", "C", "")])
    site.configure(smtp.port)
    result = send(site)
    assert result.code == 0, result.err
    assert "2 sent, 1 skipped (0 already sent, 0 suppressed, 1 not interested)" in result.out
    assert sorted(smtp.inbox.by_recipient()) == ["a@example.org", "c@example.org"]
    assert wants_issue(Recipient("x@example.org"), set())
    assert not wants_issue(Recipient("x@example.org", topics=("ai_act",)), {"rgpd"})


# ---------------------------------------------------------------- refusals and retries


def test_permanent_refusal_is_recorded_suppressed_and_never_retried(site: Site, smtp: SmtpServer) -> None:
    refused = READERS[1][0]
    smtp.inbox.permanent.add(refused)
    site.configure(smtp.port)
    result = send(site)
    assert result.code == 0, "a bounce is an outcome, not an unfinished send"
    assert "2 sent" in result.out and "1 failed (1 permanent, 0 temporary)" in result.out
    assert f"warning: {refused}: failed-permanent: 550 5.1.1" in result.err
    assert smtp.inbox.rcpt_attempts[refused] == 1
    record = site.deliveries()[refused]
    assert record.status == "failed-permanent" and record.reply.startswith("550 5.1.1") and record.attempts == 1
    assert site.suppressions()[refused].reason == "bounced"

    again = send(site)
    assert "0 sent, 3 skipped (2 already sent, 1 suppressed" in again.out
    assert smtp.inbox.rcpt_attempts[refused] == 1
    listing = run("subscribers", *site.args("list"))
    assert f"{refused}" in listing.out and "suppressed (bounced)" in listing.out


def test_temporary_refusal_is_retried_with_backoff_then_delivered_or_recorded(site: Site, smtp: SmtpServer) -> None:
    busy, stuck = READERS[0][0], READERS[2][0]
    smtp.inbox.temporary = {busy: 2, stuck: 100}
    site.configure(smtp.port, max_retries=2, retry_delay=0.01)
    result = send(site)
    assert result.code == 1, "a reader still to be reached means the send is not complete"
    assert "2 sent" in result.out and "1 failed (0 permanent, 1 temporary)" in result.out
    assert smtp.inbox.rcpt_attempts[busy] == 3 and smtp.inbox.rcpt_attempts[stuck] == 3
    records = site.deliveries()
    assert records[busy].status == "sent" and records[busy].attempts == 3
    assert records[stuck].status == "failed-temporary" and records[stuck].reply.startswith("451 4.2.0")
    assert stuck not in site.suppressions()

    smtp.inbox.temporary[stuck] = 0  # the mailbox is back
    resumed = send(site)
    assert resumed.code == 0, resumed.err
    assert "1 sent, 2 skipped (2 already sent" in resumed.out
    assert smtp.inbox.by_recipient() == Counter({r[0]: 1 for r in READERS[:3]})


def test_server_gone_stops_the_send_and_a_resume_finishes_it(site: Site, smtp: SmtpServer) -> None:
    write_readers(site.recipients, READERS)
    dead_port = free_port()  # nobody listens there
    site.configure(dead_port, max_retries=1, retry_delay=0.01)
    result = send(site)
    assert result.code == 1
    assert "0 sent" in result.out and "stopped: cannot connect to 127.0.0.1" in result.out
    assert [r.status for r in site.deliveries().values()] == ["failed-temporary"]

    site.configure(smtp.port)
    resumed = send(site)
    assert resumed.code == 0, resumed.err
    assert smtp.inbox.by_recipient() == Counter({r[0]: 1 for r in READERS})


# ---------------------------------------------------------------- interrupted sends


def _kill_at(site: Site, smtp: SmtpServer, message: int) -> None:
    """A real `pipeline send` SIGKILLed while the server holds its reply to the `message`-th message
    it received: that delivery is left uncertain (handed over, no reply recorded)."""
    smtp.inbox.hold_at = message
    smtp.inbox.reached.clear()
    smtp.inbox.release.clear()
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "send", *site.args("--date", DATE)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert smtp.inbox.reached.wait(60), f"the send never reached message {message}"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        smtp.inbox.release.set()
    assert process.returncode == -signal.SIGKILL
    smtp.inbox.hold_at = None


def test_send_killed_midway_resumes_and_every_reader_has_exactly_one_message(site: Site, smtp: SmtpServer) -> None:
    write_readers(site.recipients, READERS)
    site.configure(smtp.port)
    _kill_at(site, smtp, 3)  # the server takes message 3, then holds its reply: the process is killed there
    records = site.deliveries()
    assert sorted(r.status for r in records.values()) == ["sending", "sent", "sent"]
    held = next(r for r in records.values() if r.status == "sending")
    assert held.handed_over is not None
    assert len(smtp.inbox.messages) == 3

    smtp.inbox.hold_at = None
    resumed = send(site)
    # The third reader has the message, but the store cannot know it: reported, never resent.
    assert resumed.code == 1
    assert "3 sent, 2 skipped (2 already sent" in resumed.out and "1 uncertain" in resumed.out
    assert f"warning: {held.email}: may already have it (Message-ID {held.message_id}); not resent" in resumed.err
    assert smtp.inbox.by_recipient() == Counter({r[0]: 1 for r in READERS})
    assert send(site).code == 1  # still reported, still not resent
    assert smtp.inbox.by_recipient() == Counter({r[0]: 1 for r in READERS})


def test_a_crash_before_the_hand_over_is_resent_and_an_uncertain_one_only_on_request(site: Site,
                                                                                     smtp: SmtpServer) -> None:
    site.configure(smtp.port)
    before, after = READERS[0][0], READERS[1][0]
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    with open_store(StoreTarget(site.db)) as store:  # what two crashed sends leave behind
        store.begin_delivery(dt_date(DATE), before, "<crashed-before@techmatin.example.org>", now)
        store.begin_delivery(dt_date(DATE), after, "<crashed-after@techmatin.example.org>", now)
        store.mark_handed_over(dt_date(DATE), after, now)
    result = send(site)
    assert result.code == 1 and "2 sent" in result.out and "1 uncertain" in result.out
    assert smtp.inbox.by_recipient() == Counter({before: 1, READERS[2][0]: 1})
    resent = next(m for m in smtp.inbox.messages if m.rcpt_tos == [before]).parsed()
    assert str(resent["Message-ID"]) == "<crashed-before@techmatin.example.org>", "a retry is the same message"

    forced = send(site, "--resend-uncertain")
    assert forced.code == 0 and "1 sent" in forced.out
    assert smtp.inbox.by_recipient() == Counter({r[0]: 1 for r in READERS[:3]})
    assert site.deliveries()[after].status == "sent"


def test_an_uncertain_delivery_is_settled_by_the_operators_finding(site: Site, smtp: SmtpServer) -> None:
    """Issue 18, point 7: after a kill between the end of the data and the reply, `send` exited 1
    for ever, and --resend-uncertain sent a duplicate when the message had arrived."""
    write_readers(site.recipients, READERS[:4])
    site.configure(smtp.port)
    _kill_at(site, smtp, 2)  # reader 2: the server has the message (its log would show it)
    _kill_at(site, smtp, 3)  # the resumed send: reader 3's message, which the server then loses
    lost = smtp.inbox.messages.pop()
    records = site.deliveries()
    uncertain = [r for r in records.values() if r.status == "sending" and r.handed_over]
    arrived = next(r for r in uncertain if r.email == smtp.inbox.messages[1].rcpt_tos[0])
    vanished = next(r for r in uncertain if r.email == lost.rcpt_tos[0])
    assert len(uncertain) == 2 and len(smtp.inbox.messages) == 2

    stuck = send(site)  # mails the fourth reader; the two uncertain ones are left, exit 1 as before
    assert stuck.code == 1 and "1 sent" in stuck.out and "2 uncertain" in stuck.out
    records = site.deliveries()
    assert (f"--confirm-delivered {arrived.message_id.strip('<>')}` if it is there, `--confirm-lost "
            f"{arrived.message_id.strip('<>')}` (mailed again) if not") in stuck.err

    # One bad Message-ID: one line, exit 2, nothing recorded, nothing sent.
    for extra, problem in [
        (["--confirm-delivered", arrived.message_id, "--confirm-lost", "<nowhere@techmatin.example.org>"],
         f"no delivery of {DATE} has Message-ID <nowhere@techmatin.example.org>"),
        (["--confirm-delivered", records[READERS[0][0]].message_id],
         f"(to {READERS[0][0]}, {DATE}) is not an uncertain delivery: it is sent"),
        (["--confirm-delivered", arrived.message_id, "--confirm-lost", arrived.message_id.strip("<>")],
         "is given both as delivered and as lost"),
        (["--confirm-delivered", arrived.message_id, "--dry-run"], "--dry-run records nothing"),
    ]:
        refused = send(site, *extra)
        assert refused.code == 2 and problem in refused.err, refused.err
        assert len(refused.err.strip().splitlines()) == 1
    assert site.deliveries() == records and len(smtp.inbox.messages) == 3

    # The operator found the first in the server's log, not the second (brackets optional).
    settled = send(site, "--confirm-delivered", arrived.message_id, "--confirm-lost", vanished.message_id.strip("<>"))
    assert settled.code == 0, settled.err
    assert "1 sent" in settled.out and "0 uncertain" in settled.out
    assert "settled by the operator: 1 delivered (not sent again), 1 lost (1 sent again)" in settled.out
    assert smtp.inbox.by_recipient() == Counter({r[0]: 1 for r in READERS[:4]}), "each reader exactly once"
    resent = next(m for m in smtp.inbox.messages if m.rcpt_tos == [vanished.email]).parsed()
    assert str(resent["Message-ID"]) == vanished.message_id, "the lost message, sent again as it was"
    after = site.deliveries()
    assert (after[arrived.email].status, after[arrived.email].settled) == ("sent", "delivered")
    assert (after[vanished.email].status, after[vanished.email].settled) == ("sent", "lost")
    assert all(r.status == "sent" for r in after.values())

    again = send(site)
    assert again.code == 0 and "0 sent, 4 skipped (4 already sent" in again.out and "settled" not in again.out
    assert len(smtp.inbox.messages) == 4


def test_a_second_send_on_the_same_database_is_refused_while_one_runs(site: Site, smtp: SmtpServer) -> None:
    site.configure(smtp.port)
    smtp.inbox.hold_at = 1
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "send", *site.args("--date", DATE)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert smtp.inbox.reached.wait(60)
        second = send(site)
        assert second.code == 2 and "another `pipeline send` on this database is already running" in second.err
    finally:
        smtp.inbox.release.set()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert smtp.inbox.by_recipient() == Counter({r[0]: 1 for r in READERS[:3]})


# ---------------------------------------------------------------- credentials


def test_credentials_come_from_the_environment_and_never_leak(site: Site) -> None:
    user, password = "tm-sender-4242", "S3cret-Pa55-do-not-print-9f8e"
    server = start_server(auth=(user.encode(), password.encode()))
    try:
        site.configure(server.port)
        env = {**os.environ, "TECH_MATIN_SMTP_USER": user, "TECH_MATIN_SMTP_PASSWORD": password + "-wrong",
               "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "pipeline", "send", *site.args("--date", DATE)]
        bad = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=60)
        assert bad.returncode == 2
        assert b"refused the credentials of $TECH_MATIN_SMTP_USER / $TECH_MATIN_SMTP_PASSWORD" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
        assert server.inbox.messages == []

        env["TECH_MATIN_SMTP_PASSWORD"] = password
        good = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=60)
        assert good.returncode == 0, good.stderr.decode()
        assert server.inbox.logins.count((user.encode(), password.encode())) == 1, "one login for the whole send"
        assert len(server.inbox.messages) == 3

        leaks = [good.stdout, good.stderr, bad.stdout, bad.stderr]
        leaks += [p.read_bytes() for p in site.root.rglob("*") if p.is_file() and "sqlite3" in p.name]
        leaks += [message.raw for message in server.inbox.messages]
        for blob in leaks:
            for secret in (user.encode(), password.encode()):
                assert secret not in blob
        assert user not in repr(Credentials(user, password)) and password not in repr(Credentials(user, password))
    finally:
        server.stop()


def test_half_the_credentials_or_credentials_in_the_file_are_errors(site: Site, smtp: SmtpServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    site.configure(smtp.port)
    monkeypatch.setenv("TECH_MATIN_SMTP_USER", "someone")
    result = send(site)
    assert result.code == 2 and "environment variable TECH_MATIN_SMTP_PASSWORD is not set" in result.err
    monkeypatch.delenv("TECH_MATIN_SMTP_USER")

    site.configure(smtp.port, password="hunter2")
    result = send(site)
    assert result.code == 2
    assert "delivery.password: credentials are never read from sources.yaml" in result.err
    assert "hunter2" not in result.err
    assert smtp.inbox.messages == []


# ---------------------------------------------------------------- dry run


def test_dry_run_writes_one_eml_per_reader_and_records_nothing(site: Site) -> None:
    write_readers(site.recipients, READERS)
    site.configure(free_port())  # no server: a dry run must not connect
    outbox = site.root / "out-box"
    result = send(site, "--dry-run", "--outbox", str(outbox))
    assert result.code == 0, result.err
    assert f"6 message(s) written to {outbox / DATE}" in result.out
    files = sorted((outbox / DATE).glob("*.eml"))
    assert len(files) == 6
    for path, (email, _, _) in zip(files, READERS, strict=True):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert parseaddr(str(message["To"]))[1] == email
        assert message.get_body(("html",)) is not None and message.get_body(("plain",)) is not None
    assert site.deliveries() == {}

    write_readers(site.recipients, READERS[:2])  # a reader left: their old message goes too
    assert send(site, "--dry-run", "--outbox", str(outbox)).code == 0
    assert len(list((outbox / DATE).glob("*.eml"))) == 2

    default = send(site, "--dry-run")
    assert default.code == 0 and len(list((site.root / "outbox" / DATE).glob("*.eml"))) == 2


def test_rate_limit_spaces_messages(site: Site, smtp: SmtpServer) -> None:
    write_readers(site.recipients, READERS[:4])
    site.configure(smtp.port, rate=20)
    started = time.monotonic()
    assert send(site).code == 0
    # 4 messages at 20 per second: at least 3 intervals of 50 ms (a lower bound cannot be flaky).
    assert time.monotonic() - started >= 0.15
    assert len(smtp.inbox.messages) == 4


# ---------------------------------------------------------------- recipients and subscribers


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("email,name\njeanne@example.org,Jeanne\nnot-an-address,X\n", "recipients.csv:3: email: bad address "
         "'not-an-address': missing @"),
        ("email,name\njeanne@example.org,J\nJeanne@Example.org,J2\n", "recipients.csv:3: email: duplicate address "
         "'Jeanne@Example.org' (first at line 2)"),
        ("email,name\nx@localhost,X\n", "recipients.csv:2: email: bad address 'x@localhost': domain 'localhost' "
         "has no dot"),
        ("email,name,topics\nx@example.org,X,cookies\n", "recipients.csv:2: topics: unknown topic 'cookies'"),
        ("mail,name\nx@example.org,X\n", "recipients.csv:1: the first line must be the header email,name,topics"),
    ],
)
def test_bad_recipients_file_is_one_clear_line(site: Site, smtp: SmtpServer, content: str, message: str) -> None:
    site.recipients.write_text(content, encoding="utf-8")
    site.configure(smtp.port)
    result = send(site)
    assert result.code == 2
    assert result.err.startswith("pipeline: error: ") and message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert smtp.inbox.messages == []


def test_yaml_recipients_file(tmp_path: Path) -> None:
    path = tmp_path / "readers.yaml"
    path.write_text("- email: jeanne@example.org\n  name: Jeanne\n  topics: [rgpd]\n- idriss@example.net\n"
                    "- email: bad@\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"readers.yaml:5: email: bad address 'bad@': nothing after the @"):
        load_recipients(path)
    path.write_text("- email: jeanne@example.org\n  name: Jeanne\n  topics: [rgpd]\n- idriss@example.net\n",
                    encoding="utf-8")
    assert load_recipients(path, ["rgpd"]) == [Recipient("jeanne@example.org", "Jeanne", ("rgpd",), 1),
                                               Recipient("idriss@example.net", "", (), 4)]
    add_recipient(path, "lea@example.fr", name="Léa", topics=["rgpd"], known_topics=["rgpd"])
    assert [r.email for r in load_recipients(path)] == ["jeanne@example.org", "idriss@example.net", "lea@example.fr"]


def test_subscribers_add_remove_list(site: Site, smtp: SmtpServer) -> None:
    site.configure(smtp.port)
    added = run("subscribers", *site.args("add", "nouveau@example.org", "--name", "Zoé Nouveau", "--interests",
                                          "rgpd,ai_act"))
    assert added.code == 0, added.err
    readers = load_recipients(site.recipients)
    assert readers[-1] == Recipient("nouveau@example.org", "Zoé Nouveau", ("rgpd", "ai_act"), 5)
    assert run("subscribers", *site.args("add", "NOUVEAU@example.org")).code == 2
    assert "bad address 'x@y': domain 'y' has no dot" in run("subscribers", *site.args("add", "x@y")).err
    assert "unknown topic 'sport'" in run("subscribers", *site.args("add", "s@example.org", "--interests", "sport")).err

    removed = run("subscribers", *site.args("remove", READERS[0][0]))
    assert removed.code == 0 and "the address is suppressed" in removed.out
    assert READERS[0][0] not in [r.email for r in load_recipients(site.recipients)]
    assert site.suppressions()[READERS[0][0]].reason == "unsubscribed"
    assert not [p for p in site.root.iterdir() if p.name.endswith(".tmp")], "no temporary file left behind"

    listing = run("subscribers", *site.args("list"))
    assert "nouveau@example.org" in listing.out and "rgpd ai_act" in listing.out
    assert f"{READERS[0][0]}" in listing.out and "suppressed (unsubscribed)" in listing.out
    assert "3 reader(s)" in listing.err

    # Still in the file (re-added by hand) but suppressed: never mailed; `add` lifts the suppression.
    write_readers(site.recipients, READERS[:3])
    assert READERS[0][0] not in send(site).out and READERS[0][0] not in smtp.inbox.by_recipient()
    assert run("subscribers", *site.args("remove", READERS[0][0])).code == 0
    again = run("subscribers", *site.args("add", READERS[0][0]))
    assert again.code == 0 and "will receive issues again" in again.err
    assert send(site).code == 0
    assert smtp.inbox.by_recipient()[READERS[0][0]] == 1


INJECTED_NAMES = [
    "Mallory\r\nBcc: evil@z.org",  # issue 16, point 3: accepted, then every later send died at that reader
    "Mallory\nBcc: evil@z.org",
    "Mallory\rBcc: evil@z.org",
    "Mallory\x85Bcc: evil@z.org",  # NEL, U+2028: line breaks to some readers of the file or the mail
    "Mallory\u2028Bcc: evil@z.org",
    "Mallory\x00",
    "Pay\u202epal",  # a bidi override disguises what a name says
    "=?utf-8?q?=0D=0ABcc:_evil@z.org?=",  # an encoded word: the mail library decodes it into a raw CR LF
]


@pytest.mark.parametrize("name", INJECTED_NAMES)
def test_subscribers_add_refuses_a_name_that_could_break_a_header(site: Site, smtp: SmtpServer, name: str) -> None:
    site.configure(smtp.port)
    before = site.recipients.read_bytes()
    result = run("subscribers", *site.args("add", "mallory@example.org", "--name", name))
    assert result.code == 2
    assert result.err.startswith("pipeline: error: bad name ") and len(result.err.strip().splitlines()) == 1
    assert "contains" in result.err and "\r" not in result.err.strip() and "\n" not in result.err.strip()
    assert site.recipients.read_bytes() == before, "nothing written"


@pytest.mark.parametrize("address", ["mallory@example.org\r\nBcc: evil@z.org", "mallory@example.org\nBcc: x@z.org",
                                     "mallory@exa\x00mple.org", "mal\u2028lory@example.org", "<evil@z.org>"])
def test_subscribers_add_refuses_an_address_that_could_break_a_header(site: Site, smtp: SmtpServer,
                                                                     address: str) -> None:
    site.configure(smtp.port)
    before = site.recipients.read_bytes()
    result = run("subscribers", *site.args("add", address))
    assert result.code == 2 and result.err.startswith("pipeline: error: bad address ")
    assert len(result.err.strip().splitlines()) == 1
    assert site.recipients.read_bytes() == before


@pytest.mark.parametrize("name", INJECTED_NAMES)
def test_a_recipients_file_with_such_a_name_is_refused_naming_its_line(site: Site, smtp: SmtpServer,
                                                                      name: str) -> None:
    site.configure(smtp.port)
    quoted = '"' + name.replace('"', '""') + '"'
    site.recipients.write_text(f"email,name\njeanne@example.org,Jeanne\nmallory@example.org,{quoted}\n"
                               "camille@example.com,Camille\n", encoding="utf-8", newline="")
    result = send(site)
    assert result.code == 2
    assert "recipients.csv:3: name: bad name " in result.err and len(result.err.strip().splitlines()) == 1
    assert smtp.inbox.messages == [] and site.deliveries() == {}, "nothing sent before the file is right"

    yaml_file = site.root / "readers.yaml"
    # Written escaped ("\x85" in double quotes): raw, YAML itself folds a line break into a space.
    yaml_file.write_text(yaml.safe_dump([{"email": "jeanne@example.org"}, {"email": "mallory@example.org",
                                                                           "name": name}]), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"readers.yaml:\d+: name: bad name ") as refused:
        load_recipients(yaml_file)
    assert "\n" not in str(refused.value) and "\r" not in str(refused.value)


def test_a_message_that_cannot_be_built_fails_that_reader_alone(site: Site, smtp: SmtpServer) -> None:
    """A reader the file check missed (here put in by hand) fails alone; the others are mailed,
    the send says who and why, and the send after a fix mails that reader."""
    import datetime as dt

    from pipeline.app import Pipeline
    from pipeline.deliver import prepare_mailing, send_mailing

    site.configure(smtp.port)
    bad = Recipient("mallory@example.org", "=?utf-8?q?=0D=0ABcc:_evil@z.org?=", (), 3)
    with Pipeline.from_files(site.config, TOPICS, db=site.db) as app:
        issue = app.stored_issue(dt_date(DATE))
        mailing = prepare_mailing(issue, app.delivery_settings(), [t.id for t in app.topic_info],
                                  {"TECH_MATIN_UNSUBSCRIBE_SECRET": SECRET}, lambda: app.render_for_email(issue))
        assert mailing is not None
        readers = (*mailing.recipients[:1], bad, *mailing.recipients[1:])
        events: list[Any] = []
        report = send_mailing(app.store, dataclasses.replace(mailing, recipients=readers), None,
                              now=lambda: dt.datetime.now(dt.UTC), on_event=events.append)
    assert report.sent == 3 and report.failed_temporary == 1 and not report.complete
    assert [(e.email, e.outcome) for e in events if e.outcome != "sent"] == [("mallory@example.org",
                                                                             "failed-temporary")]
    assert "message not built: bad name '=?utf-8?q?=0D=0ABcc:_evil@z.org?=': contains" in events[1].detail
    assert smtp.inbox.by_recipient() == Counter({r[0]: 1 for r in READERS[:3]})
    assert all(b"evil@z.org" not in m.raw and b"Bcc" not in m.raw for m in smtp.inbox.messages)
    assert site.deliveries()["mallory@example.org"].status == "failed-temporary"

    write_readers(site.recipients, [*READERS[:3], ("mallory@example.org", "Mallory", "")])  # the fix
    again = send(site)
    assert again.code == 0 and "1 sent, 3 skipped" in again.out
    assert smtp.inbox.by_recipient()["mallory@example.org"] == 1


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"security": "ssl"}, "delivery.security: must be one of starttls, tls, none, got 'ssl'"),
        ({"from_address": "lettre"}, "delivery.from_address: bad address 'lettre': missing @"),
        ({"unsubscribe_url": "http://x.example/u?e={email}"}, "delivery.unsubscribe_url: must be an https URL"),
        ({"unsubscribe_url": "https://x.example/u?e={mail}"}, "unknown placeholder {mail}"),
        ({"unsubscribe_url": "https://x.example/u?e={email}"},
         "delivery.unsubscribe_url: must contain {token} (the reader's signed unsubscribe token)"),
        ({"smtp_port": 70000}, "delivery.smtp_port: must be a port number 1-65535"),
        ({"rate": "fast"}, "delivery.rate: must be float, got str"),
        ({"suppress_bounces": "yes"}, "delivery.suppress_bounces: must be true or false"),
        ({"password_env": "my password"}, "delivery.password_env: must be the NAME of an environment variable"),
        ({"recipients": "readers.txt"}, "delivery.recipients: must be a .csv or .yaml file"),
        ({"smtp_user": "me"}, "delivery.smtp_user: credentials are never read from sources.yaml"),
        ({"from_name": "Tech Matin\r\nBcc: evil@z.org"}, "delivery.from_name: bad name 'Tech Matin\\r\\nBcc: "),
        ({"from_name": "=?utf-8?q?=0A?="}, "delivery.from_name: bad name '=?utf-8?q?=0A?=': contains '=?'"),
    ],
)
def test_bad_delivery_settings_name_file_line_and_key(site: Site, override: dict[str, Any], message: str) -> None:
    config = site.configure(2525, **override)
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert str(error.value).startswith(f"{config}:") and message in str(error.value)


def test_delivery_settings_defaults_and_paths(site: Site) -> None:
    config = load_config(site.configure(2525, security="tls", smtp_port=None))
    settings = config.delivery
    assert settings is not None and settings.port == 465 and settings.recipients == site.recipients
    assert DeliverySettings("a@example.org", "https://x.example/u").port == 587
    no_delivery = load_config(site.configure(2525))
    assert no_delivery.delivery is not None
    site.config.write_text("feeds:\n  - name: A\n    url: feed.xml\n", encoding="utf-8")
    assert load_config(site.config).delivery is None
    result = run("send", *site.args("--date", DATE))
    assert result.code == 2 and "no `delivery:` section" in result.err


def test_readme_documents_every_delivery_key() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("### `delivery`")
    table = readme[start : readme.index("\n## ", start)]
    missing = [f.name for f in dataclasses.fields(DeliverySettings) if f"| `{f.name}` |" not in table]
    assert not missing, f"undocumented delivery keys: {missing}"


def test_readme_gives_a_minimal_delivery_block_that_sends_and_names_every_variable(site: Site) -> None:
    import re

    from pipeline.store.factory import DATABASE_URL_ENV

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Email delivery")
    section = readme[start: readme.index("\n## ", start + 1)]
    block = re.search(r"```yaml\n(delivery:\n.*?)```", section, re.S)
    assert block, "the email section has no `delivery:` block to paste"
    defaults = DeliverySettings(from_address="x@example.org", unsubscribe_url="https://x.example/{token}")
    variables = [defaults.unsubscribe_secret_env, defaults.username_env, defaults.password_env, DATABASE_URL_ENV]
    missing = [name for name in variables if f"`{name}`" not in section]
    assert not missing, f"the email section does not name {missing}"
    unexported = [name for name in variables[:3] if not re.search(rf"^export .*\b{name}=", section, re.M)]
    assert not unexported, f"the email section's commands do not export {unexported}"

    pasted = yaml.safe_load(block.group(1))
    site.config.write_text(yaml.safe_dump({
        "newsletter": {"name": "Tech Matin", "base_url": BASE_URL}, "storage": {"db": site.db.name},
        "feeds": [{"id": "veille", "name": "Veille Test", "url": "feed.xml"}], **pasted}), encoding="utf-8")
    settings = load_config(site.config).delivery
    assert settings is not None and settings.recipients == site.recipients  # recipients.csv beside the config
    written = send(site, "--dry-run")  # the block as pasted, the secret of the environment: every message built
    assert written.code == 0 and "3 message(s) written" in written.out, written.err


def test_unsubscribe_token_needs_the_secret(site: Site, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TECH_MATIN_UNSUBSCRIBE_SECRET")
    site.configure(smtp.port)
    result = send(site)
    assert result.code == 2 and "TECH_MATIN_UNSUBSCRIBE_SECRET is not set" in result.err
    assert smtp.inbox.messages == []


@pytest.mark.parametrize("secret", ["k", "x" * 31, "é" * 15])
def test_a_short_unsubscribe_secret_is_refused_before_any_send(site: Site, smtp: SmtpServer,
                                                               monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("TECH_MATIN_UNSUBSCRIBE_SECRET", secret)
    site.configure(smtp.port)
    result = send(site)
    assert result.code == 2
    assert (f"environment variable TECH_MATIN_UNSUBSCRIBE_SECRET holds {len(secret.encode())} bytes; the "
            "unsubscribe secret needs at least 32") in result.err
    assert len(result.err.strip().splitlines()) == 1 and smtp.inbox.messages == []


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed; cannot make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_starttls_and_implicit_tls_with_a_private_ca(site: Site, certificate: tuple[Path, Path],
                                                     security: str) -> None:
    import ssl

    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    port = free_port()
    if security == "starttls":
        controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    else:
        controller = Controller(inbox, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    try:
        site.configure(port, security=security)  # the system CAs do not know this certificate
        untrusted = send(site)
        assert untrusted.code == 2 and "TLS with 127.0.0.1" in untrusted.err and "CERTIFICATE_VERIFY_FAILED" in \
            untrusted.err
        assert inbox.messages == []

        shutil.copy(cert, site.root / "relay-ca.pem")
        site.configure(port, security=security, tls_ca_file="relay-ca.pem")
        trusted = send(site)
        assert trusted.code == 0, trusted.err
        assert inbox.by_recipient() == Counter({r[0]: 1 for r in READERS[:3]})
    finally:
        controller.stop()
