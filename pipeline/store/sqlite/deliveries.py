"""Email deliveries (`deliveries`, one row per issue and recipient) and the `suppressions` list.

A delivery row is written BEFORE its message is sent, and `handed_over` just before the end of
the message data goes to the SMTP server (see records.DeliveryRecord). No foreign key to
issues: rebuilding an issue replaces its row, never its deliveries.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence

from pipeline.errors import PipelineError
from pipeline.store.codec import from_iso, to_iso
from pipeline.store.records import DeliveryRecord, DeliveryStatus, Suppression, settle_problem
from pipeline.store.sqlite.base import SqliteBase


def _delivery(row: sqlite3.Row) -> DeliveryRecord:
    return DeliveryRecord(
        issue_date=dt.date.fromisoformat(row["issue_date"]), email=row["email"], status=DeliveryStatus(row["status"]),
        attempts=row["attempts"], message_id=row["message_id"],
        first_attempt=dt.datetime.fromisoformat(row["first_attempt"]),
        updated=dt.datetime.fromisoformat(row["updated"]), handed_over=from_iso(row["handed_over"]),
        reply=row["reply"], batch=row["batch"], settled=row["settled"], settled_at=from_iso(row["settled_at"]),
    )


def _suppression(row: sqlite3.Row) -> Suppression:
    return Suppression(email=row["email"], reason=row["reason"], detail=row["detail"],
                       created=dt.datetime.fromisoformat(row["created"]))


class SqliteDeliveries(SqliteBase):
    def deliveries(self, date: dt.date) -> dict[str, DeliveryRecord]:
        rows = self._rows("SELECT * FROM deliveries WHERE issue_date = ? ORDER BY email", (date.isoformat(),))
        return {row["email"]: _delivery(row) for row in rows}

    def delivery_count(self, date: dt.date) -> int:
        return self._count("SELECT count(*) FROM deliveries WHERE issue_date = ?", (date.isoformat(),))

    def mailed_dates(self, dates: Sequence[dt.date]) -> set[dt.date]:
        return {date for date in set(dates)
                if self._row("SELECT 1 FROM deliveries WHERE issue_date = ? LIMIT 1", (date.isoformat(),))}

    def begin_delivery(self, date: dt.date, email: str, message_id: str, at: dt.datetime) -> DeliveryRecord:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO deliveries (issue_date, email, status, attempts, message_id, first_attempt, updated)"
                " VALUES (?, ?, 'sending', 1, ?, ?, ?)"
                " ON CONFLICT(issue_date, email) DO UPDATE SET status = 'sending', attempts = attempts + 1,"
                " updated = excluded.updated, handed_over = NULL, reply = NULL",
                (date.isoformat(), email, message_id, to_iso(at), to_iso(at)),
            )
            row = db.execute("SELECT * FROM deliveries WHERE issue_date = ? AND email = ?",
                             (date.isoformat(), email)).fetchone()
        return _delivery(row)

    def mark_handed_over(self, date: dt.date, email: str, at: dt.datetime) -> None:
        with self._transaction() as db:
            db.execute("UPDATE deliveries SET handed_over = ?, updated = ? WHERE issue_date = ? AND email = ?",
                       (to_iso(at), to_iso(at), date.isoformat(), email))

    def finish_delivery(self, date: dt.date, email: str, status: DeliveryStatus, reply: str | None,
                        at: dt.datetime, suppress_reason: str | None = None) -> None:
        if status is DeliveryStatus.SENDING:
            raise ValueError("a delivery finishes as sent, failed-permanent or failed-temporary, not sending")
        with self._transaction() as db:
            db.execute("UPDATE deliveries SET status = ?, reply = ?, updated = ? WHERE issue_date = ? AND email = ?",
                       (str(status), reply, to_iso(at), date.isoformat(), email))
            if suppress_reason:
                db.execute("INSERT OR IGNORE INTO suppressions (email, reason, detail, created) VALUES (?,?,?,?)",
                           (email, suppress_reason, reply, to_iso(at)))

    def settle_deliveries(self, date: dt.date, findings: Sequence[tuple[str, bool]],
                          at: dt.datetime) -> list[DeliveryRecord]:
        settled: list[DeliveryRecord] = []
        with self._transaction() as db:  # a problem raised here rolls every finding back
            for message_id, delivered in findings:
                row = db.execute("SELECT * FROM deliveries WHERE issue_date = ? AND message_id = ?",
                                 (date.isoformat(), message_id)).fetchone()
                problem = settle_problem(date, message_id, _delivery(row) if row else None)
                if problem:
                    raise PipelineError(problem)
                status = DeliveryStatus.SENT if delivered else DeliveryStatus.FAILED_TEMPORARY
                row = db.execute(
                    "UPDATE deliveries SET status = ?, settled = ?, settled_at = ?, updated = ?"
                    " WHERE issue_date = ? AND email = ? RETURNING *",
                    (str(status), "delivered" if delivered else "lost", to_iso(at), to_iso(at), date.isoformat(),
                     row["email"]),
                ).fetchone()
                settled.append(_delivery(row))
        return settled

    def suppress(self, email: str, reason: str, detail: str | None, at: dt.datetime) -> bool:
        with self._transaction() as db:
            return db.execute(
                "INSERT OR IGNORE INTO suppressions (email, reason, detail, created) VALUES (?,?,?,?)",
                (email, reason, detail, to_iso(at)),
            ).rowcount == 1

    def unsuppress(self, email: str) -> Suppression | None:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM suppressions WHERE email = ?", (email,)).fetchone()
            db.execute("DELETE FROM suppressions WHERE email = ?", (email,))
        return _suppression(row) if row else None

    def suppressions(self) -> dict[str, Suppression]:
        return {row["email"]: _suppression(row) for row in self._rows("SELECT * FROM suppressions ORDER BY email")}

    def queue_deliveries(self, date: dt.date, messages: Sequence[tuple[str, str]], at: dt.datetime) -> int:
        day, when = date.isoformat(), to_iso(at)
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO deliveries (issue_date, email, status, attempts, message_id, first_attempt, updated)"
                " VALUES (?, ?, 'queued', 0, ?, ?, ?) ON CONFLICT (issue_date, email) DO UPDATE"
                " SET status = 'queued', batch = NULL, updated = excluded.updated"
                " WHERE deliveries.status = 'failed-temporary'",
                [(day, email, message_id, when, when) for email, message_id in messages],
            )
            return int(db.execute("SELECT count(*) FROM deliveries WHERE issue_date = ? AND status = 'queued'",
                                  (day,)).fetchone()[0])

    def claim_deliveries(self, date: dt.date, batch: str, limit: int, at: dt.datetime) -> list[DeliveryRecord]:
        # BEGIN IMMEDIATE: one claim at a time holds the write lock, so no row is claimed twice.
        with self._transaction() as db:
            rows = db.execute(
                "UPDATE deliveries SET status = 'sending', batch = ?, updated = ? WHERE rowid IN ("
                " SELECT rowid FROM deliveries WHERE issue_date = ? AND (status = 'queued'"
                "  OR (status = 'sending' AND batch = ? AND handed_over IS NULL))"
                " ORDER BY status = 'queued', rowid LIMIT ?) RETURNING *",
                (batch, to_iso(at), date.isoformat(), batch, limit),
            ).fetchall()
        return sorted((_delivery(row) for row in rows), key=lambda record: record.email)
