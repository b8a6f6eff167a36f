"""The PostgreSQL connection every part of the PostgreSQL store works through (psycopg 3).

One connection per store, in autocommit mode with the session in UTC; each write is one
`_transaction()` (BEGIN … COMMIT, ROLLBACK on any exception), each read goes through
`_rows`/`_row`. psycopg's exceptions become `StoreError`, so no backend type leaves the package.
Rows come back as dicts, and columns have their natural types (date, timestamptz, jsonb).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, LiteralString, Self

import psycopg
from psycopg.rows import dict_row

from pipeline.errors import PipelineError
from pipeline.store.interface import StoreError
from pipeline.store.postgres import schema

Row = dict[str, Any]
Args = Sequence[object] | Mapping[str, object]


@contextmanager
def store_errors() -> Iterator[None]:
    """psycopg's exceptions as StoreError."""
    try:
        yield
    except psycopg.Error as exc:
        raise StoreError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from exc


def connect(dsn: str, *, autocommit: bool = True) -> psycopg.Connection[Row]:
    """A connection in UTC, or a one-line PipelineError naming the server (never the password)."""
    try:
        db = psycopg.connect(dsn, autocommit=autocommit, row_factory=dict_row, connect_timeout=10)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"cannot connect to the PostgreSQL database: {reason}") from None
    db.execute("SET TIME ZONE 'UTC'")
    return db


class PostgresBase:
    """An open PostgreSQL database, migrated to the newest schema."""

    def __init__(self, dsn: str):
        self._db = connect(dsn)
        with store_errors():
            schema.migrate(self._db)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with store_errors():
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Row]]:
        """One transaction: committed whole, or rolled back on any exception."""
        with store_errors(), self._db.transaction():
            yield self._db

    def _rows(self, sql: LiteralString, args: Args = ()) -> list[Row]:
        with store_errors():
            return self._db.execute(sql, args).fetchall()

    def _row(self, sql: LiteralString, args: Args = ()) -> Row | None:
        with store_errors():
            return self._db.execute(sql, args).fetchone()

    def _count(self, sql: LiteralString, args: Args = ()) -> int:
        found = self._row(sql, args)
        return int(next(iter(found.values()))) if found else 0

    @property
    def schema_version(self) -> int:
        with store_errors():
            return schema.schema_version(self._db)

    def durable_commits(self) -> None:
        # The server's default, said explicitly: a commit returns once its WAL is on disk.
        with store_errors():
            self._db.execute("SET synchronous_commit = on")
