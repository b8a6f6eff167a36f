"""Opening the configured store: which backend, and where its data lives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.store.interface import Store

BACKENDS = ("sqlite", "postgresql")
DATABASE_URL_ENV = "TECH_MATIN_DATABASE_URL"  # the PostgreSQL DSN: never in sources.yaml (it holds a password)


@dataclass(frozen=True)
class StoreTarget:
    """Where an archive's store lives. `path` is the SQLite file; the archive's lock files are
    kept beside it whatever the backend. `dsn` is the PostgreSQL connection string."""

    path: Path
    backend: str = "sqlite"
    dsn: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, backend: str, path: Path, env: Mapping[str, str]) -> StoreTarget:
        """The target of `storage.backend`, the PostgreSQL DSN taken from $TECH_MATIN_DATABASE_URL."""
        if backend == "postgresql":
            dsn = env.get(DATABASE_URL_ENV, "").strip()
            if not dsn:
                raise PipelineError(f"storage.backend is postgresql but ${DATABASE_URL_ENV} is not set "
                                    "(e.g. postgresql://tech_matin@db.example.org/tech_matin)")
            return cls(path=path, backend=backend, dsn=dsn)
        return cls(path=path, backend=backend)

    def exists(self) -> bool:
        """Whether the store was ever created (opening one creates it). A PostgreSQL database is
        created by its administrator; opening it creates the tables."""
        return self.backend == "postgresql" or self.path.exists()

    def __str__(self) -> str:
        if self.backend == "postgresql":
            return "the PostgreSQL database of $" + DATABASE_URL_ENV
        return str(self.path)


def open_store(target: StoreTarget) -> Store:
    """Open (creating and migrating when needed) the store of `target`."""
    if target.backend == "sqlite":
        from pipeline.store.sqlite import SqliteStore

        return SqliteStore(target.path)
    if target.backend == "postgresql":
        from pipeline.store.postgres import PostgresStore  # psycopg is imported only in this mode

        if not target.dsn:
            raise PipelineError(f"storage.backend is postgresql but ${DATABASE_URL_ENV} is not set")
        return PostgresStore(target.dsn)
    raise PipelineError(f"unknown store backend {target.backend!r} (known: {', '.join(BACKENDS)})")
