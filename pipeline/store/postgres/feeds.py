"""Feeds' HTTP state (redirects, ETag, Last-Modified) and health, in the `feeds` table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from pipeline.models import FeedSource, FeedState, FetchResult, FetchStatus
from pipeline.store.codec import feed_state, to_utc
from pipeline.store.postgres.base import PostgresBase, Row
from pipeline.store.records import FeedHealth


def _health(row: Row) -> FeedHealth:
    return FeedHealth(
        feed_id=row["feed_id"], config_url=row["config_url"], url=row["url"], etag=row["etag"],
        last_modified=row["last_modified"], consecutive_failures=row["consecutive_failures"],
        last_status=row["last_status"], last_error=row["last_error"], last_attempt=row["last_attempt"],
        last_success=row["last_success"], items_seen=row["items_seen"], disabled=row["disabled"],
    )


class PostgresFeeds(PostgresBase):
    def feed_states(self, feeds: Sequence[FeedSource]) -> dict[str, FeedState]:
        rows = self._rows("SELECT * FROM feeds WHERE feed_id = ANY(%s)", ([f.id for f in feeds],))
        stored = {row["feed_id"]: _health(row) for row in rows}
        return {feed.id: feed_state(feed, stored.get(feed.id)) for feed in feeds}

    def record_fetch(self, result: FetchResult, new_items: int, at: dt.datetime,
                     parse_error: str | None = None) -> None:
        failed = result.status is FetchStatus.FAILED or parse_error is not None
        error = result.error or parse_error
        status = "failed" if failed else str(result.status)
        feed_id = result.feed.id
        at = to_utc(at) or at
        with self._transaction() as db:
            db.execute(
                "INSERT INTO feeds AS f (feed_id, config_url) VALUES (%s, %s) "
                "ON CONFLICT (feed_id) DO UPDATE SET "
                "  url = CASE WHEN f.config_url = excluded.config_url THEN f.url END,"
                "  etag = CASE WHEN f.config_url = excluded.config_url THEN f.etag END,"
                "  last_modified = CASE WHEN f.config_url = excluded.config_url THEN f.last_modified END,"
                "  config_url = excluded.config_url",
                (feed_id, result.feed.url),
            )
            if result.status is FetchStatus.SKIPPED:
                db.execute("UPDATE feeds SET last_status = 'skipped', last_attempt = %s WHERE feed_id = %s",
                           (at, feed_id))
                return
            if failed:
                db.execute(
                    "UPDATE feeds SET consecutive_failures = consecutive_failures + 1, last_status = %s,"
                    " last_error = %s, last_attempt = %s WHERE feed_id = %s",
                    (status, error, at, feed_id),
                )
                return
            unchanged = result.status is FetchStatus.UNCHANGED
            db.execute(
                "UPDATE feeds SET consecutive_failures = 0, last_status = %s, last_error = NULL,"
                " last_attempt = %s, last_success = %s, items_seen = items_seen + %s,"
                " etag = COALESCE(%s, CASE WHEN %s THEN etag END),"
                " last_modified = COALESCE(%s, CASE WHEN %s THEN last_modified END),"
                " url = COALESCE(%s, url) WHERE feed_id = %s",
                (status, at, at, new_items, result.etag, unchanged, result.last_modified, unchanged,
                 result.permanent_redirect, feed_id),
            )

    def set_feeds_enabled(self, feed_ids: Iterable[str] | None, enabled: bool) -> int:
        with self._transaction() as db:
            if feed_ids is None:
                if enabled:
                    return db.execute("UPDATE feeds SET disabled = false, consecutive_failures = 0").rowcount
                return db.execute("UPDATE feeds SET disabled = true").rowcount
            ids = list(feed_ids)
            if enabled:
                return db.execute("UPDATE feeds SET disabled = false, consecutive_failures = 0"
                                  " WHERE feed_id = ANY(%s)", (ids,)).rowcount
            return db.execute("UPDATE feeds SET disabled = true WHERE feed_id = ANY(%s)", (ids,)).rowcount

    def feed_health(self) -> list[FeedHealth]:
        return [_health(row) for row in self._rows("SELECT * FROM feeds ORDER BY feed_id")]

    def last_new_item(self, feed_ids: Sequence[str] | None = None) -> dict[str, dt.datetime]:
        if feed_ids is None:
            rows = self._rows("SELECT feed_id, max(first_seen) AS newest FROM items GROUP BY feed_id")
        else:
            rows = self._rows("SELECT feed_id, max(first_seen) AS newest FROM items WHERE feed_id = ANY(%s)"
                              " GROUP BY feed_id", (list(feed_ids),))
        return {row["feed_id"]: row["newest"] for row in rows}

    def claim_due_feeds(self, feeds: Sequence[FeedSource], now: dt.datetime, hold: dt.timedelta) -> list[str]:
        at = to_utc(now)
        with self._transaction() as db, db.cursor() as cursor:
            cursor.executemany("INSERT INTO feeds (feed_id, config_url) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                               [(f.id, f.url) for f in feeds])
            rows = cursor.execute(
                "UPDATE feeds SET next_fetch = %s WHERE feed_id IN ("
                " SELECT feed_id FROM feeds WHERE feed_id = ANY(%s) AND NOT disabled"
                " AND (next_fetch IS NULL OR next_fetch <= %s) FOR UPDATE SKIP LOCKED) RETURNING feed_id",
                (at + hold if at else None, [f.id for f in feeds], at),
            ).fetchall()
        claimed = {row["feed_id"] for row in rows}
        return [f.id for f in feeds if f.id in claimed]

    def schedule_fetch(self, feed_id: str, at: dt.datetime) -> None:
        with self._transaction() as db:
            db.execute("UPDATE feeds SET next_fetch = %s WHERE feed_id = %s", (to_utc(at), feed_id))

    def feed_item_count(self, feed_id: str, since: dt.datetime) -> int:
        return self._count("SELECT count(*) FROM items WHERE feed_id = %s AND effective_time >= %s",
                           (feed_id, to_utc(since)))
