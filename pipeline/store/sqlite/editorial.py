"""Editors' decisions on draft issues and their approvals: the `editorial_decisions` and
`approvals` tables."""

from __future__ import annotations

import datetime as dt

from pipeline.models import Approval, EditorialDecision
from pipeline.store.codec import from_iso, to_iso
from pipeline.store.sqlite.base import SqliteBase


class SqliteEditorial(SqliteBase):
    def record_decision(self, decision: EditorialDecision) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO editorial_decisions (issue_date, action, item_id, editor, decided_at, section, text)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (decision.issue_date.isoformat(), decision.action, decision.item_id, decision.editor,
                 to_iso(decision.decided_at), decision.section, decision.text),
            )

    def decisions_for(self, date: dt.date) -> list[EditorialDecision]:
        rows = self._rows("SELECT * FROM editorial_decisions WHERE issue_date = ? ORDER BY id", (date.isoformat(),))
        return [
            EditorialDecision(issue_date=date, action=r["action"], item_id=r["item_id"], editor=r["editor"],
                              decided_at=from_iso(r["decided_at"]) or dt.datetime.min, section=r["section"],
                              text=r["text"])
            for r in rows
        ]

    def record_approval(self, approval: Approval) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO approvals (issue_date, editor, approved_at) VALUES (?, ?, ?)",
                       (approval.issue_date.isoformat(), approval.editor, to_iso(approval.approved_at)))

    def approval_of(self, date: dt.date) -> Approval | None:
        found = self._row("SELECT * FROM approvals WHERE issue_date = ? ORDER BY id DESC LIMIT 1",
                          (date.isoformat(),))
        if found is None:
            return None
        return Approval(issue_date=date, editor=found["editor"],
                        approved_at=from_iso(found["approved_at"]) or dt.datetime.min)
