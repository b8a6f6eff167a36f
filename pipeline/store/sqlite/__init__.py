"""The SQLite backend of the store: one file, WAL, every write a transaction.

`SqliteStore` is assembled from one class per thing kept (feeds, items, issues, search, runs,
deliveries), all working through the one connection of `SqliteBase`. Only the store package
imports this module; the rest of the pipeline opens a store with `pipeline.store.open_store`.
"""

from __future__ import annotations

from pipeline.store.sqlite.deliveries import SqliteDeliveries
from pipeline.store.sqlite.editorial import SqliteEditorial
from pipeline.store.sqlite.feeds import SqliteFeeds
from pipeline.store.sqlite.issues import SqliteIssues
from pipeline.store.sqlite.items import SqliteItems
from pipeline.store.sqlite.runs import SqliteRuns
from pipeline.store.sqlite.search import SqliteSearch


class SqliteStore(SqliteFeeds, SqliteItems, SqliteIssues, SqliteSearch, SqliteRuns, SqliteDeliveries,
                  SqliteEditorial):
    """The archive in one SQLite file (see pipeline.store.interface.Store for what each method does)."""


__all__ = ["SqliteStore"]
