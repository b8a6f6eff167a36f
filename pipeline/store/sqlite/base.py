"""The SQLite connection every part of the SQLite store works through.

Opened in autocommit mode with WAL (a reader can browse while a run writes); each write is an
explicit BEGIN IMMEDIATE … COMMIT (`_transaction`), each read goes through `_rows`/`_row`. Both
turn sqlite3's exceptions into `StoreError`, so that no backend type leaves the package.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pipeline.errors import PipelineError
from pipeline.store.interface import StoreError
from pipeline.store.sqlite import schema

Args = Sequence[object]


@contextmanager
def store_errors() -> Iterator[None]:
    """sqlite3's exceptions as StoreError."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(str(exc)) from exc


class SqliteBase:
    """An open SQLite database, migrated to the newest schema."""

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
            schema.migrate(self._db, self.path)
        except sqlite3.DatabaseError as exc:
            raise PipelineError(f"{self.path}: cannot open the database: {exc}") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with store_errors():
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception: never half a write."""
        with store_errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: Args = ()) -> list[sqlite3.Row]:
        with store_errors():
            return self._db.execute(sql, args).fetchall()

    def _tuples(self, sql: str, args: Args = ()) -> list[tuple[Any, ...]]:
        """The rows as plain tuples, for a hot path that unpacks them at once (see _rows)."""
        with store_errors():
            cursor = self._db.cursor()
            cursor.row_factory = None
            rows: list[tuple[Any, ...]] = cursor.execute(sql, args).fetchall()
            return rows

    def _row(self, sql: str, args: Args = ()) -> sqlite3.Row | None:
        with store_errors():
            found: sqlite3.Row | None = self._db.execute(sql, args).fetchone()
            return found

    def _count(self, sql: str, args: Args = ()) -> int:
        """The integer a `SELECT count(*) …` answers."""
        found = self._row(sql, args)
        return int(found[0]) if found is not None else 0

    @property
    def schema_version(self) -> int:
        with store_errors():
            return schema.schema_version(self._db)

    def integrity_ok(self) -> bool:
        """SQLite's own check of the file (pages, indexes): what a crash test asks."""
        found = self._row("PRAGMA integrity_check")
        return found is not None and found[0] == "ok"

    def durable_commits(self) -> None:
        # synchronous=FULL: fsync at every commit on this connection from now on.
        with store_errors():
            self._db.execute("PRAGMA synchronous=FULL")
