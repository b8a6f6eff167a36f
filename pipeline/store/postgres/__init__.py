"""The PostgreSQL backend of the store (psycopg 3): the same interface as SQLite, for several
machines sharing one database (see README, "Running on several machines").

`PostgresStore` is assembled from one class per thing kept, all working through the one
connection of `PostgresBase`. Only the store package imports this module; the rest of the
pipeline opens a store with `pipeline.store.open_store`.
"""

from __future__ import annotations

from pipeline.store.postgres.deliveries import PostgresDeliveries
from pipeline.store.postgres.editorial import PostgresEditorial
from pipeline.store.postgres.feeds import PostgresFeeds
from pipeline.store.postgres.issues import PostgresIssues
from pipeline.store.postgres.items import PostgresItems
from pipeline.store.postgres.runs import PostgresRuns
from pipeline.store.postgres.search import PostgresSearch


class PostgresStore(PostgresFeeds, PostgresItems, PostgresIssues, PostgresSearch, PostgresRuns, PostgresDeliveries,
                    PostgresEditorial):
    """The archive in one PostgreSQL database (see pipeline.store.interface.Store for each method)."""


__all__ = ["PostgresStore"]
