"""Benchmark: `pipeline send` against naive ways of mailing the same issue, in one run.

An issue is built by the real pipeline from a local RSS file, then mailed to N readers
(default 300) through an aiosmtpd server on 127.0.0.1 (it keeps messages in memory):

  (1) Pipeline.send: one reused SMTP connection, every attempt recorded in the store before
      and after (three fsynced commits per reader), rate limit off;
  (2) naive: one new SMTP connection per message (smtplib.sendmail), no record at all;
  (3) the same reused connection as (1) without the store: what exactly-once bookkeeping costs.

Usage:  python benchmarks/deliver.py [--readers 300]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import smtplib
import socket
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without installing: the repository root holds the `pipeline` package.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402

from pipeline.app import Pipeline  # noqa: E402
from pipeline.cli import main  # noqa: E402
from pipeline.deliver import (  # noqa: E402
    SmtpTransport,
    build_message,
    load_recipients,
    new_message_id,
)

DATE = "2025-05-06"
FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Bench</title><link>https://news.example.org/</link><description>b</description>
<item><title>Meta AI : l'entraînement sur les données des Européens contesté</title>
<link>https://news.example.org/meta-ai</link><guid>m1</guid><pubDate>Mon, 05 May 2025 10:00:00 +0000</pubDate>
<description>Meta veut entraîner Meta AI et Llama sur les publications publiques des Européens.</description></item>
<item><title>La CNIL sanctionne une entreprise au titre du RGPD</title>
<link>https://news.example.org/cnil</link><guid>c1</guid><pubDate>Mon, 05 May 2025 12:00:00 +0000</pubDate>
<description>La CNIL inflige une amende pour manquement au RGPD.</description></item>
</channel></rss>
"""


class Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.count += 1
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, default=300)
    options = parser.parse_args()
    os.environ.setdefault("TECH_MATIN_UNSUBSCRIBE_SECRET", "benchmark-secret-of-at-least-32-bytes")
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory() as temp:
            root = Path(temp)
            (root / "feed.xml").write_text(FEED, encoding="utf-8")
            readers_csv = "".join(f"lecteur{i}@example.org,Lecteur {i},\n" for i in range(options.readers))
            (root / "recipients.csv").write_text("email,name,topics\n" + readers_csv, encoding="utf-8")
            config = root / "sources.yaml"
            config.write_text(yaml.safe_dump({
                "newsletter": {"base_url": "https://techmatin.example.org/"},
                "feeds": [{"id": "bench", "name": "Bench", "url": "feed.xml"}],
                "delivery": {"from_address": "lettre@techmatin.example.org", "smtp_host": "127.0.0.1",
                             "smtp_port": port, "security": "none", "rate": 0,
                             "unsubscribe_url": "https://techmatin.example.org/u?e={email}&t={token}"},
            }), encoding="utf-8")
            common = ["--config", str(config), "--topics", str(REPO / "topics.yaml"), "--db", str(root / "db.sqlite3")]
            if main(["run", *common, "--date", DATE, "--output", str(root / "out")], out=io.StringIO(),
                    err=io.StringIO()) != 0:
                raise SystemExit("could not build the benchmark issue")
            app = Pipeline.from_files(config, REPO / "topics.yaml", db=root / "db.sqlite3")
            date = dt.date.fromisoformat(DATE)
            settings = app.delivery_settings()

            started = time.perf_counter()
            report = app.send(date)
            ours = time.perf_counter() - started
            assert report.sent == options.readers and report.connections == 1, report

            issue = app.stored_issue(date)
            rendered = app.render_for_email(issue)
            app.close()
            readers = load_recipients(settings.recipients)
            now = dt.datetime.now(dt.UTC)
            payloads = [build_message(issue, rendered, settings, r, new_message_id(date, settings), now,
                                      "bench").as_bytes() for r in readers]

            started = time.perf_counter()
            for reader, payload in zip(readers, payloads, strict=True):
                with smtplib.SMTP("127.0.0.1", port, local_hostname="localhost", timeout=10) as smtp:
                    smtp.sendmail(settings.from_address, [reader.email], payload)
            naive = time.perf_counter() - started

            transport = SmtpTransport(settings, None)
            started = time.perf_counter()
            for reader, payload in zip(readers, payloads, strict=True):
                transport.send(settings.from_address, reader.email, payload, on_handover=lambda: None)
            transport.close()
            bare = time.perf_counter() - started
    finally:
        controller.stop()

    n = options.readers
    size = sum(len(p) for p in payloads) / n / 1024
    print(f"{n} readers, {size:.0f} KiB per message, aiosmtpd on 127.0.0.1")
    print(f"(1) pipeline send (reused connection, exactly-once records): {ours:6.2f} s  {n / ours:7.1f} msg/s")
    print(f"(2) naive, one connection per message, no records:          {naive:6.2f} s  {n / naive:7.1f} msg/s")
    print(f"(3) reused connection, no records:                          {bare:6.2f} s  {n / bare:7.1f} msg/s")
    print(f"connection reuse: {naive / bare:.1f}x faster than a connection per message (3 vs 2)")
    print(f"exactly-once bookkeeping + message building: {(ours - bare) / n * 1000:.2f} ms per reader (1 vs 3)")


if __name__ == "__main__":
    main_bench()
