"""Store stage: items, classifications, issues, runs, feeds' HTTP state, deliveries and search.

The public face of the package is this module: the `Store` interface (`interface.py`, one
protocol per thing kept), the records it takes and returns (`records.py`, plus the stage
records of `pipeline.models`), how an issue is kept (`codec.py`) and `open_store`, which opens
the configured backend (`factory.py`; SQLite in `sqlite/`, one module per table group). All SQL
of the project lives in the backends; nothing of theirs crosses this interface.
"""

from pipeline.store.codec import featured_item_ids, issue_from_json, issue_stories, issue_to_json
from pipeline.store.factory import BACKENDS, StoreTarget, open_store
from pipeline.store.interface import (
    DeliveryStore,
    EditorialStore,
    FeedStore,
    IssueStore,
    ItemStore,
    RunStore,
    SearchStore,
    Store,
    StoreError,
)
from pipeline.store.records import (
    DeliveryRecord,
    DeliveryStatus,
    FeedHealth,
    FeedOutcome,
    IssueStory,
    RunOutcome,
    RunRecord,
    SearchHit,
    StoredIssue,
    Suppression,
)

__all__ = [
    "BACKENDS",
    "DeliveryRecord",
    "DeliveryStatus",
    "DeliveryStore",
    "EditorialStore",
    "FeedHealth",
    "FeedOutcome",
    "FeedStore",
    "IssueStore",
    "IssueStory",
    "ItemStore",
    "RunOutcome",
    "RunRecord",
    "RunStore",
    "SearchHit",
    "SearchStore",
    "Store",
    "StoreError",
    "StoreTarget",
    "StoredIssue",
    "Suppression",
    "featured_item_ids",
    "issue_from_json",
    "issue_stories",
    "issue_to_json",
    "open_store",
]
