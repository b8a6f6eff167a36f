"""Store stage: the SQLite archive of feeds' HTTP state, items, classifications, issues and runs.

All SQL of the project lives here, so that moving to another database stays a local change.
Every write happens in a transaction; WAL lets a reader browse while a run writes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.models import (
    AgendaEntry,
    Classification,
    FeedSource,
    FeedState,
    FetchResult,
    FetchStatus,
    Issue,
    Item,
    Match,
    MenuTeaser,
    NewsletterSettings,
    Section,
    SourceRef,
    Story,
)

# Each entry upgrades the schema by one version; never edit a released entry, append a new one.
MIGRATIONS: tuple[str, ...] = (
    # 1: first schema
    """
    CREATE TABLE feeds (
        feed_id TEXT PRIMARY KEY,
        config_url TEXT NOT NULL,
        url TEXT,
        etag TEXT,
        last_modified TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        last_status TEXT,
        last_error TEXT,
        last_attempt TEXT,
        last_success TEXT,
        items_seen INTEGER NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE items (
        id TEXT PRIMARY KEY,
        feed_id TEXT NOT NULL,
        source TEXT NOT NULL,
        guid TEXT,
        url TEXT,
        title TEXT NOT NULL,
        summary TEXT NOT NULL,
        content TEXT NOT NULL,
        language TEXT NOT NULL,
        published TEXT,
        author TEXT,
        categories TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        -- when the item counts for issue windows: its date, or when first seen if undated
        effective_time TEXT NOT NULL
    );
    CREATE INDEX items_effective_time ON items(effective_time);
    CREATE TABLE classifications (
        item_id TEXT PRIMARY KEY REFERENCES items(id),
        fingerprint TEXT NOT NULL,
        topics TEXT NOT NULL,
        scores TEXT NOT NULL,
        matches TEXT NOT NULL
    );
    CREATE TABLE issues (
        date TEXT PRIMARY KEY,
        built_at TEXT NOT NULL,
        rules_fingerprint TEXT NOT NULL,
        templates_fingerprint TEXT NOT NULL,
        html_sha256 TEXT NOT NULL,
        text_sha256 TEXT NOT NULL,
        story_count INTEGER NOT NULL,
        issue_json TEXT NOT NULL
    );
    CREATE TABLE issue_stories (
        date TEXT NOT NULL REFERENCES issues(date) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        story_id TEXT NOT NULL,
        part TEXT NOT NULL,
        topic TEXT NOT NULL,
        topics TEXT NOT NULL,
        kicker TEXT NOT NULL,
        title TEXT NOT NULL,
        text TEXT NOT NULL,
        source TEXT NOT NULL,
        url TEXT,
        item_ids TEXT NOT NULL,
        PRIMARY KEY (date, position)
    );
    CREATE TABLE issue_items (
        item_id TEXT NOT NULL,
        date TEXT NOT NULL REFERENCES issues(date) ON DELETE CASCADE,
        PRIMARY KEY (item_id, date)
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        issue_date TEXT,
        started TEXT NOT NULL,
        finished TEXT,
        status TEXT NOT NULL,
        summary TEXT,
        report TEXT
    );
    """,
    # 2: email delivery (pipeline/deliver.py). One row per (issue, recipient), written BEFORE the
    # message is sent: `handed_over` is set just before the end of the message data goes to the
    # SMTP server, so a 'sending' row without it was never delivered and may be sent again,
    # while one with it may have been accepted and is never resent automatically.
    # No foreign key to issues: rebuilding an issue replaces its row, never its deliveries.
    """
    CREATE TABLE deliveries (
        issue_date TEXT NOT NULL,
        email TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        message_id TEXT NOT NULL,
        first_attempt TEXT NOT NULL,
        updated TEXT NOT NULL,
        handed_over TEXT,
        reply TEXT,
        PRIMARY KEY (issue_date, email)
    );
    CREATE INDEX deliveries_status ON deliveries(issue_date, status);
    CREATE TABLE suppressions (
        email TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        detail TEXT,
        created TEXT NOT NULL
    );
    """,
    # 3: full-text search over the stories of stored issues (`pipeline archive search`), kept in
    # step with issue_stories by save_issue. rowid = YYYYMMDD * 10000 + position, so the rows of
    # one issue are one rowid range that a rebuild replaces without scanning the index;
    # remove_diacritics 2 folds accents, so "reglement" finds "règlement".
    """
    CREATE VIRTUAL TABLE story_search USING fts5(
        title, kicker, text, source, date UNINDEXED, position UNINDEXED,
        tokenize = 'unicode61 remove_diacritics 2'
    );
    INSERT INTO story_search (rowid, title, kicker, text, source, date, position)
        SELECT CAST(replace(date, '-', '') AS INTEGER) * 10000 + position, title, kicker, text, source, date,
               position
        FROM issue_stories;
    """,
    # 4: the render key of each issue (see StoredIssue.render_key); '' for issues built before it,
    # which are simply rendered once more.
    """
    ALTER TABLE issues ADD COLUMN render_key TEXT NOT NULL DEFAULT '';
    """,
)


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


def _from_iso(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


# Rows of the search index (migration 3) are numbered YYYYMMDD * _SEARCH_SLOTS + position.
_SEARCH_SLOTS = 10_000


def _search_rowid(date: dt.date, position: int) -> int:
    if not 0 <= position < _SEARCH_SLOTS:
        raise ValueError(f"issue {date.isoformat()} has more than {_SEARCH_SLOTS} stories")
    return int(date.strftime("%Y%m%d")) * _SEARCH_SLOTS + position


def fts_query(text: str) -> str:
    """A user's search words as an FTS5 query: every word must appear (any order), "quoted words"
    must appear as a phrase, and a word ending in * matches as a prefix. Punctuation is never
    FTS5 syntax here, so "l'IA" or "AI-Act" cannot make the query invalid."""
    terms: list[str] = []
    for phrase, bare in re.findall(r'"([^"]*)"?|(\S+)', text):
        if phrase:
            words = re.findall(r"\w+", phrase)
            if words:
                terms.append('"' + " ".join(words) + '"')
            continue
        words = re.findall(r"\w+", bare)
        for position, word in enumerate(words):
            prefix = bare.endswith("*") and position == len(words) - 1
            terms.append(f'"{word}"' + ("*" if prefix else ""))
    return " ".join(terms)


@dataclass(frozen=True)
class SearchHit:
    """One stored story matching a search, best first (`rank` is bm25: lower is better)."""

    date: dt.date
    position: int
    story_id: str
    topic: str
    topics: tuple[str, ...]
    kicker: str
    title: str
    source: str
    url: str | None
    snippet: str  # the best-matching passage, matched words between the given markers
    rank: float


@dataclass(frozen=True)
class StoredIssue:
    date: dt.date
    built_at: dt.datetime
    rules_fingerprint: str
    templates_fingerprint: str
    html_sha256: str
    text_sha256: str
    story_count: int
    issue_json: str
    # sha256 of everything the issue's pages are rendered from (issue, links, settings,
    # templates): equal keys and intact files mean the pages need not be rendered again.
    render_key: str = ""


@dataclass(frozen=True)
class RunRecord:
    id: int
    kind: str
    issue_date: str | None
    started: dt.datetime
    finished: dt.datetime | None
    status: str
    summary: str | None


@dataclass(frozen=True)
class DeliveryRecord:
    """One recipient's delivery of one issue (see migration 2 for the meaning of handed_over)."""

    issue_date: dt.date
    email: str
    status: str  # sending | sent | failed-permanent | failed-temporary
    attempts: int
    message_id: str
    first_attempt: dt.datetime
    updated: dt.datetime
    handed_over: dt.datetime | None
    reply: str | None


@dataclass(frozen=True)
class Suppression:
    email: str
    reason: str  # unsubscribed | bounced
    detail: str | None
    created: dt.datetime


class Store:
    """A connection to the archive. Use as a context manager, or call close()."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if str(path) != ":memory:":
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PipelineError(f"{self.path}: cannot create the database folder: {exc.strerror}") from None
        try:
            self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise PipelineError(f"{self.path}: cannot open the database: {exc}") from None

    # -- plumbing

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception: never half a write."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise PipelineError(
                f"{self.path}: database schema version {current} is newer than this program knows "
                f"({len(MIGRATIONS)}); upgrade the pipeline"
            )
        for version in range(current, len(MIGRATIONS)):
            with self.transaction() as db:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # -- feeds

    def feed_states(self, feeds: Sequence[FeedSource]) -> dict[str, FeedState]:
        """State per configured feed. A redirect stored for an older configured URL is forgotten."""
        rows = {row["feed_id"]: row for row in self._db.execute("SELECT * FROM feeds")}
        states: dict[str, FeedState] = {}
        for feed in feeds:
            row = rows.get(feed.id)
            if row is None:
                states[feed.id] = FeedState(feed_id=feed.id)
                continue
            same_config = row["config_url"] == feed.url
            states[feed.id] = FeedState(
                feed_id=feed.id,
                url=row["url"] if same_config else None,
                etag=row["etag"] if same_config else None,
                last_modified=row["last_modified"] if same_config else None,
                consecutive_failures=row["consecutive_failures"],
                last_status=row["last_status"],
                last_error=row["last_error"],
                last_success=_from_iso(row["last_success"]),
                items_seen=row["items_seen"],
                disabled=bool(row["disabled"]),
            )
        return states

    def record_fetch(self, result: FetchResult, new_items: int, at: dt.datetime,
                     parse_error: str | None = None) -> None:
        """Update a feed's HTTP state and health after one fetch (and parse) attempt."""
        failed = result.status is FetchStatus.FAILED or parse_error is not None
        error = result.error or parse_error
        status = "failed" if failed else str(result.status)
        with self.transaction() as db:
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
                           (_iso(at), result.feed.id))
                return
            if failed:
                db.execute(
                    "UPDATE feeds SET consecutive_failures = consecutive_failures + 1, last_status = ?,"
                    " last_error = ?, last_attempt = ? WHERE feed_id = ?",
                    (status, error, _iso(at), result.feed.id),
                )
                return
            db.execute(
                "UPDATE feeds SET consecutive_failures = 0, last_status = ?, last_error = NULL,"
                " last_attempt = ?, last_success = ?, items_seen = items_seen + ?,"
                " etag = COALESCE(?, CASE WHEN ? THEN etag END),"
                " last_modified = COALESCE(?, CASE WHEN ? THEN last_modified END),"
                " url = COALESCE(?, url) WHERE feed_id = ?",
                (
                    status, _iso(at), _iso(at), new_items,
                    result.etag, result.status is FetchStatus.UNCHANGED,
                    result.last_modified, result.status is FetchStatus.UNCHANGED,
                    result.permanent_redirect, result.feed.id,
                ),
            )

    def set_feeds_enabled(self, feed_ids: Iterable[str] | None, enabled: bool) -> int:
        """Re-enable (reset failures) or disable feeds; None means every feed. Returns rows changed."""
        with self.transaction() as db:
            if enabled:
                sql = "UPDATE feeds SET disabled = 0, consecutive_failures = 0"
            else:
                sql = "UPDATE feeds SET disabled = 1"
            if feed_ids is None:
                return db.execute(sql).rowcount
            ids = list(feed_ids)
            marks = ",".join("?" * len(ids))
            return db.execute(f"{sql} WHERE feed_id IN ({marks})", ids).rowcount

    def last_new_item(self) -> dict[str, dt.datetime]:
        """Per feed, when its newest item was first seen."""
        return {
            row[0]: dt.datetime.fromisoformat(row[1])
            for row in self._db.execute("SELECT feed_id, max(first_seen) FROM items GROUP BY feed_id")
        }

    def feed_health(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._db.execute("SELECT * FROM feeds ORDER BY feed_id")]

    # -- items

    def upsert_items(self, items: Iterable[Item]) -> int:
        """Insert new items and refresh changed ones; first_seen never moves. Returns new count."""
        new = 0
        with self.transaction() as db:
            for item in items:
                if item.first_seen is None:
                    raise ValueError(f"item {item.id} has no first_seen time")
                effective = item.published or item.first_seen
                values = (
                    item.feed_id, item.source, item.guid, item.url, item.title, item.summary, item.content,
                    item.language, _iso(item.published), item.author,
                    json.dumps(list(item.categories), ensure_ascii=False),
                )
                existing = db.execute("SELECT first_seen FROM items WHERE id = ?", (item.id,)).fetchone()
                if existing is None:
                    db.execute(
                        "INSERT INTO items (feed_id, source, guid, url, title, summary, content, language,"
                        " published, author, categories, id, first_seen, effective_time)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (*values, item.id, _iso(item.first_seen), _iso(effective)),
                    )
                    new += 1
                else:
                    db.execute(
                        "UPDATE items SET feed_id=?, source=?, guid=?, url=?, title=?, summary=?, content=?,"
                        " language=?, published=?, author=?, categories=?, effective_time=? WHERE id=?",
                        (*values, _iso(item.published) or existing["first_seen"], item.id),
                    )
        return new

    @staticmethod
    def _item(row: sqlite3.Row) -> Item:
        return Item(
            id=row["id"], feed_id=row["feed_id"], source=row["source"], title=row["title"], url=row["url"],
            summary=row["summary"], content=row["content"], guid=row["guid"], language=row["language"],
            published=_from_iso(row["published"]), author=row["author"],
            categories=tuple(json.loads(row["categories"])), first_seen=_from_iso(row["first_seen"]),
        )

    def items_between(self, start: dt.datetime, end: dt.datetime) -> list[Item]:
        """Items whose date (or first-seen time when undated) is in [start, end), oldest first."""
        rows = self._db.execute(
            "SELECT * FROM items WHERE effective_time >= ? AND effective_time < ? ORDER BY effective_time, id",
            (_iso(start), _iso(end)),
        )
        return [self._item(row) for row in rows]

    def count_items_between(self, start: dt.datetime, end: dt.datetime) -> int:
        return int(self._db.execute(
            "SELECT count(*) FROM items WHERE effective_time >= ? AND effective_time < ?",
            (_iso(start), _iso(end)),
        ).fetchone()[0])

    def item_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])

    def all_items(self) -> Iterator[Item]:
        for row in self._db.execute("SELECT * FROM items ORDER BY effective_time, id"):
            yield self._item(row)

    # -- classifications

    def save_classifications(self, classifications: Iterable[Classification], fingerprint: str) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO classifications (item_id, fingerprint, topics, scores, matches)"
                " VALUES (?,?,?,?,?)",
                [
                    (
                        c.item_id, fingerprint, json.dumps(list(c.topics)),
                        json.dumps(c.scores, sort_keys=True),
                        json.dumps([m.__dict__ for m in c.matches], ensure_ascii=False),
                    )
                    for c in classifications
                ],
            )

    def classifications(self, item_ids: Sequence[str], fingerprint: str) -> dict[str, Classification]:
        """Stored classifications made with the given rules fingerprint (others are stale)."""
        found: dict[str, Classification] = {}
        for start in range(0, len(item_ids), 500):
            chunk = list(item_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT * FROM classifications WHERE fingerprint = ? AND item_id IN ({marks})",
                [fingerprint, *chunk],
            ):
                found[row["item_id"]] = Classification(
                    item_id=row["item_id"], topics=tuple(json.loads(row["topics"])),
                    scores=json.loads(row["scores"]),
                    matches=tuple(Match(**m) for m in json.loads(row["matches"])),
                )
        return found

    # -- issues

    def featured_item_ids(self, before: dt.date) -> set[str]:
        """Items already shown in an issue dated before `before`: never repeat them."""
        return {
            row[0]
            for row in self._db.execute("SELECT item_id FROM issue_items WHERE date < ?", (before.isoformat(),))
        }

    def save_issue(self, issue: StoredIssue, stories: Sequence[dict[str, Any]],
                   item_ids: Iterable[str]) -> None:
        """Replace the record of one issue (its stories and featured items) in one transaction."""
        with self.transaction() as db:
            date = issue.date.isoformat()
            db.execute("DELETE FROM issues WHERE date = ?", (date,))
            db.execute(
                "INSERT INTO issues (date, built_at, rules_fingerprint, templates_fingerprint, html_sha256,"
                " text_sha256, story_count, issue_json, render_key) VALUES (?,?,?,?,?,?,?,?,?)",
                (date, _iso(issue.built_at), issue.rules_fingerprint, issue.templates_fingerprint,
                 issue.html_sha256, issue.text_sha256, issue.story_count, issue.issue_json, issue.render_key),
            )
            db.executemany(
                "INSERT INTO issue_stories (date, position, story_id, part, topic, topics, kicker, title,"
                " text, source, url, item_ids) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (date, position, s["story_id"], s["part"], s["topic"], json.dumps(s["topics"]),
                     s["kicker"], s["title"], s["text"], s["source"], s["url"], json.dumps(s["item_ids"]))
                    for position, s in enumerate(stories)
                ],
            )
            db.executemany("INSERT OR IGNORE INTO issue_items (item_id, date) VALUES (?, ?)",
                           [(item_id, date) for item_id in item_ids])
            # The search index follows issue_stories (migration 3): drop this issue's rows, add the new ones.
            first = _search_rowid(issue.date, 0)
            db.execute("DELETE FROM story_search WHERE rowid BETWEEN ? AND ?", (first, first + _SEARCH_SLOTS - 1))
            db.executemany(
                "INSERT INTO story_search (rowid, title, kicker, text, source, date, position)"
                " VALUES (?,?,?,?,?,?,?)",
                [
                    (_search_rowid(issue.date, position), s["title"], s["kicker"], s["text"], s["source"], date,
                     position)
                    for position, s in enumerate(stories)
                ],
            )

    def search_stories(self, query: str, limit: int = 20, topic: str | None = None,
                       marks: tuple[str, str] = ("[", "]")) -> list[SearchHit]:
        """Stories of stored issues matching `query` (see fts_query), best first: bm25 with the
        title weighing most, then the newest issue. Accents and case are ignored."""
        match = fts_query(query)
        if not match:
            raise PipelineError(f"search query {query!r} has no word to look for")
        sql = (
            "SELECT s.date, s.position, s.story_id, s.topic, s.topics, s.kicker, s.title, s.source, s.url,"
            " snippet(story_search, -1, ?, ?, '…', 14) AS snippet,"
            " bm25(story_search, 8.0, 3.0, 1.0, 2.0) AS rank"
            " FROM story_search JOIN issue_stories s"
            " ON s.date = story_search.date AND s.position = story_search.position"
            " WHERE story_search MATCH ?"
        )
        args: list[Any] = [marks[0], marks[1], match]
        if topic is not None:
            sql += " AND EXISTS (SELECT 1 FROM json_each(s.topics) WHERE json_each.value = ?)"
            args.append(topic)
        sql += " ORDER BY rank, s.date DESC, s.position LIMIT ?"
        args.append(limit)
        try:
            rows = self._db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            raise PipelineError(f"search query {query!r}: {exc}") from None
        return [
            SearchHit(
                date=dt.date.fromisoformat(r["date"]), position=r["position"], story_id=r["story_id"],
                topic=r["topic"], topics=tuple(json.loads(r["topics"])), kicker=r["kicker"], title=r["title"],
                source=r["source"], url=r["url"], snippet=r["snippet"], rank=float(r["rank"]),
            )
            for r in rows
        ]

    def update_issue_render(self, date: dt.date, html_sha256: str, text_sha256: str, render_key: str) -> None:
        """Record that an issue's pages were rendered again (new neighbours' links)."""
        with self.transaction() as db:
            db.execute("UPDATE issues SET html_sha256 = ?, text_sha256 = ?, render_key = ? WHERE date = ?",
                       (html_sha256, text_sha256, render_key, date.isoformat()))

    def issue(self, date: dt.date) -> StoredIssue | None:
        row = self._db.execute("SELECT * FROM issues WHERE date = ?", (date.isoformat(),)).fetchone()
        return self._issue(row) if row else None

    @staticmethod
    def _issue(row: sqlite3.Row) -> StoredIssue:
        return StoredIssue(
            date=dt.date.fromisoformat(row["date"]), built_at=dt.datetime.fromisoformat(row["built_at"]),
            rules_fingerprint=row["rules_fingerprint"], templates_fingerprint=row["templates_fingerprint"],
            html_sha256=row["html_sha256"], text_sha256=row["text_sha256"], story_count=row["story_count"],
            issue_json=row["issue_json"], render_key=row["render_key"],
        )

    def issues(self) -> list[StoredIssue]:
        """Every stored issue, newest first."""
        return [self._issue(row) for row in self._db.execute("SELECT * FROM issues ORDER BY date DESC")]

    def issue_dates(self) -> list[dt.date]:
        return [dt.date.fromisoformat(r[0]) for r in self._db.execute("SELECT date FROM issues ORDER BY date")]

    def issue_stories(self, date: dt.date | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM issue_stories"
        args: tuple[str, ...] = ()
        if date is not None:
            sql += " WHERE date = ?"
            args = (date.isoformat(),)
        rows = self._db.execute(sql + " ORDER BY date DESC, position", args)
        return [
            {**dict(row), "topics": json.loads(row["topics"]), "item_ids": json.loads(row["item_ids"])}
            for row in rows
        ]

    # -- runs

    def start_run(self, kind: str, issue_date: dt.date | None, at: dt.datetime) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (kind, issue_date, started, status) VALUES (?, ?, ?, 'running')",
                (kind, issue_date.isoformat() if issue_date else None, _iso(at)),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, summary: str, report: Any, at: dt.datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished = ?, status = ?, summary = ?, report = ? WHERE id = ?",
                (_iso(at), status, summary, json.dumps(report, ensure_ascii=False, sort_keys=True), run_id),
            )

    def runs(self, limit: int = 20) -> list[RunRecord]:
        return [
            RunRecord(id=r["id"], kind=r["kind"], issue_date=r["issue_date"], started=_from_iso(r["started"])
                      or dt.datetime.min, finished=_from_iso(r["finished"]), status=r["status"],
                      summary=r["summary"])
            for r in self._db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        ]

    def failed_runs(self, kind: str, issue_date: dt.date) -> list[dt.datetime]:
        """When the failed runs of one kind for one issue date ended, oldest first (the
        scheduler's `--once` mode counts its retries from these)."""
        rows = self._db.execute(
            "SELECT COALESCE(finished, started) FROM runs WHERE kind = ? AND issue_date = ? AND status = 'failed'"
            " ORDER BY id",
            (kind, issue_date.isoformat()),
        )
        return [dt.datetime.fromisoformat(row[0]) for row in rows]

    # -- deliveries (email) and the suppression list

    def durable_commits(self) -> None:
        """fsync at every commit on this connection from now on: a delivery record must survive
        a power cut, not only a crash of the process, or a resumed send could mail twice."""
        self._db.execute("PRAGMA synchronous=FULL")

    @staticmethod
    def _delivery(row: sqlite3.Row) -> DeliveryRecord:
        return DeliveryRecord(
            issue_date=dt.date.fromisoformat(row["issue_date"]), email=row["email"], status=row["status"],
            attempts=row["attempts"], message_id=row["message_id"],
            first_attempt=dt.datetime.fromisoformat(row["first_attempt"]),
            updated=dt.datetime.fromisoformat(row["updated"]), handed_over=_from_iso(row["handed_over"]),
            reply=row["reply"],
        )

    def deliveries(self, date: dt.date) -> dict[str, DeliveryRecord]:
        """Every delivery record of an issue, by recipient address."""
        rows = self._db.execute("SELECT * FROM deliveries WHERE issue_date = ? ORDER BY email",
                                (date.isoformat(),))
        return {row["email"]: self._delivery(row) for row in rows}

    def begin_delivery(self, date: dt.date, email: str, message_id: str, at: dt.datetime) -> DeliveryRecord:
        """Record an attempt as 'sending' before any byte goes to the server. A retry keeps the
        Message-ID of the first attempt: it is the same message."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO deliveries (issue_date, email, status, attempts, message_id, first_attempt, updated)"
                " VALUES (?, ?, 'sending', 1, ?, ?, ?)"
                " ON CONFLICT(issue_date, email) DO UPDATE SET status = 'sending', attempts = attempts + 1,"
                " updated = excluded.updated, handed_over = NULL, reply = NULL",
                (date.isoformat(), email, message_id, _iso(at), _iso(at)),
            )
            row = db.execute("SELECT * FROM deliveries WHERE issue_date = ? AND email = ?",
                             (date.isoformat(), email)).fetchone()
        return self._delivery(row)

    def mark_handed_over(self, date: dt.date, email: str, at: dt.datetime) -> None:
        """From here on the server may accept the message at any moment: never resend blindly."""
        with self.transaction() as db:
            db.execute("UPDATE deliveries SET handed_over = ?, updated = ? WHERE issue_date = ? AND email = ?",
                       (_iso(at), _iso(at), date.isoformat(), email))

    def finish_delivery(self, date: dt.date, email: str, status: str, reply: str | None, at: dt.datetime,
                        suppress_reason: str | None = None) -> None:
        """Record the outcome of an attempt; with `suppress_reason`, also put the address on the
        suppression list in the same transaction."""
        if status not in ("sent", "failed-permanent", "failed-temporary"):
            raise ValueError(f"unknown delivery status {status!r}")
        with self.transaction() as db:
            db.execute("UPDATE deliveries SET status = ?, reply = ?, updated = ? WHERE issue_date = ? AND email = ?",
                       (status, reply, _iso(at), date.isoformat(), email))
            if suppress_reason:
                db.execute("INSERT OR IGNORE INTO suppressions (email, reason, detail, created) VALUES (?,?,?,?)",
                           (email, suppress_reason, reply, _iso(at)))

    def suppress(self, email: str, reason: str, detail: str | None, at: dt.datetime) -> bool:
        """Add an address to the suppression list; False if it was already there."""
        with self.transaction() as db:
            return db.execute(
                "INSERT OR IGNORE INTO suppressions (email, reason, detail, created) VALUES (?,?,?,?)",
                (email, reason, detail, _iso(at)),
            ).rowcount == 1

    def unsuppress(self, email: str) -> Suppression | None:
        """Lift a suppression (the reader subscribed again); returns what was lifted."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM suppressions WHERE email = ?", (email,)).fetchone()
            db.execute("DELETE FROM suppressions WHERE email = ?", (email,))
        return self._suppression(row) if row else None

    @staticmethod
    def _suppression(row: sqlite3.Row) -> Suppression:
        return Suppression(email=row["email"], reason=row["reason"], detail=row["detail"],
                           created=dt.datetime.fromisoformat(row["created"]))

    def suppressions(self) -> dict[str, Suppression]:
        return {row["email"]: self._suppression(row)
                for row in self._db.execute("SELECT * FROM suppressions ORDER BY email")}


# ---------------------------------------------------------------- issue (de)serialisation
# An issue is stored as it was composed, so that archive pages and neighbours' links can be
# rendered again without recomposing (which could silently pick up newer rules).


_STORY_FIELDS = tuple(f.name for f in dataclasses.fields(Story))


def _story_to_dict(story: Story) -> dict[str, Any]:
    # Field by field rather than dataclasses.asdict, whose deep copy dominated a rebuild's store time.
    data = {name: getattr(story, name) for name in _STORY_FIELDS}
    data["also_on"] = [dataclasses.asdict(ref) for ref in story.also_on]
    data["published"] = _iso(story.published)
    return data


def _story_from_dict(data: dict[str, Any]) -> Story:
    return Story(
        **{
            **data,
            "topics": tuple(data["topics"]),
            "item_ids": tuple(data["item_ids"]),
            "also_on": tuple(SourceRef(**ref) for ref in data["also_on"]),
            "published": _from_iso(data["published"]),
            "why": tuple(data["why"]),
        }
    )


def issue_to_json(issue: Issue) -> str:
    """The issue without its newsletter settings (those come from the current config)."""
    data = {
        "date": issue.date.isoformat(),
        "menu": [dataclasses.asdict(t) for t in issue.menu],
        "lead": _story_to_dict(issue.lead) if issue.lead else None,
        "sections": [
            {"topic": s.topic, "heading": s.heading, "stories": [_story_to_dict(x) for x in s.stories]}
            for s in issue.sections
        ],
        "agenda": [{**dataclasses.asdict(a), "date": a.date.isoformat()} for a in issue.agenda],
        "further_reading": [_story_to_dict(s) for s in issue.further_reading],
    }
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def issue_from_json(text: str, newsletter: NewsletterSettings) -> Issue:
    data = json.loads(text)
    return Issue(
        date=dt.date.fromisoformat(data["date"]),
        newsletter=newsletter,
        menu=tuple(MenuTeaser(**t) for t in data["menu"]),
        lead=_story_from_dict(data["lead"]) if data["lead"] else None,
        sections=tuple(
            Section(topic=s["topic"], heading=s["heading"], stories=tuple(_story_from_dict(x) for x in s["stories"]))
            for s in data["sections"]
        ),
        agenda=tuple(
            AgendaEntry(**{**a, "date": dt.date.fromisoformat(a["date"])}) for a in data["agenda"]
        ),
        further_reading=tuple(_story_from_dict(s) for s in data["further_reading"]),
    )
