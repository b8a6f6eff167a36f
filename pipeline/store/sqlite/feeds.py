"""Feeds' HTTP state (redirects, ETag, Last-Modified) and health, in the `feeds` table."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Sequence

from pipeline.models import FeedSource, FeedState, FetchResult, FetchStatus
from pipeline.store.codec import feed_state, from_iso, to_iso
from pipeline.store.records import FeedHealth
from pipeline.store.sqlite.base import SqliteBase


def _health(row: sqlite3.Row) -> FeedHealth:
    return FeedHealth(
        feed_id=row["feed_id"], config_url=row["config_url"], url=row["url"], etag=row["etag"],
        last_modified=row["last_modified"], consecutive_failures=row["consecutive_failures"],
        last_status=row["last_status"], last_error=row["last_error"], last_attempt=from_iso(row["last_attempt"]),
        last_success=from_iso(row["last_success"]), items_seen=row["items_seen"], disabled=bool(row["disabled"]),
    )


class SqliteFeeds(SqliteBase):
    def feed_states(self, feeds: Sequence[FeedSource]) -> dict[str, FeedState]:
        stored = {row["feed_id"]: _health(row) for row in self._rows("SELECT * FROM feeds")}
        return {feed.id: feed_state(feed, stored.get(feed.id)) for feed in feeds}

    def record_fetch(self, result: FetchResult, new_items: int, at: dt.datetime,
                     parse_error: str | None = None) -> None:
        failed = result.status is FetchStatus.FAILED or parse_error is not None
        error = result.error or parse_error
        status = "failed" if failed else str(result.status)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO feeds (feed_id, config_url) VALUES (?, ?) "
                "ON CONFLICT(feed_id) DO UPDATE SET "
                "  url = CASE WHEN config_url = excluded.config_url THEN url END,"
                "  etag = CASE WHEN config_url = excluded.config_url THEN etag END,"
                "  last_modified = CASE WHEN config_url = excluded.config_url THEN last_modified END,"
                "  config_url = excluded.config_url",
                (result.feed.id, result.feed.url),
            )
            if result.status is FetchStatus.SKIPPED:
                db.execute("UPDATE feeds SET last_status = 'skipped', last_attempt = ? WHERE feed_id = ?",
                           (to_iso(at), result.feed.id))
                return
            if failed:
                db.execute(
                    "UPDATE feeds SET consecutive_failures = consecutive_failures + 1, last_status = ?,"
                    " last_error = ?, last_attempt = ? WHERE feed_id = ?",
                    (status, error, to_iso(at), result.feed.id),
                )
                return
            db.execute(
                "UPDATE feeds SET consecutive_failures = 0, last_status = ?, last_error = NULL,"
                " last_attempt = ?, last_success = ?, items_seen = items_seen + ?,"
                " etag = COALESCE(?, CASE WHEN ? THEN etag END),"
                " last_modified = COALESCE(?, CASE WHEN ? THEN last_modified END),"
                " url = COALESCE(?, url) WHERE feed_id = ?",
                (
                    status, to_iso(at), to_iso(at), new_items,
                    result.etag, result.status is FetchStatus.UNCHANGED,
                    result.last_modified, result.status is FetchStatus.UNCHANGED,
                    result.permanent_redirect, result.feed.id,
                ),
            )

    def set_feeds_enabled(self, feed_ids: Iterable[str] | None, enabled: bool) -> int:
        with self._transaction() as db:
            if enabled:
                sql = "UPDATE feeds SET disabled = 0, consecutive_failures = 0"
            else:
                sql = "UPDATE feeds SET disabled = 1"
            if feed_ids is None:
                return db.execute(sql).rowcount
            ids = list(feed_ids)
            marks = ",".join("?" * len(ids))
            return db.execute(f"{sql} WHERE feed_id IN ({marks})", ids).rowcount

    def feed_health(self) -> list[FeedHealth]:
        return [_health(row) for row in self._rows("SELECT * FROM feeds ORDER BY feed_id")]

    def last_new_item(self, feed_ids: Sequence[str] | None = None) -> dict[str, dt.datetime]:
        if feed_ids is None:
            rows = self._rows("SELECT feed_id, max(first_seen) FROM items GROUP BY feed_id")
        else:  # the index on (feed_id, first_seen) answers each feed without a scan
            rows = [row for feed_id in feed_ids
                    for row in self._rows("SELECT feed_id, max(first_seen) FROM items WHERE feed_id = ?"
                                          " GROUP BY feed_id", (feed_id,))]
        return {row[0]: dt.datetime.fromisoformat(row[1]) for row in rows}

    def claim_due_feeds(self, feeds: Sequence[FeedSource], now: dt.datetime, hold: dt.timedelta) -> list[str]:
        # BEGIN IMMEDIATE takes the write lock first: a second caller waits, then sees the new times.
        with self._transaction() as db:
            db.executemany("INSERT OR IGNORE INTO feeds (feed_id, config_url) VALUES (?, ?)",
                           [(f.id, f.url) for f in feeds])
            due = {row[0] for row in db.execute(
                "SELECT feed_id FROM feeds WHERE disabled = 0 AND (next_fetch IS NULL OR next_fetch <= ?)",
                (to_iso(now),))}
            claimed = [f.id for f in feeds if f.id in due]
            db.executemany("UPDATE feeds SET next_fetch = ? WHERE feed_id = ?",
                           [(to_iso(now + hold), feed_id) for feed_id in claimed])
        return claimed

    def schedule_fetch(self, feed_id: str, at: dt.datetime) -> None:
        with self._transaction() as db:
            db.execute("UPDATE feeds SET next_fetch = ? WHERE feed_id = ?", (to_iso(at), feed_id))

    def feed_item_count(self, feed_id: str, since: dt.datetime) -> int:
        return self._count("SELECT count(*) FROM items WHERE feed_id = ? AND effective_time >= ?",
                           (feed_id, to_iso(since)))
