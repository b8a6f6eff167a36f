"""Editors' decisions on draft issues and their approvals: the `editorial_decisions` and
`approvals` tables."""

from __future__ import annotations

import datetime as dt

from pipeline.models import Approval, EditorialDecision
from pipeline.store.codec import to_utc
from pipeline.store.postgres.base import PostgresBase


class PostgresEditorial(PostgresBase):
    def record_decision(self, decision: EditorialDecision) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO editorial_decisions (issue_date, action, item_id, editor, decided_at, section, text)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (decision.issue_date, decision.action, decision.item_id, decision.editor,
                 to_utc(decision.decided_at), decision.section, decision.text),
            )

    def decisions_for(self, date: dt.date) -> list[EditorialDecision]:
        rows = self._rows("SELECT * FROM editorial_decisions WHERE issue_date = %s ORDER BY id", (date,))
        return [
            EditorialDecision(issue_date=r["issue_date"], action=r["action"], item_id=r["item_id"],
                              editor=r["editor"], decided_at=r["decided_at"], section=r["section"], text=r["text"])
            for r in rows
        ]

    def record_approval(self, approval: Approval) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO approvals (issue_date, editor, approved_at) VALUES (%s, %s, %s)",
                       (approval.issue_date, approval.editor, to_utc(approval.approved_at)))

    def approval_of(self, date: dt.date) -> Approval | None:
        found = self._row("SELECT * FROM approvals WHERE issue_date = %s ORDER BY id DESC LIMIT 1", (date,))
        if found is None:
            return None
        return Approval(issue_date=found["issue_date"], editor=found["editor"], approved_at=found["approved_at"])
