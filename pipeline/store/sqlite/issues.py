"""Built issues: `issues` (one record per date), `issue_stories` and `issue_items` (featured items)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Sequence

from pipeline.store.codec import to_iso
from pipeline.store.records import IssueStory, StoredIssue
from pipeline.store.sqlite.base import SqliteBase
from pipeline.store.sqlite.search import index_stories

_CHUNK = 500  # ids per `IN (…)` statement, well under SQLite's limit of bound parameters


def _issue(row: sqlite3.Row) -> StoredIssue:
    return StoredIssue(
        date=dt.date.fromisoformat(row["date"]), built_at=dt.datetime.fromisoformat(row["built_at"]),
        rules_fingerprint=row["rules_fingerprint"], templates_fingerprint=row["templates_fingerprint"],
        html_sha256=row["html_sha256"], text_sha256=row["text_sha256"], story_count=row["story_count"],
        issue_json=row["issue_json"], render_key=row["render_key"], input_key=row["input_key"],
        code_fingerprint=row["code_fingerprint"],
    )


def _story(row: sqlite3.Row) -> IssueStory:
    return IssueStory(
        date=dt.date.fromisoformat(row["date"]), position=row["position"], story_id=row["story_id"],
        part=row["part"], topic=row["topic"], topics=tuple(json.loads(row["topics"])), kicker=row["kicker"],
        title=row["title"], text=row["text"], source=row["source"], url=row["url"],
        item_ids=tuple(json.loads(row["item_ids"])),
    )


class SqliteIssues(SqliteBase):
    def featured_item_ids(self, before: dt.date) -> set[str]:
        return {row[0] for row in self._rows("SELECT item_id FROM issue_items WHERE date < ?", (before.isoformat(),))}

    def save_issue(self, issue: StoredIssue, stories: Sequence[IssueStory], item_ids: Iterable[str]) -> None:
        for story in stories:
            if story.date != issue.date:
                raise ValueError(f"story {story.story_id} of {story.date} given with the issue of {issue.date}")
        date = issue.date.isoformat()
        with self._transaction() as db:
            db.execute("DELETE FROM issues WHERE date = ?", (date,))
            db.execute(
                "INSERT INTO issues (date, built_at, rules_fingerprint, templates_fingerprint, html_sha256,"
                " text_sha256, story_count, issue_json, render_key, input_key, code_fingerprint)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (date, to_iso(issue.built_at), issue.rules_fingerprint, issue.templates_fingerprint,
                 issue.html_sha256, issue.text_sha256, issue.story_count, issue.issue_json, issue.render_key,
                 issue.input_key, issue.code_fingerprint),
            )
            db.executemany(
                "INSERT INTO issue_stories (date, position, story_id, part, topic, topics, kicker, title,"
                " text, source, url, item_ids) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (date, s.position, s.story_id, s.part, s.topic, json.dumps(list(s.topics)), s.kicker, s.title,
                     s.text, s.source, s.url, json.dumps(list(s.item_ids)))
                    for s in stories
                ],
            )
            db.executemany("INSERT OR IGNORE INTO issue_items (item_id, date) VALUES (?, ?)",
                           [(item_id, date) for item_id in item_ids])
            index_stories(db, issue.date, stories)

    def update_issue_render(self, date: dt.date, html_sha256: str, text_sha256: str, render_key: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE issues SET html_sha256 = ?, text_sha256 = ?, render_key = ? WHERE date = ?",
                       (html_sha256, text_sha256, render_key, date.isoformat()))

    def delete_issue(self, date: dt.date, forget_items: Sequence[str] = ()) -> bool:
        day = date.isoformat()
        forget = sorted(set(forget_items))
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM issues WHERE date = ?", (day,)).fetchone() is None:
                return False
            db.execute("DELETE FROM issue_items WHERE date = ?", (day,))
            db.execute("DELETE FROM issue_stories WHERE date = ?", (day,))
            index_stories(db, date, ())
            db.execute("DELETE FROM issues WHERE date = ?", (day,))
            db.execute("DELETE FROM editorial_decisions WHERE issue_date = ?", (day,))
            db.execute("DELETE FROM approvals WHERE issue_date = ?", (day,))
            for start in range(0, len(forget), _CHUNK):
                chunk = forget[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                db.execute(f"UPDATE feeds SET etag = NULL, last_modified = NULL WHERE feed_id IN "
                           f"(SELECT DISTINCT feed_id FROM items WHERE id IN ({marks}))", chunk)
                db.execute(f"DELETE FROM classifications WHERE item_id IN ({marks})", chunk)
                db.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
        return True

    def update_issue_record(self, issue: StoredIssue) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE issues SET built_at = ?, rules_fingerprint = ?, templates_fingerprint = ?, html_sha256 = ?,"
                " text_sha256 = ?, story_count = ?, render_key = ?, input_key = ?, code_fingerprint = ?"
                " WHERE date = ? AND issue_json = ?",
                (to_iso(issue.built_at), issue.rules_fingerprint, issue.templates_fingerprint, issue.html_sha256,
                 issue.text_sha256, issue.story_count, issue.render_key, issue.input_key, issue.code_fingerprint,
                 issue.date.isoformat(), issue.issue_json),
            )
            return cursor.rowcount == 1

    def issue(self, date: dt.date) -> StoredIssue | None:
        row = self._row("SELECT * FROM issues WHERE date = ?", (date.isoformat(),))
        return _issue(row) if row else None

    def issues(self) -> list[StoredIssue]:
        return [_issue(row) for row in self._rows("SELECT * FROM issues ORDER BY date DESC")]

    def issue_dates(self) -> list[dt.date]:
        return [dt.date.fromisoformat(r[0]) for r in self._rows("SELECT date FROM issues ORDER BY date")]

    def issue_stories(self, date: dt.date | None = None) -> list[IssueStory]:
        sql = "SELECT * FROM issue_stories"
        args: tuple[str, ...] = ()
        if date is not None:
            sql += " WHERE date = ?"
            args = (date.isoformat(),)
        return [_story(row) for row in self._rows(sql + " ORDER BY date DESC, position", args)]
