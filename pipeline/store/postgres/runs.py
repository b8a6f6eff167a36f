"""The history of runs, rebuilds and workers' builds: the `runs` table."""

from __future__ import annotations

import datetime as dt

from pipeline.store.codec import outcome_to_json, to_utc
from pipeline.store.postgres.base import PostgresBase
from pipeline.store.records import RunOutcome, RunRecord


class PostgresRuns(PostgresBase):
    def start_run(self, kind: str, issue_date: dt.date | None, at: dt.datetime) -> int:
        with self._transaction() as db:
            found = db.execute("INSERT INTO runs (kind, issue_date, started, status) VALUES (%s, %s, %s, 'running')"
                               " RETURNING id", (kind, issue_date, to_utc(at))).fetchone()
        return int(found["id"]) if found else 0

    def finish_run(self, run_id: int, status: str, summary: str, outcome: RunOutcome | None,
                   at: dt.datetime) -> None:
        with self._transaction() as db:
            db.execute("UPDATE runs SET finished = %s, status = %s, summary = %s, report = %s WHERE id = %s",
                       (to_utc(at), status, summary, outcome_to_json(outcome), run_id))

    def runs(self, limit: int = 20) -> list[RunRecord]:
        return [
            RunRecord(id=r["id"], kind=r["kind"], issue_date=r["issue_date"], started=r["started"],
                      finished=r["finished"], status=r["status"], summary=r["summary"])
            for r in self._rows("SELECT * FROM runs ORDER BY id DESC LIMIT %s", (limit,))
        ]

    def run_starts(self, kind: str, issue_date: dt.date) -> list[dt.datetime]:
        rows = self._rows("SELECT started FROM runs WHERE kind = %s AND issue_date = %s ORDER BY id",
                          (kind, issue_date))
        return [row["started"] for row in rows]

    def failed_runs(self, kind: str, issue_date: dt.date) -> list[dt.datetime]:
        rows = self._rows("SELECT COALESCE(finished, started) AS at FROM runs"
                          " WHERE kind = %s AND issue_date = %s AND status = 'failed' ORDER BY id", (kind, issue_date))
        return [row["at"] for row in rows]
