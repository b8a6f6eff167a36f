"""What the store hands out and takes in besides the stage records of `pipeline.models`.

Plain frozen dataclasses, the same for every backend: nothing here knows about SQL.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class StoredIssue:
    """The record of one built issue (its stories are kept apart, see IssueStory)."""

    date: dt.date
    built_at: dt.datetime
    rules_fingerprint: str
    templates_fingerprint: str
    html_sha256: str
    text_sha256: str
    story_count: int
    issue_json: str  # the issue as composed, without newsletter settings (see codec.issue_to_json)
    # sha256 of everything the issue's pages are rendered from (issue, links, settings,
    # templates): equal keys and intact files mean the pages need not be rendered again.
    render_key: str = ""
    # sha256 of what the issue is composed from, as the store holds it, without reading its
    # items: its window's item ids and content digests, those featured before, the editors'
    # decisions, rules, settings, weights and code. Equal keys: the stored issue is what compose
    # would give, its items are not read (the render key then says if its pages are current).
    # '' when not known (built before it).
    input_key: str = ""
    # sha256 of the code the issue was composed and rendered by (see app.code_fingerprint), so that
    # `pipeline archive list` can tell an upgraded program's stale issue. '' when built before it.
    code_fingerprint: str = ""


@dataclass(frozen=True)
class IssueStory:
    """One story of a stored issue, in reading order (`position`), as search and rebuilds see it."""

    date: dt.date
    position: int
    story_id: str
    part: str  # "lead", "section:<topic>" or "further"
    topic: str  # the story's primary topic
    topics: tuple[str, ...]
    kicker: str
    title: str
    text: str
    source: str
    url: str | None
    item_ids: tuple[str, ...]


@dataclass(frozen=True)
class SearchHit:
    """One stored story matching a search, best first (`rank`: lower is better)."""

    date: dt.date
    position: int
    story_id: str
    topic: str
    topics: tuple[str, ...]
    kicker: str
    title: str
    source: str
    url: str | None
    snippet: str  # the best-matching passage, matched words between the given markers
    rank: float


@dataclass(frozen=True)
class FeedHealth:
    """What the store knows of one feed's fetches (`pipeline feeds list`)."""

    feed_id: str
    config_url: str  # the URL in sources.yaml when the feed was last fetched
    url: str | None  # where a permanent redirect led, if any
    etag: str | None
    last_modified: str | None
    consecutive_failures: int
    last_status: str | None  # new / unchanged / moved / failed / skipped
    last_error: str | None
    last_attempt: dt.datetime | None
    last_success: dt.datetime | None
    items_seen: int
    disabled: bool


@dataclass(frozen=True)
class FeedOutcome:
    """One feed's part of a run, as recorded with the run."""

    feed_id: str
    status: str
    error: str | None
    new_items: int
    elapsed: float
    moved_to: str | None = None


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run found, recorded with it for later inspection."""

    date: dt.date
    new_items: int
    feeds: tuple[FeedOutcome, ...]
    stories: int


@dataclass(frozen=True)
class RunRecord:
    id: int
    kind: str  # "run" | "rebuild"
    issue_date: dt.date | None
    started: dt.datetime
    finished: dt.datetime | None
    status: str  # "running" | "ok" | "failed"
    summary: str | None


class DeliveryStatus(StrEnum):
    QUEUED = "queued"  # waiting for an email batch to claim it (distributed mode)
    SENDING = "sending"  # recorded before the SMTP transaction; see DeliveryRecord.handed_over
    SENT = "sent"
    FAILED_PERMANENT = "failed-permanent"
    FAILED_TEMPORARY = "failed-temporary"


@dataclass(frozen=True)
class DeliveryRecord:
    """One recipient's delivery of one issue.

    `handed_over` is set just before the end of the message data goes to the SMTP server: a
    'sending' record without it was never delivered and may be sent again, one with it may
    have been accepted and is never resent automatically."""

    issue_date: dt.date
    email: str
    status: DeliveryStatus
    attempts: int
    message_id: str
    first_attempt: dt.datetime
    updated: dt.datetime
    handed_over: dt.datetime | None
    reply: str | None
    batch: str | None = None  # the email job that claimed it (distributed mode)
    settled: str | None = None  # an operator's finding on it once uncertain: 'delivered' or 'lost'
    settled_at: dt.datetime | None = None


def settle_problem(date: dt.date, message_id: str, record: DeliveryRecord | None) -> str | None:
    """Why an operator's finding cannot be recorded on the delivery with `message_id` (one line),
    or None when that delivery is uncertain: 'sending' and handed over."""
    if record is None:
        return f"no delivery of {date.isoformat()} has Message-ID {message_id}"
    if record.status is DeliveryStatus.SENDING and record.handed_over is not None:
        return None
    state = ("being sent, never handed over to the server (the next send mails it)"
             if record.status is DeliveryStatus.SENDING else str(record.status))
    return (f"Message-ID {message_id} (to {record.email}, {date.isoformat()}) is not an uncertain delivery: "
            f"it is {state}")


@dataclass(frozen=True)
class Suppression:
    email: str
    reason: str  # unsubscribed | bounced
    detail: str | None
    created: dt.datetime
