"""The PostgreSQL schema and its migrations.

`tech_matin_schema.version` counts the migrations a database has been through; opening a store
runs the missing ones, each in its own transaction under an advisory lock, so that workers
starting together migrate once and an interrupted upgrade leaves the previous version whole.

Search uses a text search configuration of our own, `tech_matin_french`: French stemming and
stop words (`french_stem`) after `unaccent`, so "reglement" finds "règlement" as SQLite's
`remove_diacritics` does. Its name is explicit so that no server default (`default_text_search_config`)
can change what a query finds.
"""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg

from pipeline.errors import PipelineError

SEARCH_CONFIG = "tech_matin_french"
_MIGRATION_LOCK = 7_310_019  # pg_advisory_xact_lock key: one migrating process at a time

# Each entry upgrades the schema by one version; never edit a released entry, append a new one.
MIGRATIONS: tuple[LiteralString, ...] = (
    # 1: the schema of SQLite's migrations 1 to 5 (items, feeds, issues, runs, deliveries, search,
    # feeds' next fetch and deliveries' batches), with PostgreSQL's own types.
    """
    CREATE EXTENSION IF NOT EXISTS unaccent;
    CREATE TEXT SEARCH CONFIGURATION tech_matin_french (COPY = pg_catalog.french);
    ALTER TEXT SEARCH CONFIGURATION tech_matin_french
        ALTER MAPPING FOR hword, hword_part, word WITH unaccent, french_stem;
    CREATE TABLE feeds (
        feed_id text PRIMARY KEY,
        config_url text NOT NULL,
        url text,
        etag text,
        last_modified text,
        consecutive_failures integer NOT NULL DEFAULT 0,
        last_status text,
        last_error text,
        last_attempt timestamptz,
        last_success timestamptz,
        items_seen integer NOT NULL DEFAULT 0,
        disabled boolean NOT NULL DEFAULT false,
        next_fetch timestamptz  -- when the feeds queue fetches it next (NULL: as soon as possible)
    );
    CREATE TABLE items (
        id text PRIMARY KEY,
        feed_id text NOT NULL,
        source text NOT NULL,
        guid text,
        url text,
        title text NOT NULL,
        summary text NOT NULL,
        content text NOT NULL,
        language text NOT NULL,
        published timestamptz,
        author text,
        categories jsonb NOT NULL,
        first_seen timestamptz NOT NULL,
        -- when the item counts for issue windows: its date, or when first seen if undated
        effective_time timestamptz NOT NULL
    );
    CREATE INDEX items_effective_time ON items (effective_time);
    CREATE INDEX items_feed_first_seen ON items (feed_id, first_seen);
    CREATE TABLE classifications (
        item_id text PRIMARY KEY REFERENCES items (id),
        fingerprint text NOT NULL,
        topics jsonb NOT NULL,
        scores jsonb NOT NULL,
        matches jsonb NOT NULL
    );
    CREATE TABLE issues (
        date date PRIMARY KEY,
        built_at timestamptz NOT NULL,
        rules_fingerprint text NOT NULL,
        templates_fingerprint text NOT NULL,
        html_sha256 text NOT NULL,
        text_sha256 text NOT NULL,
        story_count integer NOT NULL,
        issue_json text NOT NULL,
        render_key text NOT NULL DEFAULT ''
    );
    CREATE TABLE issue_stories (
        date date NOT NULL REFERENCES issues (date) ON DELETE CASCADE,
        position integer NOT NULL,
        story_id text NOT NULL,
        part text NOT NULL,
        topic text NOT NULL,
        topics jsonb NOT NULL,
        kicker text NOT NULL,
        title text NOT NULL,
        text text NOT NULL,
        source text NOT NULL,
        url text,
        item_ids jsonb NOT NULL,
        -- weights as SQLite's bm25 columns: title, then kicker, source, text
        search tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('tech_matin_french', title), 'A')
            || setweight(to_tsvector('tech_matin_french', kicker), 'B')
            || setweight(to_tsvector('tech_matin_french', source), 'C')
            || setweight(to_tsvector('tech_matin_french', text), 'D')
        ) STORED,
        PRIMARY KEY (date, position)
    );
    CREATE INDEX issue_stories_search ON issue_stories USING gin (search);
    CREATE TABLE issue_items (
        item_id text NOT NULL,
        date date NOT NULL REFERENCES issues (date) ON DELETE CASCADE,
        PRIMARY KEY (item_id, date)
    );
    CREATE INDEX issue_items_date ON issue_items (date);
    CREATE TABLE runs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind text NOT NULL,
        issue_date date,
        started timestamptz NOT NULL,
        finished timestamptz,
        status text NOT NULL,
        summary text,
        report text
    );
    CREATE TABLE deliveries (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        issue_date date NOT NULL,
        email text NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        message_id text NOT NULL,
        first_attempt timestamptz NOT NULL,
        updated timestamptz NOT NULL,
        handed_over timestamptz,
        reply text,
        batch text,  -- the email job that claimed it
        UNIQUE (issue_date, email)
    );
    CREATE INDEX deliveries_status ON deliveries (issue_date, status);
    CREATE TABLE suppressions (
        email text PRIMARY KEY,
        reason text NOT NULL,
        detail text,
        created timestamptz NOT NULL
    );
    """,
    # 2: editors' decisions on draft issues and their approvals (SQLite's migration 6), kept in
    # the order made (id). No foreign key to issues: rebuilding an issue replaces its row.
    """
    CREATE TABLE editorial_decisions (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        issue_date date NOT NULL,
        action text NOT NULL,
        item_id text NOT NULL,
        editor text NOT NULL,
        decided_at timestamptz NOT NULL,
        section text,
        text text
    );
    CREATE INDEX editorial_decisions_date ON editorial_decisions (issue_date, id);
    CREATE TABLE approvals (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        issue_date date NOT NULL,
        editor text NOT NULL,
        approved_at timestamptz NOT NULL
    );
    CREATE INDEX approvals_date ON approvals (issue_date, id);
    """,
    # 3: an operator's finding on an uncertain delivery (SQLite's migration 8).
    """
    ALTER TABLE deliveries ADD COLUMN settled text, ADD COLUMN settled_at timestamptz;
    """,
    # 4: each item's content digest and each issue's input key (SQLite's migration 9).
    """
    ALTER TABLE items ADD COLUMN content_sha256 text NOT NULL DEFAULT '';
    ALTER TABLE issues ADD COLUMN input_key text NOT NULL DEFAULT '';
    """,
    # 5: the fingerprint of the code each issue was built by (SQLite's migration 10).
    "ALTER TABLE issues ADD COLUMN code_fingerprint text NOT NULL DEFAULT '';",
)


def _version_row(db: psycopg.Connection[Any]) -> int:
    found = db.execute("SELECT version FROM tech_matin_schema").fetchone()
    if found is None:
        return 0
    return int(found["version"] if isinstance(found, dict) else found[0])


def schema_version(db: psycopg.Connection[Any]) -> int:
    exists = db.execute("SELECT to_regclass('tech_matin_schema') IS NOT NULL AS present").fetchone()
    present = exists["present"] if isinstance(exists, dict) else exists[0] if exists else False
    return _version_row(db) if present else 0


def migrate(db: psycopg.Connection[Any]) -> None:
    """Bring the database up to the newest schema (`db` in autocommit mode)."""
    version = schema_version(db)
    if version > len(MIGRATIONS):
        raise PipelineError(f"database schema version {version} is newer than this program knows "
                            f"({len(MIGRATIONS)}); upgrade the pipeline")
    while version < len(MIGRATIONS):
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS tech_matin_schema (version integer NOT NULL)")
            # Another process may have migrated while we waited for the lock: look again under it.
            version = _version_row(db)
            if version >= len(MIGRATIONS):
                break
            db.execute(MIGRATIONS[version])
            db.execute("DELETE FROM tech_matin_schema")
            db.execute("INSERT INTO tech_matin_schema (version) VALUES (%s)", (version + 1,))
            version += 1
