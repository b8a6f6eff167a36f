"""Email deliveries (`deliveries`, one row per issue and recipient) and the `suppressions` list.

A delivery row is written BEFORE its message is sent, and `handed_over` just before the end of
the message data goes to the SMTP server (see records.DeliveryRecord). No foreign key to
issues: rebuilding an issue replaces its row, never its deliveries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pipeline.errors import PipelineError
from pipeline.store.codec import to_utc
from pipeline.store.postgres.base import PostgresBase, Row
from pipeline.store.records import DeliveryRecord, DeliveryStatus, Suppression, settle_problem

_DELIVERY_COLUMNS = (
    "issue_date, email, status, attempts, message_id, first_attempt, updated, handed_over, reply, batch, settled,"
    " settled_at"
)


def _delivery(row: Row) -> DeliveryRecord:
    return DeliveryRecord(
        issue_date=row["issue_date"], email=row["email"], status=DeliveryStatus(row["status"]),
        attempts=row["attempts"], message_id=row["message_id"], first_attempt=row["first_attempt"],
        updated=row["updated"], handed_over=row["handed_over"], reply=row["reply"], batch=row["batch"],
        settled=row["settled"], settled_at=row["settled_at"],
    )


def _suppression(row: Row) -> Suppression:
    return Suppression(email=row["email"], reason=row["reason"], detail=row["detail"], created=row["created"])


class PostgresDeliveries(PostgresBase):
    def deliveries(self, date: dt.date) -> dict[str, DeliveryRecord]:
        rows = self._rows(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE issue_date = %s ORDER BY email",
                          (date,))
        return {row["email"]: _delivery(row) for row in rows}

    def delivery_count(self, date: dt.date) -> int:
        return self._count("SELECT count(*) FROM deliveries WHERE issue_date = %s", (date,))

    def mailed_dates(self, dates: Sequence[dt.date]) -> set[dt.date]:
        rows = self._rows("SELECT d FROM unnest(%s::date[]) AS d"
                          " WHERE EXISTS (SELECT 1 FROM deliveries WHERE issue_date = d)", (sorted(set(dates)),))
        return {row["d"] for row in rows}

    def begin_delivery(self, date: dt.date, email: str, message_id: str, at: dt.datetime) -> DeliveryRecord:
        with self._transaction() as db:
            row = db.execute(
                "INSERT INTO deliveries AS d (issue_date, email, status, attempts, message_id, first_attempt,"
                " updated) VALUES (%s, %s, 'sending', 1, %s, %s, %s)"
                " ON CONFLICT (issue_date, email) DO UPDATE SET status = 'sending', attempts = d.attempts + 1,"
                " updated = excluded.updated, handed_over = NULL, reply = NULL"
                f" RETURNING {_DELIVERY_COLUMNS}",
                (date, email, message_id, to_utc(at), to_utc(at)),
            ).fetchone()
        assert row is not None  # INSERT … RETURNING always answers one row
        return _delivery(row)

    def mark_handed_over(self, date: dt.date, email: str, at: dt.datetime) -> None:
        with self._transaction() as db:
            db.execute("UPDATE deliveries SET handed_over = %s, updated = %s WHERE issue_date = %s AND email = %s",
                       (to_utc(at), to_utc(at), date, email))

    def finish_delivery(self, date: dt.date, email: str, status: DeliveryStatus, reply: str | None,
                        at: dt.datetime, suppress_reason: str | None = None) -> None:
        if status is DeliveryStatus.SENDING:
            raise ValueError("a delivery finishes as sent, failed-permanent or failed-temporary, not sending")
        with self._transaction() as db:
            db.execute("UPDATE deliveries SET status = %s, reply = %s, updated = %s"
                       " WHERE issue_date = %s AND email = %s", (str(status), reply, to_utc(at), date, email))
            if suppress_reason:
                db.execute("INSERT INTO suppressions (email, reason, detail, created) VALUES (%s,%s,%s,%s)"
                           " ON CONFLICT DO NOTHING", (email, suppress_reason, reply, to_utc(at)))

    def settle_deliveries(self, date: dt.date, findings: Sequence[tuple[str, bool]],
                          at: dt.datetime) -> list[DeliveryRecord]:
        settled: list[DeliveryRecord] = []
        with self._transaction() as db:  # a problem raised here rolls every finding back
            for message_id, delivered in findings:
                row = db.execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE issue_date = %s"
                                 " AND message_id = %s FOR UPDATE", (date, message_id)).fetchone()
                problem = settle_problem(date, message_id, _delivery(row) if row else None)
                if problem or row is None:
                    raise PipelineError(problem or message_id)
                status = DeliveryStatus.SENT if delivered else DeliveryStatus.FAILED_TEMPORARY
                updated = db.execute(
                    "UPDATE deliveries SET status = %s, settled = %s, settled_at = %s, updated = %s"
                    f" WHERE issue_date = %s AND email = %s RETURNING {_DELIVERY_COLUMNS}",
                    (str(status), "delivered" if delivered else "lost", to_utc(at), to_utc(at), date, row["email"]),
                ).fetchone()
                assert updated is not None  # the row was just read under FOR UPDATE
                settled.append(_delivery(updated))
        return settled

    def suppress(self, email: str, reason: str, detail: str | None, at: dt.datetime) -> bool:
        with self._transaction() as db:
            return db.execute("INSERT INTO suppressions (email, reason, detail, created) VALUES (%s,%s,%s,%s)"
                              " ON CONFLICT DO NOTHING", (email, reason, detail, to_utc(at))).rowcount == 1

    def unsuppress(self, email: str) -> Suppression | None:
        with self._transaction() as db:
            row = db.execute("DELETE FROM suppressions WHERE email = %s RETURNING *", (email,)).fetchone()
        return _suppression(row) if row else None

    def suppressions(self) -> dict[str, Suppression]:
        return {row["email"]: _suppression(row) for row in self._rows("SELECT * FROM suppressions ORDER BY email")}

    def queue_deliveries(self, date: dt.date, messages: Sequence[tuple[str, str]], at: dt.datetime) -> int:
        when = to_utc(at)
        with self._transaction() as db, db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO deliveries AS d (issue_date, email, status, attempts, message_id, first_attempt, updated)"
                " VALUES (%s, %s, 'queued', 0, %s, %s, %s) ON CONFLICT (issue_date, email) DO UPDATE"
                " SET status = 'queued', batch = NULL, updated = excluded.updated WHERE d.status = 'failed-temporary'",
                [(date, email, message_id, when, when) for email, message_id in messages],
            )
            found = cursor.execute("SELECT count(*) AS queued FROM deliveries WHERE issue_date = %s"
                                   " AND status = 'queued'", (date,)).fetchone()
        return int(found["queued"]) if found else 0

    def claim_deliveries(self, date: dt.date, batch: str, limit: int, at: dt.datetime) -> list[DeliveryRecord]:
        # SKIP LOCKED: batches claiming at the same moment each get other rows, none waits.
        with self._transaction() as db:
            rows = db.execute(
                "UPDATE deliveries SET status = 'sending', batch = %(batch)s, updated = %(at)s WHERE id IN ("
                " SELECT id FROM deliveries WHERE issue_date = %(date)s AND (status = 'queued'"
                "  OR (status = 'sending' AND batch = %(batch)s AND handed_over IS NULL))"
                " ORDER BY status = 'queued', id FOR UPDATE SKIP LOCKED LIMIT %(limit)s)"
                f" RETURNING {_DELIVERY_COLUMNS}",
                {"batch": batch, "at": to_utc(at), "date": date, "limit": limit},
            ).fetchall()
        return sorted((_delivery(row) for row in rows), key=lambda record: record.email)
