"""Opening the configured store: which backend, and where its data lives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.store.interface import Store

BACKENDS = ("sqlite",)


@dataclass(frozen=True)
class StoreTarget:
    """Where an archive's store lives. `path` is the SQLite file; the archive's lock files are
    kept beside it whatever the backend."""

    path: Path
    backend: str = "sqlite"

    def exists(self) -> bool:
        """Whether the store was ever created (opening one creates it)."""
        return self.path.exists()

    def __str__(self) -> str:
        return str(self.path)


def open_store(target: StoreTarget) -> Store:
    """Open (creating and migrating when needed) the store of `target`."""
    if target.backend == "sqlite":
        from pipeline.store.sqlite import SqliteStore

        return SqliteStore(target.path)
    raise PipelineError(f"unknown store backend {target.backend!r} (known: {', '.join(BACKENDS)})")
