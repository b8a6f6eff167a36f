"""The SQLite schema and its migrations.

`PRAGMA user_version` counts the migrations a database has been through; opening a store runs
the missing ones, each in its own transaction, so an interrupted upgrade leaves the previous
version whole.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.text import tidy_text


def _clean_stored_text(db: sqlite3.Connection) -> None:
    """Items stored before the one text pass (pipeline/text.py) were turned into text by the
    former parser alone: they keep the feeds' trailing boilerplate ("Lire la suite", "The post …
    appeared first on …", "[…]") and a second, escaped-twice layer of entities and tags, which
    compose no longer removes. Their text fields get the rest of the pass (`tidy_text`: what
    `clean_text` does after HTML → text), so they read like the items stored since; the
    classifications of the items that changed are dropped (made again from the cleaned text
    when next needed). Text the pass already cleaned comes out unchanged."""
    changed: list[tuple[str, str, str, str | None, str]] = []
    for row in db.execute("SELECT id, title, summary, content, author FROM items"):
        item_id, title, summary, content, author = row
        cleaned = (tidy_text(title), tidy_text(summary), tidy_text(content), tidy_text(author) if author else author)
        if cleaned != (title, summary, content, author):
            changed.append((*cleaned, item_id))
    db.executemany("UPDATE items SET title = ?, summary = ?, content = ?, author = ? WHERE id = ?", changed)
    db.executemany("DELETE FROM classifications WHERE item_id = ?", [(row[-1],) for row in changed])


# Each entry upgrades the schema by one version; never edit a released entry, append a new one. An
# entry is SQL (statements separated by ";"), or a function run on the connection in the same
# transaction when an upgrade needs Python (the text pass).
MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], None], ...] = (
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
    # 2: email delivery (pipeline/deliver/). One row per (issue, recipient), written BEFORE the
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
    # 5: the queues of the distributed mode, kept by both backends alike: when each feed is next
    # due, and which email batch claimed a delivery.
    """
    ALTER TABLE feeds ADD COLUMN next_fetch TEXT;
    ALTER TABLE deliveries ADD COLUMN batch TEXT;
    CREATE INDEX items_feed_first_seen ON items(feed_id, first_seen);
    """,
    # 6: editors' decisions on draft issues and their approvals (the editor's desk), kept in the
    # order made (id). No foreign key to issues: rebuilding an issue replaces its row, never them.
    """
    CREATE TABLE editorial_decisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        issue_date TEXT NOT NULL,
        action TEXT NOT NULL,
        item_id TEXT NOT NULL,
        editor TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        section TEXT,
        text TEXT
    );
    CREATE INDEX editorial_decisions_date ON editorial_decisions(issue_date, id);
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        issue_date TEXT NOT NULL,
        editor TEXT NOT NULL,
        approved_at TEXT NOT NULL
    );
    CREATE INDEX approvals_date ON approvals(issue_date, id);
    """,
    # 7: the text of items stored before the one text pass, cleaned as new items are.
    _clean_stored_text,
    # 8: an operator's finding on an uncertain delivery (`pipeline send --confirm-delivered /
    # --confirm-lost`): 'delivered' or 'lost', and when it was recorded (Store.settle_deliveries).
    """
    ALTER TABLE deliveries ADD COLUMN settled TEXT;
    ALTER TABLE deliveries ADD COLUMN settled_at TEXT
    """,
    # 9: what a rebuild checks before reading an issue's items: each item's content digest
    # (codec.item_content_sha256; '' until the item is next stored) and each issue's input key
    # (StoredIssue.input_key; '' for issues built before it, which are checked the long way once).
    """
    ALTER TABLE items ADD COLUMN content_sha256 TEXT NOT NULL DEFAULT '';
    ALTER TABLE issues ADD COLUMN input_key TEXT NOT NULL DEFAULT ''
    """,
    # 10: the fingerprint of the code each issue was composed and rendered by
    # (StoredIssue.code_fingerprint; '' for issues built before it: not known).
    "ALTER TABLE issues ADD COLUMN code_fingerprint TEXT NOT NULL DEFAULT ''",
)


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the database at `path` up to the newest schema (`db` in autocommit mode)."""
    current = schema_version(db)
    if current > len(MIGRATIONS):
        raise PipelineError(
            f"{path}: database schema version {current} is newer than this program knows "
            f"({len(MIGRATIONS)}); upgrade the pipeline"
        )
    for version in range(current, len(MIGRATIONS)):
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated since we looked: the write lock makes this check exact.
            if schema_version(db) == version:
                migration = MIGRATIONS[version]
                if callable(migration):
                    migration(db)
                else:
                    for statement in migration.split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
