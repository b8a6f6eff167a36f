"""Built issues: `issues` (one record per date), `issue_stories` (searched through their generated
`search` column) and `issue_items` (featured items)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from psycopg.types.json import Jsonb

from pipeline.store.codec import to_utc
from pipeline.store.postgres.base import PostgresBase, Row
from pipeline.store.records import IssueStory, StoredIssue

_STORY_COLUMNS = "date, position, story_id, part, topic, topics, kicker, title, text, source, url, item_ids"


def _issue(row: Row) -> StoredIssue:
    return StoredIssue(
        date=row["date"], built_at=row["built_at"], rules_fingerprint=row["rules_fingerprint"],
        templates_fingerprint=row["templates_fingerprint"], html_sha256=row["html_sha256"],
        text_sha256=row["text_sha256"], story_count=row["story_count"], issue_json=row["issue_json"],
        render_key=row["render_key"], input_key=row["input_key"],
        code_fingerprint=row["code_fingerprint"],
    )


def _story(row: Row) -> IssueStory:
    return IssueStory(
        date=row["date"], position=row["position"], story_id=row["story_id"], part=row["part"], topic=row["topic"],
        topics=tuple(row["topics"]), kicker=row["kicker"], title=row["title"], text=row["text"],
        source=row["source"], url=row["url"], item_ids=tuple(row["item_ids"]),
    )


class PostgresIssues(PostgresBase):
    def featured_item_ids(self, before: dt.date) -> set[str]:
        return {row["item_id"] for row in self._rows("SELECT item_id FROM issue_items WHERE date < %s", (before,))}

    def save_issue(self, issue: StoredIssue, stories: Sequence[IssueStory], item_ids: Iterable[str]) -> None:
        for story in stories:
            if story.date != issue.date:
                raise ValueError(f"story {story.story_id} of {story.date} given with the issue of {issue.date}")
        date = issue.date
        with self._transaction() as db, db.cursor() as cursor:
            # Stories and featured items go with the issue's row (ON DELETE CASCADE).
            cursor.execute("DELETE FROM issues WHERE date = %s", (date,))
            cursor.execute(
                "INSERT INTO issues (date, built_at, rules_fingerprint, templates_fingerprint, html_sha256,"
                " text_sha256, story_count, issue_json, render_key, input_key, code_fingerprint)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (date, to_utc(issue.built_at), issue.rules_fingerprint, issue.templates_fingerprint,
                 issue.html_sha256, issue.text_sha256, issue.story_count, issue.issue_json, issue.render_key,
                 issue.input_key, issue.code_fingerprint),
            )
            cursor.executemany(
                f"INSERT INTO issue_stories ({_STORY_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                [(date, s.position, s.story_id, s.part, s.topic, Jsonb(list(s.topics)), s.kicker, s.title, s.text,
                  s.source, s.url, Jsonb(list(s.item_ids))) for s in stories],
            )
            cursor.executemany("INSERT INTO issue_items (item_id, date) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                               [(item_id, date) for item_id in item_ids])

    def update_issue_render(self, date: dt.date, html_sha256: str, text_sha256: str, render_key: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE issues SET html_sha256 = %s, text_sha256 = %s, render_key = %s WHERE date = %s",
                       (html_sha256, text_sha256, render_key, date))

    def delete_issue(self, date: dt.date, forget_items: Sequence[str] = ()) -> bool:
        forget = sorted(set(forget_items))
        with self._transaction() as db:
            # Its stories (and so their search vectors) and featured items go with the row (ON DELETE CASCADE).
            if db.execute("DELETE FROM issues WHERE date = %s RETURNING date", (date,)).fetchone() is None:
                return False
            db.execute("DELETE FROM editorial_decisions WHERE issue_date = %s", (date,))
            db.execute("DELETE FROM approvals WHERE issue_date = %s", (date,))
            if forget:
                db.execute("UPDATE feeds SET etag = NULL, last_modified = NULL WHERE feed_id IN "
                           "(SELECT DISTINCT feed_id FROM items WHERE id = ANY(%s))", (forget,))
                db.execute("DELETE FROM classifications WHERE item_id = ANY(%s)", (forget,))
                db.execute("DELETE FROM items WHERE id = ANY(%s)", (forget,))
        return True

    def update_issue_record(self, issue: StoredIssue) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE issues SET built_at = %s, rules_fingerprint = %s, templates_fingerprint = %s,"
                " html_sha256 = %s, text_sha256 = %s, story_count = %s, render_key = %s, input_key = %s,"
                " code_fingerprint = %s WHERE date = %s AND issue_json = %s",
                (to_utc(issue.built_at), issue.rules_fingerprint, issue.templates_fingerprint, issue.html_sha256,
                 issue.text_sha256, issue.story_count, issue.render_key, issue.input_key, issue.code_fingerprint,
                 issue.date, issue.issue_json),
            )
            return cursor.rowcount == 1

    def issue(self, date: dt.date) -> StoredIssue | None:
        row = self._row("SELECT * FROM issues WHERE date = %s", (date,))
        return _issue(row) if row else None

    def issues(self) -> list[StoredIssue]:
        return [_issue(row) for row in self._rows("SELECT * FROM issues ORDER BY date DESC")]

    def issue_dates(self) -> list[dt.date]:
        return [row["date"] for row in self._rows("SELECT date FROM issues ORDER BY date")]

    def issue_stories(self, date: dt.date | None = None) -> list[IssueStory]:
        if date is None:
            rows = self._rows(f"SELECT {_STORY_COLUMNS} FROM issue_stories ORDER BY date DESC, position")
        else:
            rows = self._rows(f"SELECT {_STORY_COLUMNS} FROM issue_stories WHERE date = %s ORDER BY position",
                              (date,))
        return [_story(row) for row in rows]
