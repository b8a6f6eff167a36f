"""The history of runs and rebuilds: the `runs` table."""

from __future__ import annotations

import datetime as dt

from pipeline.store.codec import from_iso, outcome_to_json, to_iso
from pipeline.store.records import RunOutcome, RunRecord
from pipeline.store.sqlite.base import SqliteBase


class SqliteRuns(SqliteBase):
    def start_run(self, kind: str, issue_date: dt.date | None, at: dt.datetime) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (kind, issue_date, started, status) VALUES (?, ?, ?, 'running')",
                (kind, issue_date.isoformat() if issue_date else None, to_iso(at)),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, summary: str, outcome: RunOutcome | None,
                   at: dt.datetime) -> None:
        with self._transaction() as db:
            db.execute("UPDATE runs SET finished = ?, status = ?, summary = ?, report = ? WHERE id = ?",
                       (to_iso(at), status, summary, outcome_to_json(outcome), run_id))

    def runs(self, limit: int = 20) -> list[RunRecord]:
        return [
            RunRecord(id=r["id"], kind=r["kind"],
                      issue_date=dt.date.fromisoformat(r["issue_date"]) if r["issue_date"] else None,
                      started=from_iso(r["started"]) or dt.datetime.min, finished=from_iso(r["finished"]),
                      status=r["status"], summary=r["summary"])
            for r in self._rows("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        ]

    def run_starts(self, kind: str, issue_date: dt.date) -> list[dt.datetime]:
        rows = self._rows("SELECT started FROM runs WHERE kind = ? AND issue_date = ? ORDER BY id",
                          (kind, issue_date.isoformat()))
        return [dt.datetime.fromisoformat(row[0]) for row in rows]

    def failed_runs(self, kind: str, issue_date: dt.date) -> list[dt.datetime]:
        rows = self._rows(
            "SELECT COALESCE(finished, started) FROM runs WHERE kind = ? AND issue_date = ? AND status = 'failed'"
            " ORDER BY id",
            (kind, issue_date.isoformat()),
        )
        return [dt.datetime.fromisoformat(row[0]) for row in rows]

