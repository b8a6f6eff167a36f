"""The store's interface: what every backend offers, area by area, in dataclasses only.

A backend (SQLite today, `pipeline/store/sqlite/`) implements `Store`, the union of the area
protocols below. Nothing of a backend leaks through it: no connection, row, cursor or SQL, and
no backend exception (a backend raises `StoreError` for a failing database, `PipelineError`
for a user's mistake such as an empty search). Every write method is one transaction: it
happens whole or not at all. Times are timezone-aware; the store keeps them in UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Protocol, Self

from pipeline.models import Approval, Classification, EditorialDecision, FeedSource, FeedState, FetchResult, Item
from pipeline.store.records import (
    DeliveryRecord,
    DeliveryStatus,
    FeedHealth,
    IssueStory,
    RunOutcome,
    RunRecord,
    SearchHit,
    StoredIssue,
    Suppression,
)


class StoreError(Exception):
    """The database failed (locked, disk full, corrupt…): not the user's input. The command line
    reports it as `database: <what the backend said>` with exit code 1."""


class FeedStore(Protocol):
    """Feeds' HTTP state between runs (redirects, validators) and their health."""

    def feed_states(self, feeds: Sequence[FeedSource]) -> dict[str, FeedState]:
        """State per configured feed. A redirect stored for an older configured URL is forgotten."""
        ...

    def record_fetch(self, result: FetchResult, new_items: int, at: dt.datetime,
                     parse_error: str | None = None) -> None:
        """Update a feed's HTTP state and health after one fetch (and parse) attempt."""
        ...

    def set_feeds_enabled(self, feed_ids: Iterable[str] | None, enabled: bool) -> int:
        """Re-enable (reset failures) or disable feeds; None means every feed. Returns feeds changed."""
        ...

    def feed_health(self) -> list[FeedHealth]:
        """Every feed ever fetched, by id."""
        ...

    def last_new_item(self, feed_ids: Sequence[str] | None = None) -> dict[str, dt.datetime]:
        """Per feed id (of `feed_ids`, None: every feed), when its newest item was first seen."""
        ...

    def claim_due_feeds(self, feeds: Sequence[FeedSource], now: dt.datetime, hold: dt.timedelta) -> list[str]:
        """The ids of the enabled feeds among `feeds` due for a fetch at `now` (never scheduled, or
        their next fetch time passed), each moved `hold` ahead in the same transaction: callers
        at the same moment never claim one feed twice. In config order."""
        ...

    def schedule_fetch(self, feed_id: str, at: dt.datetime) -> None:
        """When a feed is next due (see claim_due_feeds)."""
        ...

    def feed_item_count(self, feed_id: str, since: dt.datetime) -> int:
        """Items of one feed dated (or, undated, first seen) since `since`."""
        ...


class ItemStore(Protocol):
    """Items as parsed, and their classifications under a given rules fingerprint."""

    def upsert_items(self, items: Iterable[Item]) -> int:
        """Insert new items and refresh changed ones; first_seen never moves. Returns the new count.
        Every item must have its first_seen time (ValueError otherwise, and nothing is written)."""
        ...

    def items_between(self, start: dt.datetime, end: dt.datetime) -> list[Item]:
        """Items whose date (or first-seen time when undated) is in [start, end), oldest first."""
        ...

    def item_digests_between(self, start: dt.datetime, end: dt.datetime) -> list[tuple[str, str]]:
        """(id, content digest) of the items of items_between, in its order, without reading them:
        an item stored again with any change has another digest (codec.item_content_sha256; '' for
        an item not written since the digests were introduced)."""
        ...

    def count_items_between(self, start: dt.datetime, end: dt.datetime) -> int: ...

    def item_count(self) -> int: ...

    def all_items(self) -> list[Item]:
        """Every item, oldest first (by date, or first-seen time when undated)."""
        ...

    def save_classifications(self, classifications: Iterable[Classification], fingerprint: str) -> None: ...

    def classifications(self, item_ids: Sequence[str], fingerprint: str) -> dict[str, Classification]:
        """Stored classifications made with the given rules fingerprint (others are stale), by item id."""
        ...


class IssueStore(Protocol):
    """Built issues: their record, their stories, and the items they feature."""

    def featured_item_ids(self, before: dt.date) -> set[str]:
        """Items already shown in an issue dated before `before`: never repeat them."""
        ...

    def save_issue(self, issue: StoredIssue, stories: Sequence[IssueStory], item_ids: Iterable[str]) -> None:
        """Replace the record of one issue, its stories (and their search entries) and its featured
        items. Every story must carry the issue's date and its position in reading order."""
        ...

    def update_issue_render(self, date: dt.date, html_sha256: str, text_sha256: str, render_key: str) -> None:
        """Record that an issue's pages were rendered again (new neighbours' links)."""
        ...

    def delete_issue(self, date: dt.date, forget_items: Sequence[str] = ()) -> bool:
        """Delete the issue of `date` in one transaction: its record, its stories and their search
        entries, its featured items (free again for other issues), and the editors' decisions on it
        and approvals of it (a new issue of that date starts unreviewed). `forget_items`: stored
        items deleted with it, with their classifications; their feeds lose their HTTP validators
        (ETag, Last-Modified), so the next fetch reads those feeds in full and stores the items
        again as first seen then. False (and nothing changed) when no issue of `date` is stored."""
        ...

    def update_issue_record(self, issue: StoredIssue) -> bool:
        """Replace the record of an issue whose content is unchanged (the stored `issue_json` is
        `issue.issue_json`, so are its stories and featured items): its build time, fingerprints,
        pages' digests, render and input keys, leaving its stories and search entries as they are. False,
        and nothing changed, when no issue of that date holds that content (then `save_issue`)."""
        ...

    def issue(self, date: dt.date) -> StoredIssue | None: ...

    def issues(self) -> list[StoredIssue]:
        """Every stored issue, newest first."""
        ...

    def issue_dates(self) -> list[dt.date]:
        """The dates of every stored issue, oldest first."""
        ...

    def issue_stories(self, date: dt.date | None = None) -> list[IssueStory]:
        """The stories of one issue (or of all), newest issue first, in reading order."""
        ...


class SearchStore(Protocol):
    """Full-text search over the stories of stored issues."""

    def search_stories(self, query: str, limit: int = 20, topic: str | None = None,
                       marks: tuple[str, str] = ("[", "]")) -> list[SearchHit]:
        """Stories matching `query`, best first (a title hit before a text hit, then the newest
        issue). Every word must appear, in any order; "quoted words" as a phrase; word* as a
        prefix. Accents and case are ignored. A query without any word is a PipelineError."""
        ...


class RunStore(Protocol):
    """The history of runs and rebuilds."""

    def start_run(self, kind: str, issue_date: dt.date | None, at: dt.datetime) -> int:
        """Record a run as 'running'; returns its id."""
        ...

    def finish_run(self, run_id: int, status: str, summary: str, outcome: RunOutcome | None,
                   at: dt.datetime) -> None: ...

    def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        ...

    def run_starts(self, kind: str, issue_date: dt.date) -> list[dt.datetime]:
        """When each run of `kind` for `issue_date` started, oldest first."""
        ...

    def failed_runs(self, kind: str, issue_date: dt.date) -> list[dt.datetime]:
        """When the failed runs of one kind for one issue date ended, oldest first."""
        ...


class DeliveryStore(Protocol):
    """Email deliveries, one record per (issue, recipient), and the suppression list."""

    def durable_commits(self) -> None:
        """From now on every commit survives a power cut, not only a crash of the process: a
        delivery record must, or a resumed send could mail twice."""
        ...

    def deliveries(self, date: dt.date) -> dict[str, DeliveryRecord]:
        """Every delivery record of an issue, by recipient address."""
        ...

    def delivery_count(self, date: dt.date) -> int:
        """How many delivery records an issue has, whatever their status (one per reader its
        mailing reached or queued); a count in the database, no record read."""
        ...

    def mailed_dates(self, dates: Sequence[dt.date]) -> set[dt.date]:
        """Those of `dates` whose issue has at least one delivery record (its mailing has begun);
        one index lookup each, whatever the number of readers."""
        ...

    def begin_delivery(self, date: dt.date, email: str, message_id: str, at: dt.datetime) -> DeliveryRecord:
        """Record an attempt as 'sending' before any byte goes to the server. A retry keeps the
        Message-ID of the first attempt: it is the same message."""
        ...

    def mark_handed_over(self, date: dt.date, email: str, at: dt.datetime) -> None:
        """From here on the server may accept the message at any moment: never resend blindly."""
        ...

    def finish_delivery(self, date: dt.date, email: str, status: DeliveryStatus, reply: str | None,
                        at: dt.datetime, suppress_reason: str | None = None) -> None:
        """Record the outcome of an attempt; with `suppress_reason`, also put the address on the
        suppression list in the same transaction."""
        ...

    def settle_deliveries(self, date: dt.date, findings: Sequence[tuple[str, bool]],
                          at: dt.datetime) -> list[DeliveryRecord]:
        """Record an operator's findings on uncertain deliveries of an issue ('sending' and handed
        over: see DeliveryRecord), each (Message-ID, delivered). Delivered: the delivery becomes
        'sent'; lost: 'failed-temporary', which the next send mails again (same Message-ID).
        `settled` and `settled_at` keep the finding. All or nothing: a Message-ID that no delivery
        of the issue has, or whose delivery is not uncertain, is a PipelineError (records.
        settle_problem) and nothing is recorded. Returns the settled records, in order."""
        ...

    def queue_deliveries(self, date: dt.date, messages: Sequence[tuple[str, str]], at: dt.datetime) -> int:
        """Record the deliveries to make, (address, Message-ID) each, as 'queued', so that batches
        can claim them; the Message-ID is fixed here, before any send. An address already recorded
        keeps its record, except a temporary failure, queued again. Returns how many are queued."""
        ...

    def claim_deliveries(self, date: dt.date, batch: str, limit: int, at: dt.datetime) -> list[DeliveryRecord]:
        """Take up to `limit` queued deliveries of an issue for `batch` (each becomes 'sending' of
        that batch), rows locked by another claim skipped. The batch's own 'sending' rows never
        handed over come first: a batch resumed after a crash sends them again, which cannot
        mail twice; a row handed over is never claimed again."""
        ...

    def suppress(self, email: str, reason: str, detail: str | None, at: dt.datetime) -> bool:
        """Add an address to the suppression list; False if it was already there."""
        ...

    def unsuppress(self, email: str) -> Suppression | None:
        """Lift a suppression (the reader subscribed again); returns what was lifted."""
        ...

    def suppressions(self) -> dict[str, Suppression]:
        """Every suppressed address, by address."""
        ...


class EditorialStore(Protocol):
    """The editors' decisions on draft issues, and their approvals."""

    def record_decision(self, decision: EditorialDecision) -> None:
        """Keep one editorial decision; decisions of a date come back in the order recorded."""
        ...

    def decisions_for(self, date: dt.date) -> list[EditorialDecision]:
        """Every decision on the issue of `date`, in the order they were recorded."""
        ...

    def record_approval(self, approval: Approval) -> None:
        """Keep an approval of an issue (an issue may be approved again after later decisions)."""
        ...

    def approval_of(self, date: dt.date) -> Approval | None:
        """The latest approval of the issue of `date`, if any."""
        ...


class Store(FeedStore, ItemStore, IssueStore, SearchStore, RunStore, DeliveryStore, EditorialStore,
            Protocol):
    """One open connection to the archive's store. Use as a context manager, or call close()."""

    @property
    def schema_version(self) -> int:
        """How many migrations the store has been through."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None: ...
