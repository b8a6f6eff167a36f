"""Typed records passed between the pipeline's stages.

Stages exchange these plain dataclasses, never dicts, so that each stage's
interface is visible in its signatures and checked by type checkers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import overload

# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class FeedSource:
    """One feed of sources.yaml."""

    id: str  # stable slug, unique within the config; keys the feed's state in the store
    name: str  # outlet name shown to readers ("rapporte Numerama")
    url: str  # http(s) URL, or file: URL resolved against the config file's folder
    language: str = "fr"
    weight: float = 1.0  # ranking boost for outlets the editors trust more
    enabled: bool = True


@dataclass(frozen=True)
class NewsletterSettings:
    name: str = "Tech Matin"
    byline: tuple[str, ...] = ()  # "Par …"
    byline_with: tuple[str, ...] = ()  # "Avec …"
    contact_line: str = ""  # "Infos, tuyaux … ? Écrivez à …"
    thanks: str = ""  # footer thanks line
    why_line: str = ""  # footer "why you receive this"
    timezone: str = "Europe/Paris"
    base_url: str = "http://127.0.0.1:8000/"  # public URL of the archive (ends with /)
    issue_time: dt.time = dt.time(6, 0)  # an issue covers the 24 h before this local time
    max_stories_per_section: int = 3
    max_further_reading: int = 8
    summary_chars: int = 420


@dataclass(frozen=True)
class FetchSettings:
    concurrency: int = 64  # per_host keeps each site to a few connections; 304s of every feed in one round trip
    per_host: int = 4
    connect_timeout: float = 10.0
    read_timeout: float = 10.0
    deadline: float = 30.0  # whole-feed budget, retries included
    max_tries: int = 3
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    failure_threshold: int = 10  # consecutive failures before a feed is skipped
    stale_after_days: int = 21  # a readable feed with no new item for this long is reported (0: never)
    user_agent: str = "TechMatinPipeline/0.1 (+https://github.com/tech-matin/pipeline)"


@dataclass(frozen=True)
class ScheduleSettings:
    cron: str = "0 6 * * *"
    timezone: str = "Europe/Paris"
    misfire_grace_seconds: int = 7200
    max_retries: int = 3
    retry_delay_seconds: int = 600
    log_file: str | None = None
    lock_timeout_seconds: float = 60.0  # how long any build waits for another build of the archive
    watch_interval_seconds: int = 300  # how often the scheduler checks for a missed issue (after sleep)


@dataclass(frozen=True)
class WorkerSettings:
    """The `workers:` section of sources.yaml: the distributed mode (storage.backend: postgresql)."""

    min_fetch_interval: int = 15  # minutes: the most often a feed is fetched
    max_fetch_interval: int = 1440  # minutes: the least often (a feed that never publishes)
    email_batch: int = 500  # deliveries one email job claims at a time
    heartbeat_seconds: float = 10.0  # how often a worker says it is alive
    stalled_after_seconds: float = 60.0  # a worker silent this long is dead: its jobs are retried
    tick_seconds: int = 60  # how often periodic tasks run (due feeds, the day's build, maintenance)


@dataclass(frozen=True)
class Config:
    path: Path  # the sources.yaml this came from; relative paths resolve against its folder
    newsletter: NewsletterSettings
    fetch: FetchSettings
    schedule: ScheduleSettings
    feeds: tuple[FeedSource, ...]
    db_path: Path | None = None  # from sources.yaml `storage.db`, overridden by --db
    output_dir: Path | None = None  # from sources.yaml `storage.output`, overridden by --output
    delivery: DeliverySettings | None = None  # from sources.yaml `delivery`; None: no email
    store_backend: str = "sqlite"  # sources.yaml `storage.backend`: sqlite | postgresql
    workers: WorkerSettings = WorkerSettings()  # sources.yaml `workers`


@dataclass(frozen=True)
class DeliverySettings:
    """The `delivery:` section of sources.yaml: sending each issue by email (pipeline/deliver/).

    Credentials are never part of it: only the NAMES of the environment variables holding them.
    """

    from_address: str  # envelope sender and From address, e.g. lettre@techmatin.example.org
    unsubscribe_url: str  # https URL template for RFC 8058 one-click unsubscribe ({email}, {token})
    recipients: Path = Path("recipients.csv")  # CSV or YAML list, resolved against the config's folder
    from_name: str = ""  # display name of From; empty: the newsletter's name
    reply_to: str | None = None
    smtp_host: str = "localhost"
    smtp_port: int | None = None  # None: 587 for starttls, 465 for tls, 25 for none
    security: str = "starttls"  # "starttls" | "tls" | "none" (none: local relays and test servers only)
    tls_ca_file: Path | None = None  # extra CA bundle to trust (relay with a private CA)
    timeout: float = 30.0  # seconds for any one SMTP exchange
    username_env: str = "TECH_MATIN_SMTP_USER"  # environment variable holding the SMTP user name
    password_env: str = "TECH_MATIN_SMTP_PASSWORD"  # environment variable holding the SMTP password
    unsubscribe_secret_env: str = "TECH_MATIN_UNSUBSCRIBE_SECRET"  # key of the {token} HMAC
    unsubscribe_mailto: str = ""  # mailto: template ({email}); empty: mailto the From address
    rate: float = 5.0  # messages per second at most; 0 means no limit
    max_retries: int = 3  # further tries of a recipient after a temporary (4xx / connection) failure
    retry_delay: float = 2.0  # seconds before the first retry; doubles at each retry
    suppress_bounces: bool = True  # a permanent refusal (5xx) puts the address on the suppression list
    send_empty: bool = False  # also mail an issue with no story ("Rien de neuf ce matin")
    # The editor's review (README, "Editorial review"): with require_approval, the issue built
    # (at draft_time when set, else at schedule.cron) is a draft that the scheduled send waits
    # for an editor to approve until approve_by (local time), then sends anyway or holds.
    require_approval: bool = False
    draft_time: dt.time | None = None
    approve_by: dt.time | None = None
    on_no_approval: str = "hold"  # "send_anyway" | "hold"

    @property
    def port(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return {"tls": 465, "none": 25}.get(self.security, 587)


# ---------------------------------------------------------------- fetch


class FetchStatus(StrEnum):
    NEW = "new"  # a body was received (it may still hold no new item)
    UNCHANGED = "unchanged"  # 304 Not Modified
    FAILED = "failed"
    MOVED = "moved"  # body received after a permanent redirect
    SKIPPED = "skipped"  # too many consecutive failures, or disabled


@dataclass(frozen=True)
class FeedState:
    """What the store remembers of a feed between runs."""

    feed_id: str
    url: str | None = None  # URL after a permanent redirect, if any
    etag: str | None = None
    last_modified: str | None = None
    consecutive_failures: int = 0
    last_status: str | None = None
    last_error: str | None = None
    last_success: dt.datetime | None = None
    items_seen: int = 0
    disabled: bool = False


@dataclass(frozen=True)
class FetchResult:
    feed: FeedSource
    status: FetchStatus
    url: str  # the URL actually requested first
    final_url: str | None = None
    body: bytes | None = None
    content_type: str | None = None  # full Content-Type header, charset included
    etag: str | None = None
    last_modified: str | None = None
    http_status: int | None = None
    permanent_redirect: str | None = None  # new URL to store when a 301/308 was followed
    error: str | None = None
    elapsed: float = 0.0
    truncated: bool = False
    retry_after: float | None = None  # seconds the server asked us to wait (429/503 Retry-After)


# ---------------------------------------------------------------- parse


@dataclass(frozen=True)
class Item:
    """One feed entry, cleaned. Text fields are plain text (no markup)."""

    id: str  # stable: hash of feed id + guid (or canonical URL)
    feed_id: str
    source: str  # outlet name
    title: str
    url: str | None  # canonical absolute http(s) URL or None
    summary: str = ""
    content: str = ""
    guid: str | None = None
    language: str = "fr"
    published: dt.datetime | None = None  # UTC, aware; None when the feed gave no usable date
    author: str | None = None
    categories: tuple[str, ...] = ()
    first_seen: dt.datetime | None = None  # UTC; set by the store


@dataclass(frozen=True)
class ParseResult:
    feed: FeedSource
    items: tuple[Item, ...]
    warnings: tuple[str, ...] = ()
    error: str | None = None  # set when the body is not a usable feed
    ttl_minutes: int | None = None  # the feed's own <ttl>: how long it may be cached


# ---------------------------------------------------------------- classify


@dataclass(frozen=True)
class Match:
    topic: str
    rule: str  # rule name as written in topics.yaml
    field: str  # "title" | "summary" | "content"
    text: str  # the original text that matched, as it stands in the field
    start: int  # offsets into the field's text as given to the classifier
    end: int
    weight: float = 1.0


MATCH_FIELDS = ("topic", "rule", "field", "text", "start", "end", "weight")
MATCH_SOURCE_FIELDS = ("title", "summary", "content")  # a MatchRow's field index names one of these

# One explanation in the engine's own layout: (field index, start, end, topic index, rule, weight).
MatchRow = tuple[int, int, int, int, str, float]


@dataclass(frozen=True, eq=False)
class Matches(Sequence[Match]):
    """The explanations of one classification, made into :class:`Match` objects only when read.

    The engine finds a few spans per item and most are never read one by one (a run stores
    them, ``evaluate`` reads those of its errors): it keeps each as a plain row and the
    fields' texts, and a ``Match`` (its matched words sliced from the text) is built when
    the sequence is indexed or iterated. A ``Matches`` equals the tuple of the same
    ``Match`` objects, so code and tests that compare or build explanations as tuples see
    no difference.
    """

    texts: tuple[str, str, str]  # the fields' texts that the offsets index
    topic_ids: tuple[str, ...]  # topic index -> topic id
    rows: tuple[MatchRow, ...]

    def _match(self, row: MatchRow) -> Match:
        field_index, start, end, topic, rule, weight = row
        return Match(self.topic_ids[topic], rule, MATCH_SOURCE_FIELDS[field_index],
                     self.texts[field_index][start:end], start, end, weight)

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> Match: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Match, ...]: ...

    def __getitem__(self, index: int | slice) -> Match | tuple[Match, ...]:
        if isinstance(index, slice):
            return tuple([self._match(row) for row in self.rows[index]])
        return self._match(self.rows[index])

    def __iter__(self) -> Iterator[Match]:
        return map(self._match, self.rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Matches):
            return tuple(self) == tuple(other)
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))

    def for_topic(self, topic: str) -> tuple[Match, ...]:
        if topic not in self.topic_ids:
            return ()
        index = self.topic_ids.index(topic)
        return tuple([self._match(row) for row in self.rows if row[3] == index])

    def records(self) -> list[dict[str, str | int | float]]:
        """Each explanation as a mapping of :data:`MATCH_FIELDS` (what the store writes), no Match built."""
        ids, texts = self.topic_ids, self.texts
        return [{"topic": ids[topic], "rule": rule, "field": MATCH_SOURCE_FIELDS[fi], "text": texts[fi][start:end],
                 "start": start, "end": end, "weight": weight}
                for fi, start, end, topic, rule, weight in self.rows]


def match_records(matches: Sequence[Match]) -> list[dict[str, str | int | float]]:
    """Explanations as mappings of :data:`MATCH_FIELDS`, for storage (lazy ones without building Match objects)."""
    if isinstance(matches, Matches):
        return matches.records()
    return [{name: getattr(m, name) for name in MATCH_FIELDS} for m in matches]


@dataclass(frozen=True)
class Damping:
    """A damper that lowered an item's evidence (topics.yaml ``dampen``), for the explanation.

    The matches' weights are already the damped ones; this says which kind of item made
    them so, by which marker, and where.
    """

    damper: str  # the damper's name in topics.yaml
    field: str  # where its marker is
    text: str  # the marker as it stands in the field
    start: int
    end: int
    factor: float
    # The fields whose evidence it multiplied by ``factor`` (for a damper of passing lines, the
    # marker's own field, and there only the rules that needed the words after the marker).
    scales: tuple[str, ...] = ()
    # The topics it spared: a roundup's stories, told over two sentences (weighed as a lead).
    spared: tuple[str, ...] = ()


@dataclass(frozen=True)
class Classification:
    item_id: str
    topics: tuple[str, ...]  # topics that reached their threshold, in topics.yaml order
    scores: dict[str, float] = field(default_factory=dict)
    # A tuple of Match objects, or the engine's lazy Matches (equal to that tuple).
    matches: Sequence[Match] = ()
    # The dampers that lowered some evidence: at most one item kind per field (the strongest),
    # and the passing-line markers that damped a rule. Not stored (the weights of the stored
    # matches show the damped contributions); `pipeline classify` and `evaluate` show them.
    dampers: tuple[Damping, ...] = ()
    # A teaser (its title and summary hold no rule): how many sentences of its body weighed as its
    # lead (topics.yaml's teaser_lead); 0 otherwise. Not stored either, shown by `classify` and `evaluate`.
    lead_in_body: int = 0

    def matches_for(self, topic: str) -> tuple[Match, ...]:
        if isinstance(self.matches, Matches):
            return self.matches.for_topic(topic)
        return tuple(m for m in self.matches if m.topic == topic)


@dataclass(frozen=True)
class TopicInfo:
    """What later stages need to know of a topic (rules stay in classify)."""

    id: str
    heading: str  # section heading, e.g. "DU CÔTÉ DE BRUXELLES"
    theme: str  # short theme name for AU MENU, e.g. "RGPD"
    description: str = ""


# ---------------------------------------------------------------- compose / render


@dataclass(frozen=True)
class StoredItem:
    """An item with its classification, as compose reads it from the store."""

    item: Item
    classification: Classification


@dataclass(frozen=True)
class SourceRef:
    source: str
    url: str | None


@dataclass(frozen=True)
class Story:
    id: str  # stable: the lead item's id
    kicker: str  # upper case, ends with a full stop
    title: str
    text: str  # summary cut at a sentence boundary
    url: str | None
    source: str
    topics: tuple[str, ...]
    primary_topic: str
    score: float
    item_ids: tuple[str, ...]
    also_on: tuple[SourceRef, ...] = ()  # other outlets carrying the same story
    published: dt.datetime | None = None
    why: tuple[str, ...] = ()  # matched words that put it in the digest


@dataclass(frozen=True)
class MenuTeaser:
    theme: str
    text: str
    story_id: str


@dataclass(frozen=True)
class AgendaEntry:
    date: dt.date
    context: str  # the line's words; for a `later` entry, a few words ("Bureau de l'IA")
    source: str
    url: str | None
    later: bool = False  # beyond the next weeks: said in one short "Plus loin" line


@dataclass(frozen=True)
class Section:
    topic: str
    heading: str
    stories: tuple[Story, ...]


@dataclass(frozen=True)
class Issue:
    date: dt.date
    newsletter: NewsletterSettings
    menu: tuple[MenuTeaser, ...]
    lead: Story | None
    sections: tuple[Section, ...]
    agenda: tuple[AgendaEntry, ...]
    further_reading: tuple[Story, ...]

    @property
    def is_empty(self) -> bool:
        return self.lead is None

    def stories(self) -> tuple[Story, ...]:
        """Every story of the issue once, in reading order."""
        seen: dict[str, Story] = {}
        for story in (
            ([self.lead] if self.lead else [])
            + [s for sec in self.sections for s in sec.stories]
            + list(self.further_reading)
        ):
            seen.setdefault(story.id, story)
        return tuple(seen.values())


# What an editor can do to a draft issue (EditorialDecision.action).
DECISION_ACTIONS: tuple[str, ...] = ("drop", "lead", "move", "kicker", "summary", "add")


@dataclass(frozen=True)
class EditorialDecision:
    """One change an editor made to the draft of an issue, kept in the store and applied by
    compose after the rules, in the order they were made (see compose.apply_decisions).

    `item_id` names a stored item (`Item.id`): the story that tells it for drop, lead, move,
    kicker and summary (a story's id is its lead item's id), the item to add for add."""

    issue_date: dt.date
    action: str  # one of DECISION_ACTIONS
    item_id: str
    editor: str
    decided_at: dt.datetime  # UTC
    section: str | None = None  # move (and optionally add): the topic id of the target section
    text: str | None = None  # kicker, summary: the editor's text


@dataclass(frozen=True)
class Approval:
    """An editor's go for the issue of a date, as it stood at `approved_at`."""

    issue_date: dt.date
    editor: str
    approved_at: dt.datetime  # UTC


@dataclass(frozen=True)
class RenderedIssue:
    date: dt.date
    html: str  # archive page (email-safe HTML)
    text: str  # plain-text digest
