"""The application object: the flow of DESIGN.md built once from the config.

fetch → parse → store → classify → compose → render → archive (→ deliver). `Pipeline` owns the
store (opened on first use, closed by `close()`), the classifier and the renderer, and offers
what the command line and the scheduler do: `run`, `rebuild`, `send`, `try_rules`, `search`,
and the archive's, feeds' and readers' views. They call it and nothing below it; no stage
calls another stage, so each stays replaceable and testable on its own.

The fetcher and the feed parser are injected (by default `fetch.fetch_feeds` and
`parse.parse_feed`), so a test can give the pipeline its feeds' bytes, or its items, without
an HTTP server when HTTP is not what it tests.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import importlib
import os
import re
import signal
import threading
import time
import zoneinfo
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TextIO

from pipeline.cadence import WEEK, fetch_interval
from pipeline.config import load_config
from pipeline.config.topics import TopicsConfig, load_topics
from pipeline.errors import PipelineError, RunFailed
from pipeline.lock import BuildLock, build_lock, exclusive
from pipeline.models import (
    DECISION_ACTIONS,
    Approval,
    Classification,
    Config,
    DeliverySettings,
    FeedSource,
    FeedState,
    FetchResult,
    FetchSettings,
    FetchStatus,
    Issue,
    Item,
    NewsletterSettings,
    ParseResult,
    RenderedIssue,
    StoredItem,
    Story,
    TopicInfo,
)
from pipeline.models import EditorialDecision as EditorialDecision
from pipeline.pool import CallFailed, CallPool, Imported, Pending, default_workers
from pipeline.store import (
    FeedHealth,
    FeedOutcome,
    RunOutcome,
    SearchHit,
    Store,
    StoredIssue,
    StoreTarget,
    Suppression,
    featured_item_ids,
    issue_from_json,
    issue_stories,
    issue_to_json,
    open_store,
)
from pipeline.store import StoreError as StoreError
from pipeline.text import fold

# The later stages are imported where they are used: a run whose feeds all answer 304 needs
# neither the feed parser, nor the classifier, nor compose, nor the mail modules, and their
# imports were most of its start-up (`python -X importtime`; benchmarks/morning.py).
# What the command line needs of the stages comes through this module, its one entry point
# (tests/test_architecture.py): the names imported "as" themselves are re-exported for it.
if TYPE_CHECKING:
    from pipeline.archive import Archive, PageStarter
    from pipeline.classify import Classifier
    from pipeline.deliver import DeliveryEvent as DeliveryEvent  # re-exported for the CLI's types
    from pipeline.deliver import DeliveryReport, Mailing, Recipient, UnsubscribeRoute
    from pipeline.render import IssueLinks, Renderer

DEFAULT_DB = Path("data/pipeline.sqlite3")
DEFAULT_OUTPUT = Path("output")
# One run stores at most this many items, so a flood of feeds cannot swamp the store or a digest.
MAX_ITEMS_PER_RUN = 5_000
# A rebuild of at least this many issues renders their pages on every core (see Pipeline.render_workers).
PARALLEL_RENDER_MIN = 16

# The package's own folder: the code whose source the stored results' keys hold (see code_fingerprint).
CODE_ROOT = Path(__file__).resolve().parent
# The modules that decide an item's classification: the engine, its normalisation, the text pass
# and the records it fills. The version number is no guide (it does not move with the code).
CLASSIFY_SOURCES = ("classify", "text.py", "models.py")
# The modules that decide an issue: its items' classifications, compose, and the codec the
# composed issue is stored and read back with.
COMPOSE_SOURCES = (*CLASSIFY_SOURCES, "compose.py", "store/codec.py")
# The module that renders an issue's pages with the templates (what it imports, compose, models
# and text, is in the compose key, which the render key starts with).
RENDER_SOURCES = ("render.py",)


class Fetcher(Protocol):
    """Fetches feeds (`pipeline.fetch.fetch_feeds`): one result per feed, in the order given."""

    def __call__(self, feeds: Sequence[FeedSource], settings: FetchSettings, states: Mapping[str, FeedState],
                 on_result: Callable[[FetchResult], None] | None = None) -> list[FetchResult]: ...
    # pipeline.fetch.fetch_feeds also takes while_waiting (see Pipeline._fetch_and_parse).


class FeedParser(Protocol):
    """Turns one fetched body into items (`pipeline.parse.parse_feed`)."""

    def __call__(self, result: FetchResult, seen_at: dt.datetime) -> ParseResult: ...


# ---------------------------------------------------------------- what the pipeline reports


@dataclass(frozen=True)
class FeedReport:
    feed_id: str
    name: str
    status: str  # new / unchanged / failed / moved / skipped
    error: str | None
    new_items: int
    elapsed: float
    moved_to: str | None = None
    warnings: tuple[str, ...] = ()
    fetch: FetchResult | None = None  # the fetch outcome, marked failed when the body was not a feed
    ttl_minutes: int | None = None  # the feed's own <ttl>, if it has one


@dataclass(frozen=True)
class BuildResult:
    date: dt.date
    stories: int
    empty: bool
    skipped: bool  # empty and --skip-empty: nothing written
    changed_files: tuple[Path, ...]
    issue_dir: Path
    item_ids: tuple[str, ...] = ()  # the items the issue features (never repeated by later issues)


@dataclass
class RunReport:
    date: dt.date
    feeds: list[FeedReport] = field(default_factory=list)
    new_items: int = 0
    build: BuildResult | None = None
    duration: float = 0.0
    fetch_duration: float = 0.0  # of `duration`: fetching, parsing and storing

    @property
    def feeds_read(self) -> int:
        return sum(1 for f in self.feeds if f.status in ("new", "unchanged", "moved"))

    @property
    def feeds_failed(self) -> int:
        return sum(1 for f in self.feeds if f.status == "failed")

    def summary(self) -> str:
        """One line: feeds read and failed, new items, stories, time, where the issue is."""
        built = self.build
        where = f"{built.issue_dir}" if built and not built.skipped else "no issue written"
        stories = built.stories if built else 0
        return (f"{self.date.isoformat()}: {self.feeds_read} feeds read, {self.feeds_failed} failed, "
                f"{self.new_items} new items, {stories} stories, {self.duration:.2f} s "
                f"(fetch {self.fetch_duration:.2f} s), {where}")

    def outcome(self) -> RunOutcome:
        """What the store records of this run."""
        return RunOutcome(
            date=self.date, new_items=self.new_items,
            feeds=tuple(FeedOutcome(feed_id=f.feed_id, status=f.status, error=f.error, new_items=f.new_items,
                                    elapsed=f.elapsed, moved_to=f.moved_to) for f in self.feeds),
            stories=self.build.stories if self.build else 0,
        )


@dataclass(frozen=True)
class ComposeInputs:
    """What `compose_issue` makes an issue from. Its repr keys the stored issue (see
    Pipeline._compose_key): an issue composed from equal inputs is not composed again, so an
    argument that compose gains belongs here. The items' classifications are not in it: they
    follow from the items and the rules, whose fingerprint the key holds, and reading them back
    was most of the time of a rebuild with nothing changed."""

    date: dt.date
    items: tuple[Item, ...]  # the window's, as stored
    topics: tuple[TopicInfo, ...]
    settings: NewsletterSettings
    source_weights: Mapping[str, float]
    already_featured: frozenset[str]  # only those of `items`: the others cannot change the issue
    decisions: tuple[EditorialDecision, ...] = ()  # the editors', in the order made

    def __repr__(self) -> str:
        # Equal inputs, equal text: a set's order changes from one process to the next (string hashing).
        fields = (self.date, self.items, self.topics, self.settings, sorted(self.source_weights.items()),
                  sorted(self.already_featured), self.decisions)
        return f"ComposeInputs{fields!r}"

    def compose(self, entries: Sequence[StoredItem]) -> Issue:
        """The issue, from `items` with their classifications, the editors' decisions applied."""
        from pipeline.compose import compose_issue

        return compose_issue(self.date, entries, self.topics, self.settings, self.source_weights,
                             already_featured=self.already_featured, decisions=self.decisions)


@dataclass(frozen=True)
class RuleChange:
    """A stored item whose topics differ between the current rules and a candidate."""

    item: Item
    before: tuple[str, ...]
    after: tuple[str, ...]
    classification: Classification  # under the candidate rules, with the words that matched

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(t for t in self.after if t not in self.before)

    @property
    def removed(self) -> tuple[str, ...]:
        return tuple(t for t in self.before if t not in self.after)


@dataclass(frozen=True)
class UnneededDecision:
    """A stored editorial decision that a candidate rule change would have made unnecessary."""

    decision: EditorialDecision
    reason: str  # e.g. "the candidate rules tag it rgpd"


@dataclass(frozen=True)
class RulePreview:
    items: int  # stored items compared
    changes: tuple[RuleChange, ...]
    unneeded: tuple[UnneededDecision, ...] = ()  # editors' decisions the candidate rules would make unnecessary


# ---------------------------------------------------------------- the editor's desk


@dataclass(frozen=True)
class DraftStory:
    """One story of a draft issue as the editor's desk shows it."""

    story: Story
    part: str  # "lead", "section" or "further"
    section: str  # topic id: of its section; for the lead and further reading, its primary topic
    matched: Mapping[str, tuple[str, ...]]  # per topic of its items, the words that matched, as written
    decisions: tuple[EditorialDecision, ...]  # the decisions naming one of its items, in order


@dataclass(frozen=True)
class DraftView:
    """The issue of a date as it stands, with what the desk needs around it (Pipeline.draft)."""

    date: dt.date
    issue: Issue
    stories: tuple[DraftStory, ...]  # in reading order: lead, sections, further reading
    sections: tuple[TopicInfo, ...]  # the sections a story can be moved to
    decisions: tuple[EditorialDecision, ...]  # every decision on the issue, in order
    approval: Approval | None  # the latest approval, if any
    approved: bool  # approved, and no decision made since that approval
    require_approval: bool  # delivery.require_approval
    published: bool  # listed in the archive (index, topics, Atom feed, search)
    sent: int  # readers' delivery records of the issue (decisions are refused once it is mailed)
    rendered: RenderedIssue  # as readers will see it in their mailbox


@dataclass(frozen=True)
class SendGate:
    """Whether the scheduled send of an issue may go ahead (Pipeline.send_gate)."""

    action: str  # "send" | "wait" (for the approval, until `until`) | "hold" | "send_anyway"
    reason: str  # one line for the log
    until: dt.datetime | None = None  # delivery.approve_by on the issue's day


@dataclass(frozen=True)
class Candidate:
    """A stored item of an issue's window that the rules left out of it (Pipeline.candidates)."""

    item: Item
    topics: tuple[str, ...]  # the topics the rules give it (often none)
    matched: Mapping[str, tuple[str, ...]]  # per topic, the words that matched


@dataclass(frozen=True)
class IssueListing:
    """A stored issue as `pipeline archive list` shows it."""

    date: dt.date
    story_count: int
    outdated: tuple[str, ...]  # "rules", "templates", "code": what changed since it was built
    label: str = ""  # its date in French, "mardi 6 mai 2025"


@dataclass(frozen=True)
class IssueDeletion:
    """What `Pipeline.delete_issue` removes (or would remove) and gives back."""

    date: dt.date
    stories: int  # of the issue as stored (0 when only its pages were left)
    in_store: bool  # False: the store had lost it already (an interrupted deletion), only the site had it
    pages: tuple[Path, ...]  # its pages on the site
    neighbours: tuple[dt.date, ...]  # issues whose previous/next links change
    featured: tuple[str, ...]  # items it featured: other issues may show them again
    forgotten: tuple[str, ...]  # undated items its runs saw first: stored again, as new, by the next fetch
    later_issues: tuple[dt.date, ...]  # stored issues whose window holds an item it featured: rebuild to use it
    done: bool = False


@dataclass(frozen=True)
class FeedStatus:
    """A configured feed and what the store knows of it (`pipeline feeds list`)."""

    feed: FeedSource
    health: FeedHealth | None  # None: never fetched
    newest_item: dt.datetime | None  # when its newest item was first seen


@dataclass(frozen=True)
class Subscribers:
    """The readers of the recipients file and the suppression list (`pipeline subscribers list`)."""

    path: Path
    recipients: tuple[Recipient, ...]
    suppressed: Mapping[str, Suppression]  # by address


# What a reader's unsubscribe request came to (Pipeline.unsubscribe).
UNSUBSCRIBE_OUTCOMES = ("valid", "unsubscribed", "already", "refused")
MAX_ADDRESS_CHARS = 254  # RFC 5321's limit: a longer "address" is no reader's


@dataclass(frozen=True)
class UnsubscribeOutcome:
    """`valid`: the token is the address's and it is not suppressed yet (nothing done, a
    confirmation page); `unsubscribed`: done now; `already`: suppressed before, nothing changed;
    `refused`: the token is not the address's (or either is malformed), nothing changed."""

    email: str  # lower-cased, as the suppression list keeps it
    outcome: str  # one of UNSUBSCRIBE_OUTCOMES


@dataclass(frozen=True)
class _Build:
    """An issue between the two halves of its build (Pipeline._prepare_build, _finish_build)."""

    date: dt.date
    issue: Issue
    issue_json: str
    render_key: str
    input_key: str  # see StoredIssue.input_key
    previous: StoredIssue | None  # its record, if it was built before
    known_dates: tuple[dt.date, ...]  # the dates its pages link among
    links_neighbours: bool  # a new issue, not a held draft: its neighbours' pages link to it
    rendering: Callable[[], RenderedIssue] | None  # its pages; None: those on disk are current
    item_ids: tuple[str, ...]  # the items it features


def _page(template: str, call: Pending[str]) -> Callable[[], str]:
    """A listing page a render process makes; its failure in one line."""

    def result() -> str:
        try:
            return call.result()
        except CallFailed as failure:
            raise RunFailed(f"{template}: the page could not be rendered: {failure}") from None

    return result


def _rendered(date: dt.date, call: Pending[RenderedIssue]) -> Callable[[], RenderedIssue]:
    """The pages a render process makes; its failure in one line."""

    def result() -> RenderedIssue:
        try:
            return call.result()
        except CallFailed as failure:
            raise RunFailed(f"the issue of {date.isoformat()} could not be rendered: {failure}") from None

    return result


# ---------------------------------------------------------------- helpers


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def today_in(timezone: str, now: dt.datetime | None = None) -> dt.date:
    current = now or utc_now()
    return current.astimezone(zoneinfo.ZoneInfo(timezone)).date()


def _staleness(after_days: int, last_new: dt.datetime | None, new_items: int, seen_at: dt.datetime) -> str | None:
    """A feed that answers but has brought nothing new for weeks has often silently broken
    (a moved page still serving an old feed, a CMS export frozen): say so."""
    if not after_days or new_items or last_new is None:
        return None
    days = (seen_at - last_new).days
    if days < after_days:
        return None
    return f"no new item for {days} days (since {last_new:%Y-%m-%d}): check that the feed still works"


# Signals a process is sent (by a user, a service manager, a terminal), not those of its own faults.
_SENT_SIGNALS = frozenset(getattr(signal, name) for name in (
    "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGPIPE", "SIGWINCH")
    if hasattr(signal, name))


def _one_then_other(first: Callable[[], None], then: Callable[[], None]) -> None:
    first()
    then()


def _quietly(work: Callable[[], None]) -> None:
    """Work done ahead of need, in a thread: a failure is left for the code that needs the work
    to meet and report (a cached_property keeps nothing when it raises)."""
    with contextlib.suppress(Exception):
        work()


def _bodies_expected(feeds: Sequence[FeedSource], states: Mapping[str, FeedState]) -> bool:
    """Whether a feed is asked for without validators (ETag, Last-Modified), so that it answers
    with a body to parse: a new archive, a new feed, a server that sends none, a file."""
    for feed in feeds:
        state = states.get(feed.id)
        if feed.enabled and (state is None or not (state.etag or state.last_modified)):
            return True
    return False


def _has_body(result: FetchResult) -> bool:
    """Whether a fetch result brought a body to parse (not a 304, a failure or a skip)."""
    return result.body is not None and result.status in (FetchStatus.NEW, FetchStatus.MOVED)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.cache
def code_fingerprint(root: Path, sources: tuple[str, ...]) -> str:
    """sha256 of the bytes of the .py files of `sources` (modules and packages, relative to
    `root`), each after its path: a stored result made by other code is stale. Read once per
    process (about 1 ms for the compose sources, 220 kB); an absent source counts as empty."""
    digest = hashlib.sha256()
    for source in sources:
        path = root / source
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode("utf-8") + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def _stands_approved(approval: Approval | None, decisions: Sequence[EditorialDecision]) -> bool:
    """An approval, and no editorial decision made after it (a later decision needs a new one)."""
    return approval is not None and all(d.decided_at <= approval.approved_at for d in decisions)


def _matched_words(entries: Sequence[StoredItem]) -> dict[str, tuple[str, ...]]:
    """Per topic of the items' classifications, the words that matched, as written, once each."""
    matched: dict[str, dict[str, None]] = {}
    for entry in entries:
        for topic in entry.classification.topics:
            matched.setdefault(topic, {})
        for match in entry.classification.matches:
            if match.topic in matched:
                matched[match.topic].setdefault(match.text, None)
    return {topic: tuple(words) for topic, words in matched.items()}


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", fold(text))


def _has_term(tokens: Sequence[str], term: tuple[str, ...]) -> bool:
    """Whether folded `tokens` hold a search term: its words in a row ("*" last: the last word is a prefix)."""
    prefix = term[-1] == "*"
    words = term[:-1] if prefix else term
    size = len(words)
    for start in range(len(tokens) - size + 1):
        window = tokens[start: start + size]
        if window[:-1] == list(words[:-1]) and (
                window[-1].startswith(words[-1]) if prefix else window[-1] == words[-1]):
            return True
    return False


def delivery_summary(report: DeliveryReport) -> str:
    """The one-line summary of a send (`pipeline send`)."""
    from pipeline.deliver import summarize_delivery

    return summarize_delivery(report)


# ---------------------------------------------------------------- rules on JSONL items, without an archive


def classify_lines(topics: TopicsConfig, lines: Sequence[str], source: str, out: TextIO) -> int:
    """Classify JSONL items (`pipeline classify`): one JSON line of topics, scores and matches per
    item to `out`; returns the number of items."""
    from pipeline.classify import Classifier
    from pipeline.classify.jsonl import classify_jsonl

    return classify_jsonl(Classifier.compile(topics), lines, out, source)


def evaluate_files(topics: TopicsConfig, files: Sequence[tuple[Sequence[str], str]]) -> str:
    """Precision, recall and F1 of the rules on labelled JSONL (`pipeline evaluate`): the report
    of each (lines, name) given, then of their total, as text."""
    from pipeline.classify import Classifier
    from pipeline.classify.evaluate import evaluate, format_reports

    classifier = Classifier.compile(topics)
    return format_reports([evaluate(classifier, list(lines), name) for lines, name in files])


def suggest_terms(topics: TopicsConfig, lines: Sequence[str], source: str, stored: Sequence[Item],
                  topic: str | None, limit: int) -> str:
    """Terms that would catch the labelled items the rules miss (`pipeline suggest-rules`), tried
    on the labelled items and on `stored` ones, as text. Writes nothing."""
    from pipeline.classify.suggest import format_suggestions, read_labelled, suggest_rules

    items = read_labelled(list(lines), source, topics.ids)
    return format_suggestions(suggest_rules(topics, items, list(stored), topic=topic, limit=limit), source)


# ---------------------------------------------------------------- the pipeline


class Pipeline:
    """The pipeline of one archive: its config and rules, its store, its output folder.

    Use as a context manager (or call `close()`): the store is opened on first use and stays
    open until then. One object per thread: a store connection is not shared between threads.
    """

    def __init__(self, config: Config, topics: TopicsConfig, *, store: StoreTarget, output_dir: Path,
                 templates_dir: Path | None = None, fetcher: Fetcher | None = None,
                 parser: FeedParser | None = None, parse_workers: int | None = None,
                 render_workers: int | None = None, code_root: Path | None = None):
        self.config = config
        self.topics = topics
        self.store_target = store
        self.output_dir = Path(output_dir)
        self._templates_dir = Path(templates_dir) if templates_dir is not None else None  # None: render's default
        self._fetcher = fetcher  # None: pipeline.fetch.fetch_feeds
        self._own_fetcher = fetcher is None  # fetch_feeds, which says when every request is out
        self._parser = parser  # None: pipeline.parse.parse_feed
        self.parse_workers = parse_workers  # processes that parse feeds; None: one per core, 1: in this process
        # Processes that render the pages of a rebuild; None: one per core when it rebuilds at least
        # PARALLEL_RENDER_MIN issues (starting them costs more than rendering a few), 1: in this process.
        self.render_workers = render_workers
        self._store: Store | None = None
        # Whose source the stored results are keyed by (see code_fingerprint): this package unless told.
        self.code_root = CODE_ROOT if code_root is None else Path(code_root)

    @classmethod
    def from_files(cls, config_path: Path, topics_path: Path, *, db: Path | None = None, output: Path | None = None,
                   templates: Path | None = None, fetcher: Fetcher | None = None,
                   parser: FeedParser | None = None) -> Pipeline:
        """Load sources.yaml and topics.yaml (errors name file, line and key). `db` and `output`
        override the config's `storage:` section (default data/pipeline.sqlite3 and output/)."""
        config = load_config(Path(config_path))
        topics = load_topics(Path(topics_path))
        store = StoreTarget.from_settings(config.store_backend, Path(db or config.db_path or DEFAULT_DB), os.environ)
        return cls(config, topics, store=store,
                   output_dir=Path(output or config.output_dir or DEFAULT_OUTPUT),
                   templates_dir=templates, fetcher=fetcher, parser=parser)

    # -- what it owns

    @property
    def db_path(self) -> Path:
        return self.store_target.path

    @property
    def store(self) -> Store:
        """The archive's store, opened (created if needed) on first use."""
        if self._store is None:
            self._store = open_store(self.store_target)
        return self._store

    @property
    def templates_dir(self) -> Path:
        if self._templates_dir is None:
            from pipeline.render import DEFAULT_TEMPLATES

            self._templates_dir = DEFAULT_TEMPLATES
        return self._templates_dir

    @property
    def fetcher(self) -> Fetcher:
        if self._fetcher is None:
            from pipeline.fetch import fetch_feeds

            self._fetcher = fetch_feeds
        return self._fetcher

    @property
    def parser(self) -> FeedParser:
        if self._parser is None:
            # By name: the parse processes import it (feedparser, lxml) and this one need not.
            self._parser = Imported[ParseResult]("pipeline.parse", "parse_feed")
        return self._parser

    @functools.cached_property
    def classifier(self) -> Classifier:
        """The rules compiled (once); compiling proves every rule is usable."""
        from pipeline.classify import Classifier

        return Classifier.compile(self.topics)

    @functools.cached_property
    def renderer(self) -> Renderer:
        from pipeline.render import Renderer

        return Renderer(self.templates_dir)

    @property
    def templates_fingerprint(self) -> str:
        """sha256 of the templates, computed once, by the renderer, which loads none of them for
        it: a run with nothing to render needs only this."""
        return self.renderer.fingerprint

    @functools.cached_property
    def classification_key(self) -> str:
        """What stored classifications are kept under: the rules' fingerprint and that of the code
        that classifies (CLASSIFY_SOURCES), so that an upgrade of the engine classifies again."""
        return _sha(self.topics.fingerprint + "\0" + code_fingerprint(self.code_root, CLASSIFY_SOURCES))

    @property
    def compose_code(self) -> str:
        """Fingerprint of the code an issue is composed by (COMPOSE_SOURCES), part of its keys."""
        return code_fingerprint(self.code_root, COMPOSE_SOURCES)

    @functools.cached_property
    def build_code(self) -> str:
        """Fingerprint of the code an issue is composed and rendered by (COMPOSE_SOURCES and
        RENDER_SOURCES), kept with it so that `archive list` can tell an upgrade made it stale."""
        return _sha(self.compose_code + "\0" + code_fingerprint(self.code_root, RENDER_SOURCES))

    @functools.cached_property
    def topic_info(self) -> tuple[TopicInfo, ...]:
        return self.topics.info()

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _existing_store(self) -> Store:
        """The store, refusing to create an empty one for a command that only reads it."""
        if self._store is None and not self.store_target.exists():
            raise PipelineError(f"{self.db_path}: no such database; run `pipeline run` first")
        return self.store

    def _check_templates(self) -> None:
        """A missing templates folder fails before a build takes the lock. The rules are compiled
        and the templates loaded only when an issue needs them: a run whose feeds all answer 304,
        or a rebuild with nothing changed, composes and renders nothing."""
        if not self.templates_dir.is_dir():
            raise FileNotFoundError(f"templates folder not found: {self.templates_dir}")

    def today(self, now: dt.datetime | None = None) -> dt.date:
        """Today in the newsletter's time zone: the default issue date."""
        return today_in(self.config.newsletter.timezone, now)

    @contextmanager
    def build_lock(self, timeout: float | None, purpose: str, held: BuildLock | None = None) -> Iterator[BuildLock]:
        """Hold the archive's build lock (see pipeline.lock), waiting at most `timeout` seconds
        (None: schedule.lock_timeout_seconds). `held`: a lock the caller already holds."""
        wait = self.config.schedule.lock_timeout_seconds if timeout is None else timeout
        with build_lock(self.db_path, wait, purpose, held=held) as lock:
            yield lock

    # -- the daily job

    def run(self, date: dt.date | None = None, *, now: dt.datetime | None = None, retry_failed: bool = False,
            skip_empty: bool = False, on_result: Callable[[FetchResult], None] | None = None,
            lock_timeout: float | None = None, lock: BuildLock | None = None,
            while_waiting: Callable[[], None] | None = None) -> RunReport:
        """The daily job: fetch every feed, then build the issue of `date` (default: today).
        Holds the archive's build lock throughout (waiting up to `lock_timeout`, default
        schedule.lock_timeout_seconds); `lock` is one the caller already holds (the scheduler).
        `while_waiting`: the caller's preparations, made while the feeds' answers are awaited
        (see pipeline.fetch.fetch_feeds), after the build's own (see _prepare_build_while_waiting)."""
        started = time.monotonic()
        now = now or utc_now()
        date = date or self.today(now)
        report = RunReport(date=date)
        self._check_templates()
        with self.build_lock(lock_timeout, f"pipeline run {date}", held=lock):
            store = self.store
            run_id = store.start_run("run", date, now)
            status = "failed"
            try:
                if retry_failed:
                    store.set_feeds_enabled(None, enabled=True)
                fetch_started = time.monotonic()
                report.feeds = self.fetch_and_store(
                    date, now, on_result=on_result, warm_up=self._prepare_build_in_thread,
                    while_waiting=functools.partial(self._prepare_build_while_waiting, then=while_waiting))
                report.fetch_duration = time.monotonic() - fetch_started
                report.new_items = sum(f.new_items for f in report.feeds)
                if report.feeds_read == 0:
                    raise RunFailed(
                        f"no feed could be read ({report.feeds_failed} failed, "
                        f"{sum(1 for f in report.feeds if f.status == 'skipped')} skipped); no issue built",
                        report=report,
                    )
                report.build = self.build_issue(date, now, skip_empty=skip_empty)
                status = "ok"
            finally:
                report.duration = time.monotonic() - started
                store.finish_run(run_id, status, report.summary(), report.outcome(), utc_now())
        return report

    # -- preparing the build while the feeds answer (run): one step in two halves, neither
    # repeating the other's work. A failure in either is left to the build, which meets it again
    # and reports it.

    def _prepare_build_while_waiting(self, then: Callable[[], None] | None = None) -> None:
        """The main thread's half, made once every request is out, whatever the feeds answer:
        the compose, render and archive modules imported and the templates' fingerprint computed,
        most of what a run whose feeds all answer 304 does after its fetch. Then `then`, the
        caller's."""
        with contextlib.suppress(Exception):
            for module in ("pipeline.compose", "pipeline.render", "pipeline.archive"):
                importlib.import_module(module)
            self.templates_fingerprint  # noqa: B018  # computed and kept
        if then is not None:
            then()

    def _prepare_build_in_thread(self) -> None:
        """The warm-up thread's half, made only when new items are expected (see _fetch_and_parse),
        started just before the main thread's: what building an issue of new items needs first,
        the rules compiled and the templates compiled."""
        from pipeline.classify.normalize import fast_bytes

        self.classifier  # noqa: B018  # compiled and kept
        fast_bytes("\u2013")  # a character outside Latin-1 makes the fold build its table of such letters
        self.renderer.preload()

    def _seen_at(self, date: dt.date, now: dt.datetime) -> dt.datetime:
        """When items first seen in this run count as seen. Building a past date stamps undated
        items at that issue's cut-off, so a backfill puts them in the issue being built."""
        from pipeline.compose import issue_window

        _, window_end = issue_window(date, self.config.newsletter)
        return min(now, window_end - dt.timedelta(seconds=1))

    def fetch_and_store(self, date: dt.date, now: dt.datetime,
                        on_result: Callable[[FetchResult], None] | None = None,
                        feeds: Sequence[FeedSource] | None = None, classify: bool = False,
                        warm_up: Callable[[], None] | None = None,
                        while_waiting: Callable[[], None] | None = None) -> list[FeedReport]:
        """Fetch every feed (or only `feeds`), parse what came back, store new items and each
        feed's health. Items first seen now count for the issue of `date` (see _seen_at). With
        `classify`, the items stored are also classified (the workers' feed jobs). `warm_up` is
        run in a thread while the feeds answer, when new items are expected (see _fetch_and_parse);
        `while_waiting` once every request is out (see pipeline.fetch.fetch_feeds)."""
        store = self.store
        feeds = list(self.config.feeds if feeds is None else feeds)
        states = store.feed_states(feeds)
        seen_at = self._seen_at(date, now)
        last_new = store.last_new_item(None if len(feeds) == len(self.config.feeds) else [f.id for f in feeds])
        reports: list[FeedReport] = []
        budget = MAX_ITEMS_PER_RUN
        # Stored in the order of the feeds, so the run's item budget falls as in a sequential run,
        # each feed as soon as it is parsed, while the others are.
        with contextlib.closing(self._fetch_and_parse(feeds, states, seen_at, on_result, warm_up,
                                                        while_waiting)) as results:
            for result, parsed in results:
                new_items = 0
                ttl: int | None = None
                parse_error: str | None = None
                warnings: tuple[str, ...] = ()
                if parsed is not None:
                    parse_error = parsed.error
                    warnings = parsed.warnings
                    items = parsed.items[:budget]
                    if len(items) < len(parsed.items):
                        warnings += (f"run limit of {MAX_ITEMS_PER_RUN} items reached: "
                                     f"{len(parsed.items) - len(items)} items of this feed left for the next run",)
                    budget -= len(items)
                    if items:
                        new_items = store.upsert_items(items)
                        if classify:
                            store.save_classifications([self.classifier.classify(i) for i in items],
                                                       self.classification_key)
                    ttl = parsed.ttl_minutes
                store.record_fetch(result, new_items, now, parse_error=parse_error)
                stale = _staleness(self.config.fetch.stale_after_days, last_new.get(result.feed.id), new_items, seen_at)
                if stale and not parse_error and result.status is not FetchStatus.FAILED:
                    warnings += (stale,)
                status = "failed" if parse_error else str(result.status)
                if parse_error:
                    result = dataclasses.replace(result, status=FetchStatus.FAILED, error=parse_error)
                reports.append(FeedReport(
                    feed_id=result.feed.id, name=result.feed.name, status=status, error=result.error or parse_error,
                    new_items=new_items, elapsed=result.elapsed, moved_to=result.permanent_redirect, warnings=warnings,
                    fetch=result, ttl_minutes=ttl,
                ))
        return reports

    def _fetch_and_parse(self, feeds: Sequence[FeedSource], states: Mapping[str, FeedState], seen_at: dt.datetime,
                         on_result: Callable[[FetchResult], None] | None,
                         warm_up: Callable[[], None] | None = None,
                         while_waiting: Callable[[], None] | None = None,
                         ) -> Generator[tuple[FetchResult, ParseResult | None], None, None]:
        """Every feed's fetch result, in the order of `feeds`, with its body parsed (None: no body),
        each given as soon as its parse is done (close the iterator if you stop before the end).
        Parses while fetching, on every core: each body goes to a process pool as soon as it
        arrives (feedparser is pure Python and holds the GIL). Whatever one body provokes, an
        exception or its worker process dying, fails that feed alone, with a one-line reason.

        When bodies are expected (a feed asked for without validators), the pool's processes
        start before the fetch and import the parser while this process imports the fetcher and
        waits for the first answers, and `warm_up` runs in a thread meanwhile (from the moment
        every request is out, with `while_waiting` and our own fetcher): time that a run would
        otherwise spend idle, 250 ms per round trip on the benchmark's feeds."""
        with ExitStack() as stack:
            pools: list[CallPool[ParseResult]] = []  # made on the first body: a run of 304s loads no parser

            def pool() -> CallPool[ParseResult]:
                if not pools:  # one feed (a worker's feed job) has nothing to spread: no process started
                    workers = 1 if len(feeds) == 1 else self.parse_workers
                    pools.append(stack.enter_context(CallPool(self.parser, workers)))
                return pools[0]

            def parse(result: FetchResult) -> Pending[ParseResult]:
                return pool().submit(result, seen_at)

            expected = _bodies_expected(feeds, states)
            if expected:
                pool().start()  # the processes import the parser while this one imports the fetcher
            fetcher = self.fetcher

            def start_warm_up() -> None:
                assert warm_up is not None
                thread = threading.Thread(target=_quietly, args=(warm_up,), name="warm-up")
                # Started with the signals a process is sent blocked, which it keeps: a SIGTERM that
                # the kernel gave to it would leave this thread's handler waiting until the event
                # loop wakes (a slow feed: its deadline); blocked there, the signal comes here.
                mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SENT_SIGNALS)
                try:
                    thread.start()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                stack.callback(thread.join)  # done long before the parse; never left running

            if expected and warm_up is not None:
                if while_waiting is not None and self._own_fetcher:
                    # Once every request is out: the thread does not slow them down.
                    while_waiting = functools.partial(_one_then_other, start_warm_up, while_waiting)
                else:
                    start_warm_up()

            calls: dict[int, Pending[ParseResult]] = {}

            def arrived(result: FetchResult) -> None:
                if _has_body(result):
                    calls[id(result)] = parse(result)
                if on_result is not None:
                    on_result(result)

            if while_waiting is None:
                results = fetcher(feeds, self.config.fetch, states, on_result=arrived)
            elif self._own_fetcher:
                from pipeline.fetch import fetch_feeds

                results = fetch_feeds(feeds, self.config.fetch, states, on_result=arrived, while_waiting=while_waiting)
            else:  # a fetcher of the caller's cannot say when its requests are out: before it
                while_waiting()
                results = fetcher(feeds, self.config.fetch, states, on_result=arrived)
            # A fetcher that did not report a result as it came: its parse starts now.
            pending = [(result, (calls.get(id(result)) or parse(result)) if _has_body(result) else None)
                       for result in results]
            for result, call in pending:
                if call is None:
                    yield result, None
                    continue
                try:
                    parsed = call.result()
                except CallFailed as failure:
                    parsed = ParseResult(feed=result.feed, items=(), error=f"could not parse: {failure}")
                yield result, parsed

    # -- building issues

    def window_items(self, date: dt.date) -> list[Item]:
        """The stored items of an issue's window."""
        from pipeline.compose import issue_window

        start, end = issue_window(date, self.config.newsletter)
        return self.store.items_between(start, end)

    def classified_window(self, date: dt.date, items: Sequence[Item] | None = None) -> list[StoredItem]:
        """The items of an issue's window (`items` when the caller has read them) with their
        classification under the current rules and code (see classification_key)."""
        store, fingerprint = self.store, self.classification_key
        items = self.window_items(date) if items is None else items
        known = store.classifications([i.id for i in items], fingerprint)
        missing = [self.classifier.classify(i) for i in items if i.id not in known]
        if missing:
            store.save_classifications(missing, fingerprint)
            known.update({c.item_id: c for c in missing})
        return [StoredItem(item=i, classification=known[i.id]) for i in items]

    def _render_key(self, compose_key: str, issue_json: str, links: IssueLinks) -> str:
        """Everything an issue's pages are rendered from (see StoredIssue.render_key), after the
        key of what the issue was composed from (see _compose_key) and a "/"."""
        return compose_key + "/" + _sha("\0".join((issue_json, repr(self.topic_info), repr(links),
                                                   repr(self.config.newsletter), self.templates_fingerprint,
                                                   code_fingerprint(self.code_root, RENDER_SOURCES))))

    def _compose_key(self, inputs: ComposeInputs) -> str:
        """Everything compose reads (it is deterministic): the rules, and the code that ran too
        (the classifier's, compose's and the codec's source: see compose_code)."""
        return _sha("\0".join((self.compose_code, self.topics.fingerprint, repr(inputs))))

    def _input_key(self, date: dt.date, digests: Sequence[tuple[str, str]], featured: frozenset[str],
                   decisions: tuple[EditorialDecision, ...]) -> str:
        """What the compose key covers, the window's items by their ids and content digests (see
        StoredIssue.input_key): computed without reading the items."""
        return _sha("\0".join((
            self.compose_code, date.isoformat(), self.topics.fingerprint, repr(self.topic_info),
            repr(self.config.newsletter), repr(self._source_weights()), repr(tuple(digests)), repr(sorted(featured)),
            repr(decisions))))

    def _source_weights(self) -> dict[str, float]:
        return {f.id: f.weight for f in self.config.feeds}

    def new_archive(self) -> Archive:
        """The static site in the output folder (one Archive can serve several builds)."""
        newsletter = self.config.newsletter
        from pipeline.archive import Archive

        return Archive(self.output_dir, self.renderer, newsletter.base_url, newsletter.name)

    def build_issue(self, date: dt.date, now: dt.datetime, *, skip_empty: bool = False,
                    archive: Archive | None = None, publish: bool = True,
                    featured_before: set[str] | None = None) -> BuildResult:
        """Compose, render and publish the issue of `date` from what is stored; no network, no lock
        (`run` and `rebuild` hold it). `archive` lets several builds share one Archive (its
        `written` list); `publish=False` leaves the pages that list issues (index, topics, feed,
        search) to the caller, who publishes once. `featured_before`: the items of every issue
        before `date`, when the caller already knows them."""
        if archive is None:
            archive = self.new_archive()
        with archive.parallel_writes():  # the caller's block, if it opened one (rebuild)
            build = self._prepare_build(date, archive, featured_before, skip_empty=skip_empty, renders=None)
            if isinstance(build, BuildResult):
                return build
            return self._finish_build(build, now, archive, publish=publish)

    def _prepare_build(self, date: dt.date, archive: Archive, featured_before: set[str] | None, *, skip_empty: bool,
                       renders: CallPool[RenderedIssue] | None,
                       stored_dates: Sequence[dt.date] | None = None) -> _Build | BuildResult:
        """The first half of build_issue: the issue composed (or the stored one, when composed from
        the same inputs), its pages' key, and their rendering started (by `renders`' processes, if
        given) unless the pages on disk are current. A BuildResult: an empty issue skipped.
        `stored_dates`: the dates of the stored issues, when the caller knows them."""
        store, config = self.store, self.config
        from pipeline.compose import issue_window

        digests = store.item_digests_between(*issue_window(date, config.newsletter))
        featured = store.featured_item_ids(before=date) if featured_before is None else featured_before
        decisions = tuple(store.decisions_for(date))
        known_dates = list(store.issue_dates() if stored_dates is None else stored_dates)
        is_new_date = date not in known_dates
        # A draft waiting for approval is left out of its neighbours' links (see held_drafts).
        held = self.held_drafts([date])
        known_dates = self._listed_around(date, known_dates)
        previous = None if is_new_date else store.issue(date)
        input_key = self._input_key(date, digests, frozenset(i for i, _ in digests if i in featured), decisions)
        if previous is not None and previous.input_key == input_key:
            # Built from the same stored inputs: composing again would give the stored issue (compose
            # is deterministic), and its items need not even be read.
            issue_json = previous.issue_json
            issue = issue_from_json(issue_json, config.newsletter)
            compose_key = previous.render_key.partition("/")[0]
        else:
            items = self.window_items(date)
            inputs = ComposeInputs(date=date, items=tuple(items), topics=self.topic_info, settings=config.newsletter,
                                   source_weights=self._source_weights(),
                                   already_featured=frozenset(i.id for i in items if i.id in featured),
                                   decisions=decisions)
            compose_key = self._compose_key(inputs)
            if previous is not None and previous.render_key.partition("/")[0] == compose_key:
                # Composed from the same inputs before: the stored issue is what compose would give again.
                issue_json = previous.issue_json
                issue = issue_from_json(issue_json, config.newsletter)
            else:
                issue = inputs.compose(self.classified_window(date, items))
                issue_json = issue_to_json(issue)
        if issue.is_empty and skip_empty:
            return BuildResult(date=date, stories=0, empty=True, skipped=True, changed_files=(),
                               issue_dir=self.output_dir / date.isoformat())
        links = archive.issue_links(date, known_dates)
        render_key = self._render_key(compose_key, issue_json, links)
        rendering: Callable[[], RenderedIssue] | None = None
        if previous is not None and previous.render_key == render_key and \
                archive.has_issue(date, previous.html_sha256, previous.text_sha256):
            pass  # same inputs, pages intact: rendering again would give the same bytes (it is deterministic)
        elif renders is None:
            rendering = functools.partial(self.renderer.render_issue, issue, self.topic_info, links)
        else:
            from pipeline.render import load_renderer

            if not renders.started:  # the templates compiled once, here: the processes forked next start with them
                load_renderer(self.templates_dir, self.renderer.fingerprint)
            rendering = _rendered(date, renders.submit(self.templates_dir, self.renderer.fingerprint, issue,
                                                       self.topic_info, links))
        return _Build(date=date, issue=issue, issue_json=issue_json, render_key=render_key, input_key=input_key,
                      previous=previous, known_dates=tuple(known_dates),
                      links_neighbours=is_new_date and date not in held, rendering=rendering,
                      item_ids=tuple(featured_item_ids(issue)))

    def _finish_build(self, build: _Build, now: dt.datetime, archive: Archive, *, publish: bool) -> BuildResult:
        """The second half of build_issue: the pages written, the record stored, the neighbours'
        links and the listing pages updated."""
        store, date, issue, previous = self.store, build.date, build.issue, build.previous
        written_before = len(archive.written)
        if build.rendering is None:
            assert previous is not None
            html_sha, text_sha = previous.html_sha256, previous.text_sha256
        else:
            rendered = build.rendering()
            archive.write_issue(rendered)
            html_sha, text_sha = _sha(rendered.html), _sha(rendered.text)
        record = StoredIssue(
            date=date, built_at=now, rules_fingerprint=self.topics.fingerprint,
            templates_fingerprint=self.templates_fingerprint, html_sha256=html_sha, text_sha256=text_sha,
            story_count=len(issue.stories()), issue_json=build.issue_json, render_key=build.render_key,
            input_key=build.input_key, code_fingerprint=self.build_code,
        )
        if previous is None or dataclasses.replace(previous, built_at=now) != record:
            # An identical record is not written again: a rebuild with nothing changed writes nothing.
            # The same content (a template edit, a rule change that changed nothing here): the record
            # alone is replaced, not the stories and their search entries (most of such a rebuild's store time).
            if previous is None:
                archive.wait_for_issue(date)  # a stored issue has its pages (the build job checks the record only)
            if previous is None or previous.issue_json != build.issue_json or not store.update_issue_record(record):
                store.save_issue(record, issue_stories(issue), build.item_ids)
        if build.links_neighbours:
            # A new issue changes its neighbours' previous/next links.
            all_dates = sorted({*build.known_dates, date})
            position = all_dates.index(date)
            for neighbour in all_dates[max(position - 1, 0) : position] + all_dates[position + 1 : position + 2]:
                self._rerender_stored(archive, neighbour, all_dates)
        if publish:
            self.publish_site(archive)
        return BuildResult(date=date, stories=len(issue.stories()), empty=issue.is_empty, skipped=False,
                           changed_files=tuple(archive.written[written_before:]),
                           issue_dir=self.output_dir / date.isoformat(), item_ids=build.item_ids)

    @contextmanager
    def _render_pool(self, issues: int) -> Iterator[CallPool[RenderedIssue] | None]:
        """The processes that render the pages of a rebuild of `issues` issues (None: rendered here)."""
        workers = self.render_workers
        if workers is None:
            workers = default_workers() if issues >= PARALLEL_RENDER_MIN else 1
        if workers <= 1:
            yield None
            return
        from pipeline.render import render_issue_with

        with CallPool(render_issue_with, workers) as pool:
            yield pool

    @contextmanager
    def _page_pool(self, wanted: bool) -> Iterator[CallPool[str] | None]:
        """The processes that render the listing pages after a rebuild of many issues (None: here).
        They start only if a page is to be rendered."""
        if not wanted:
            yield None
            return
        from pipeline.render import render_page_with

        with CallPool(render_page_with, self.render_workers or default_workers()) as pool:
            yield pool

    def _rerender_stored(self, archive: Archive, date: dt.date, dates: Sequence[dt.date]) -> None:
        stored = self.store.issue(date)
        if stored is None:
            return
        issue = issue_from_json(stored.issue_json, self.config.newsletter)
        links = archive.issue_links(date, dates)
        rendered = self.renderer.render_issue(issue, self.topic_info, links)
        archive.write_issue(rendered)
        # Keep the record true to the pages on disk, so the next rebuild can tell they are current.
        compose_key = stored.render_key.partition("/")[0] if "/" in stored.render_key else ""
        self.store.update_issue_render(date, _sha(rendered.html), _sha(rendered.text),
                                       self._render_key(compose_key, stored.issue_json, links))

    def publish_site(self, archive: Archive | None = None,
                     decoded: Mapping[dt.date, tuple[str, Issue]] | None = None,
                     pages: CallPool[str] | None = None) -> None:
        """Write the pages that list issues: index, topic pages, Atom feed, search. `decoded`: issues
        the caller holds already, with their stored text (not decoded again). `pages`: processes
        that render the index and the topic pages meanwhile."""
        from pipeline.archive import ArchiveEntry

        newsletter = self.config.newsletter
        known = decoded or {}

        def load(date: dt.date, text: str) -> Issue:
            held = known.get(date)
            return held[1] if held is not None and held[0] == text else issue_from_json(text, newsletter)

        stored = self.store.issues()
        held = self.held_drafts([s.date for s in stored])
        entries = [ArchiveEntry.stored(s.date, s.issue_json, functools.partial(load, s.date))
                   for s in stored if s.date not in held]
        start_page: PageStarter | None = None if pages is None else functools.partial(self._start_page, pages)
        (archive or self.new_archive()).write_site(entries, self.topic_info, start_page)

    def _start_page(self, pages: CallPool[str], template: str, context: dict[str, object]) -> Callable[[], str]:
        return _page(template, pages.submit(self.templates_dir, self.renderer.fingerprint, template, context))

    def rebuild(self, dates: Sequence[dt.date] | None, *, now: dt.datetime | None = None, skip_empty: bool = False,
                lock_timeout: float | None = None) -> list[BuildResult]:
        """Re-render issues from the store with the current rules and templates; no network.
        `dates=None` rebuilds every stored issue. Holds the archive's build lock throughout."""
        now = now or utc_now()
        self._check_templates()
        self._existing_store()
        results: list[BuildResult] = []
        what = "--all" if dates is None else " ".join(d.isoformat() for d in dates)
        with self.build_lock(lock_timeout, f"pipeline rebuild {what}"):
            store = self.store
            # Oldest first: an issue never repeats items featured in earlier ones, so those must be final.
            targets = sorted(set(dates)) if dates is not None else store.issue_dates()
            if dates is None and not targets:
                raise PipelineError(f"{self.db_path}: no issue stored yet; nothing to rebuild")
            stored_dates = set(store.issue_dates())
            from pipeline.compose import issue_window

            for date in targets:  # every date is checked before anything is written
                start, end = issue_window(date, self.config.newsletter)
                if date not in stored_dates and store.count_items_between(start, end) == 0:
                    raise PipelineError(f"no stored items for {date.isoformat()} (window {start:%Y-%m-%d %H:%M} "
                                        f"to {end:%Y-%m-%d %H:%M} UTC); nothing to rebuild")
            # One Archive and one publication of the listing pages for the whole rebuild: rendering the
            # index, topic pages, feed and search index once per issue would make --all quadratic.
            archive = self.new_archive()
            # When every stored issue is rebuilt, oldest first, the items featured before each date are
            # the previous builds' items: kept in memory rather than read back from the store each time.
            featured: set[str] | None = set() if stored_dates <= set(targets) else None
            decoded: dict[dt.date, tuple[str, Issue]] = {}  # for the listing pages
            # Issues whose pages are being rendered (by the render processes), oldest first: each is
            # finished (pages written, record stored) in date order while the next ones render.
            pending: deque[tuple[int, _Build]] = deque()

            def abandon(run_id: int, date: dt.date, exc: BaseException) -> None:
                # The runs table must not keep a rebuild "running" forever: this one, and those under way.
                store.finish_run(run_id, "failed", f"rebuild {date.isoformat()} failed: {exc}", None, utc_now())
                while pending:
                    other_id, other = pending.popleft()
                    store.finish_run(other_id, "failed", f"rebuild {other.date.isoformat()} not finished: the "
                                     f"rebuild of {date.isoformat()} failed", None, utc_now())

            def finish_oldest() -> None:
                run_id, build = pending.popleft()
                try:
                    result = self._finish_build(build, now, archive, publish=False)
                except BaseException as exc:
                    abandon(run_id, build.date, exc)
                    raise
                store.finish_run(run_id, "ok", f"rebuilt {build.date.isoformat()}: {result.stories} stories", None,
                                 utc_now())
                results.append(result)

            with archive.parallel_writes():
                with self._render_pool(len(targets)) as renders:
                    issue_dates = store.issue_dates()  # read once, not once per issue (only a new one adds to them)
                    ahead = 2 * renders.workers + 2 if renders is not None else 0  # issues rendering at once
                    for date in targets:
                        run_id = store.start_run("rebuild", date, now)
                        try:
                            build = self._prepare_build(date, archive, featured, skip_empty=skip_empty,
                                                        renders=renders, stored_dates=issue_dates)
                        except BaseException as exc:
                            abandon(run_id, date, exc)
                            raise
                        if isinstance(build, BuildResult):  # an empty issue skipped: nothing to finish
                            while pending:
                                finish_oldest()
                            store.finish_run(run_id, "ok", f"rebuilt {date.isoformat()}: {build.stories} stories",
                                             None, utc_now())
                            results.append(build)
                            continue
                        if featured is not None:
                            featured.update(build.item_ids)  # in place: copying a growing set made --all quadratic
                        decoded[date] = (build.issue_json, build.issue)
                        pending.append((run_id, build))
                        # A new issue changes the links of the next ones: it is finished at once.
                        while pending and (len(pending) > ahead or build.previous is None):
                            finish_oldest()
                        if build.previous is None:  # a new issue, now stored
                            issue_dates = store.issue_dates()
                    while pending:
                        finish_oldest()
                written_before = len(archive.written)
                with self._page_pool(renders is not None) as pages:
                    self.publish_site(archive, decoded, pages)
                if results:  # the listing pages rewritten at the end count with the last issue rebuilt
                    last = results[-1]
                    results[-1] = dataclasses.replace(
                        last, changed_files=last.changed_files + tuple(archive.written[written_before:]))
        return results

    # -- the distributed mode: one call per job of the workers (pipeline.worker)

    def claim_due_feeds(self, now: dt.datetime | None = None) -> list[FeedSource]:
        """The enabled feeds due for a fetch, claimed so that no other caller gets them until their
        job has run (or `workers.min_fetch_interval` has passed)."""
        hold = dt.timedelta(minutes=self.config.workers.min_fetch_interval)
        claimed = set(self.store.claim_due_feeds([f for f in self.config.feeds if f.enabled], now or utc_now(), hold))
        return [feed for feed in self.config.feeds if feed.id in claimed]

    def refresh_feed(self, feed_id: str, now: dt.datetime | None = None) -> tuple[FeedReport, dt.datetime]:
        """Fetch, parse, classify and store one feed, then set when it is next due (pipeline.cadence).
        Returns its report and that time."""
        feed = next((f for f in self.config.feeds if f.id == feed_id), None)
        if feed is None:
            raise PipelineError(f"unknown feed id {feed_id!r} (not in {self.config.path})")
        now = now or utc_now()
        store = self.store
        (report,) = self.fetch_and_store(self.today(now), now, feeds=[feed], classify=True)
        failures = store.feed_states([feed])[feed.id].consecutive_failures if report.status == "failed" else 0
        interval = fetch_interval(self.config.workers, store.feed_item_count(feed.id, now - WEEK),
                                  failures=failures, ttl_minutes=report.ttl_minutes,
                                  retry_after=report.fetch.retry_after if report.fetch else None)
        store.schedule_fetch(feed.id, now + interval)
        return report, now + interval

    def build(self, date: dt.date, now: dt.datetime | None = None, *, only_if_missing: bool = True,
              lock_timeout: float | None = None) -> BuildResult | None:
        """Compose, render and publish the issue of `date` from what is stored (the build job),
        recorded as a 'build' run; None when `only_if_missing` and it is already built."""
        now = now or utc_now()
        self._check_templates()
        with self.build_lock(lock_timeout, f"build {date}"):
            store = self.store
            if only_if_missing and store.issue(date) is not None:
                return None
            run_id = store.start_run("build", date, now)
            try:
                result = self.build_issue(date, now)
            except BaseException as exc:
                store.finish_run(run_id, "failed", f"build {date.isoformat()} failed: {exc}", None, utc_now())
                raise
            store.finish_run(run_id, "ok", f"built {date.isoformat()}: {result.stories} stories", None, utc_now())
        return result

    def queue_mailing(self, date: dt.date, now: Callable[[], dt.datetime] = utc_now) -> DeliveryReport | None:
        """Record the deliveries of an issue as queued for the email batches (None: an empty issue
        that delivery.send_empty leaves unsent). The report lists uncertain earlier sends."""
        from pipeline.deliver import queue_mailing

        mailing = self._mailing(date, os.environ)
        return None if mailing is None else queue_mailing(self.store, mailing, now)

    def send_batch(self, date: dt.date, batch: str, *, env: Mapping[str, str] | None = None,
                   now: Callable[[], dt.datetime] = utc_now, sleep: Callable[[float], None] = time.sleep,
                   on_event: Callable[[DeliveryEvent], None] | None = None) -> DeliveryReport:
        """Send one batch of an issue's queued deliveries (`workers.email_batch` of them at most)."""
        from pipeline.deliver import DeliveryReport, credentials_from_env, send_batch

        env = os.environ if env is None else env
        mailing = self._mailing(date, env)
        if mailing is None:
            return DeliveryReport(date=date, empty_issue=True)
        credentials = credentials_from_env(mailing.settings, env)
        self.store.durable_commits()
        return send_batch(self.store, mailing, batch, self.config.workers.email_batch, credentials, now=now,
                          sleep=sleep, on_event=on_event)

    def _mailing(self, date: dt.date, env: Mapping[str, str]) -> Mailing | None:
        from pipeline.deliver import prepare_mailing

        settings = self.delivery_settings()
        issue = self.stored_issue(date)
        return prepare_mailing(issue, settings, [t.id for t in self.topic_info], env,
                               lambda: self.render_for_email(issue))

    # -- what the scheduler asks

    def issue_built(self, date: dt.date) -> bool:
        return self.store.issue(date) is not None

    def failed_runs(self, date: dt.date) -> list[dt.datetime]:
        """When today's failed runs ended, oldest first (the scheduler's `--once` counts retries so)."""
        return self.store.failed_runs("run", date)

    # -- the editor's desk: drafts, decisions, approval

    @property
    def require_approval(self) -> bool:
        return self.config.delivery is not None and self.config.delivery.require_approval

    def held_drafts(self, dates: Sequence[dt.date]) -> set[dt.date]:
        """Those of `dates` whose issue is a draft kept out of the archive's listings (index,
        topic pages, Atom feed, search) and of its neighbours' links: with
        delivery.require_approval, an issue neither approved nor mailed to any reader. Its own
        page is written (unlisted) all the same, so that it can be previewed."""
        if not self.require_approval:
            return set()
        store = self.store
        unapproved = [d for d in set(dates) if store.approval_of(d) is None]
        return set(unapproved) - store.mailed_dates(unapproved)

    def _listed_around(self, date: dt.date, dates: Sequence[dt.date], reach: int = 2) -> list[dt.date]:
        """`date` and the `reach` nearest of `dates` on each side of it that are not held drafts:
        all that the previous/next links of `date` and of its neighbours can name. Without
        delivery.require_approval, `dates` as they are; with it, a few lookups, not one per issue
        (a rebuild of every issue stays linear)."""
        if not self.require_approval:
            return list(dates)
        ordered = sorted({*dates, date})
        position = ordered.index(date)
        before: list[dt.date] = []
        for other in reversed(ordered[:position]):
            if len(before) == reach:
                break
            if not self.held_drafts([other]):
                before.insert(0, other)
        after: list[dt.date] = []
        for other in ordered[position + 1:]:
            if len(after) == reach:
                break
            if not self.held_drafts([other]):
                after.append(other)
        return [*before, date, *after]

    def approved(self, date: dt.date) -> bool:
        """Whether the issue of `date` is approved as it stands: an approval, and no editorial
        decision made after it (a later decision needs a new approval)."""
        store = self._existing_store()
        return _stands_approved(store.approval_of(date), store.decisions_for(date))

    def send_gate(self, date: dt.date, now: dt.datetime) -> SendGate:
        """What the scheduled send of the issue of `date` does at `now` (the scheduler's and the
        workers' email jobs ask before sending): without delivery.require_approval, or once the
        issue is approved (or its mailing has begun), send; before delivery.approve_by, wait;
        after it, what delivery.on_no_approval says."""
        settings = self.config.delivery
        if settings is None or not settings.require_approval:
            return SendGate("send", f"issue {date}: no approval required")
        store = self.store
        approval = store.approval_of(date)
        if approval is not None and _stands_approved(approval, store.decisions_for(date)):
            return SendGate("send", f"issue {date}: approved by {approval.editor} at "
                                    f"{approval.approved_at:%Y-%m-%d %H:%M} UTC: sending")
        if store.mailed_dates([date]):
            return SendGate("send", f"issue {date}: its mailing has begun: resuming it")
        by = settings.approve_by or dt.time(23, 59)
        zone = zoneinfo.ZoneInfo(self.config.newsletter.timezone)
        until = dt.datetime.combine(date, by, tzinfo=zone)
        changed = " (changed since its last approval)" if approval is not None else ""
        if now < until:
            return SendGate("wait", f"issue {date}: waiting for an editor's approval{changed} until "
                                    f"{by:%H:%M} ({zone.key})", until)
        if settings.on_no_approval == "send_anyway":
            return SendGate("send_anyway", f"issue {date}: not approved by {by:%H:%M}{changed}: sending it anyway "
                                           "(delivery.on_no_approval: send_anyway)", until)
        return SendGate("hold", f"issue {date}: not approved by {by:%H:%M}{changed}: held, not sent "
                                "(delivery.on_no_approval: hold)", until)

    def draft(self, date: dt.date) -> DraftView:
        """The issue of `date` as it stands (built by `run`, the scheduler or a decision), with
        each story's topics and the words that matched, its decisions and its approval."""
        issue = self.stored_issue(date)
        store = self.store
        decisions = tuple(store.decisions_for(date))
        entries = {e.item.id: e for e in self.classified_window(date)}
        approval = store.approval_of(date)
        placed: list[tuple[Story, str, str]] = []
        if issue.lead is not None:
            placed.append((issue.lead, "lead", issue.lead.primary_topic))
        placed += [(story, "section", section.topic) for section in issue.sections for story in section.stories]
        placed += [(story, "further", story.primary_topic) for story in issue.further_reading]
        stories = tuple(
            DraftStory(story=story, part=part, section=section,
                       matched=_matched_words([entries[i] for i in story.item_ids if i in entries]),
                       decisions=tuple(d for d in decisions if d.item_id in story.item_ids))
            for story, part, section in placed)
        sent = store.delivery_count(date)
        # As held_drafts says: unlisted only under require_approval, neither approved nor mailed.
        published = not self.require_approval or approval is not None or sent > 0
        return DraftView(
            date=date, issue=issue, stories=stories, sections=self.topic_info, decisions=decisions,
            approval=approval, approved=_stands_approved(approval, decisions),
            require_approval=self.require_approval, published=published, sent=sent,
            rendered=self.render_for_email(issue))

    def decide(self, decision: EditorialDecision, *, lock_timeout: float | None = None) -> DraftView:
        """Check an editorial decision, store it, and build the issue again with it (its page
        and, once published, the archive's listings); returns the new draft. A decision naming
        an unknown item or section, without the text it needs, or on an issue already mailed
        is a PipelineError and nothing is stored."""
        date = decision.issue_date
        self._check_templates()
        with self.build_lock(lock_timeout, f"editorial decision on {date}"):
            self._check_decision(decision)
            self.store.record_decision(decision)
            self.build_issue(date, utc_now())
        return self.draft(date)

    def _check_decision(self, d: EditorialDecision) -> None:
        date = d.issue_date.isoformat()
        if d.action not in DECISION_ACTIONS:
            raise PipelineError(f"unknown editorial action {d.action!r} (one of {', '.join(DECISION_ACTIONS)})")
        if not d.editor.strip():
            raise PipelineError("an editorial decision needs the editor's name")
        if d.decided_at.tzinfo is None:
            raise PipelineError("an editorial decision's time must be timezone-aware (UTC)")
        issue = self.stored_issue(d.issue_date)
        store = self.store
        if store.mailed_dates([d.issue_date]):
            raise PipelineError(f"the issue of {date} was already mailed to readers; decisions can no longer change it")
        told = {i for story in issue.stories() for i in story.item_ids}
        if d.action == "add":
            if d.item_id in told:
                raise PipelineError(f"item {d.item_id!r} is already in the issue of {date}")
            window = {e.item.id: e for e in self.classified_window(d.issue_date)}
            if d.item_id not in window:
                raise PipelineError(f"unknown item {d.item_id!r}: not a stored item of the window of {date}")
            if d.section is None and not set(window[d.item_id].classification.topics) & set(self.topics.ids):
                raise PipelineError(f"item {d.item_id!r} has no topic under the rules: say which section to add "
                                    "it to")
        elif d.item_id not in told:
            raise PipelineError(f"unknown item {d.item_id!r}: no story of the issue of {date} tells it")
        if d.action == "move" and not d.section:
            raise PipelineError("a move needs the target section (a topic id)")
        if d.section is not None and d.section not in self.topics.ids:
            raise PipelineError(f"unknown section {d.section!r} (topics of {self.topics.path}: "
                                f"{', '.join(self.topics.ids)})")
        if d.action in ("kicker", "summary") and not (d.text or "").strip():
            raise PipelineError(f"a {d.action} decision needs a non-empty text")

    def approve(self, date: dt.date, editor: str, *, now: dt.datetime | None = None,
                lock_timeout: float | None = None) -> Approval:
        """Record the editor's approval of the issue of `date` as it stands; with
        delivery.require_approval, the issue then enters the archive's listings and the
        scheduled send goes ahead."""
        if not editor.strip():
            raise PipelineError("an approval needs the editor's name")
        self.stored_issue(date)  # a clear error when there is no issue to approve
        approval = Approval(issue_date=date, editor=editor.strip(), approved_at=now or utc_now())
        self.store.record_approval(approval)
        if self.require_approval:  # otherwise the issue was listed when it was built
            self.publish_issue(date, lock_timeout=lock_timeout)
        return approval

    def publish_issue(self, date: dt.date, *, lock_timeout: float | None = None) -> None:
        """List a stored issue in the archive (after its approval, or its mailing without one):
        its neighbours' links and the listing pages are written again."""
        self._check_templates()
        with self.build_lock(lock_timeout, f"publish {date}"):
            store = self.store
            dates = store.issue_dates()
            held = self.held_drafts(dates)
            if date in held or date not in dates:
                return
            listed = [d for d in dates if d not in held]
            archive = self.new_archive()
            position = listed.index(date)
            for neighbour in listed[max(position - 1, 0): position + 2]:
                self._rerender_stored(archive, neighbour, listed)
            self.publish_site(archive)

    def candidates(self, date: dt.date, query: str | None = None, limit: int = 20) -> list[Candidate]:
        """The stored items of the window of `date` that its issue does not tell (nor an earlier
        issue), newest first; with `query`, those matching it as the archive's search does (every
        word, "a phrase", prefix*; accents and case ignored), title matches first."""
        from pipeline.store.query import search_terms

        issue = self.stored_issue(date)
        told = {i for story in issue.stories() for i in story.item_ids}
        featured = self.store.featured_item_ids(before=date)
        entries = [e for e in self.classified_window(date) if e.item.id not in told and e.item.id not in featured]
        entries.sort(key=lambda e: (e.item.published or e.item.first_seen or dt.datetime.min.replace(tzinfo=dt.UTC),
                                    e.item.id), reverse=True)
        if query is not None and query.strip():
            terms = [tuple(fold(w) for w in t.words) + (("*",) if t.prefix else ()) for t in search_terms(query)]
            ranked = []
            for entry in entries:
                title = _tokens(entry.item.title)
                body = _tokens(f"{entry.item.summary} {entry.item.content}")
                if all(_has_term([*title, "\x00", *body], term) for term in terms):
                    ranked.append((0 if all(_has_term(title, term) for term in terms) else 1, entry))
            entries = [e for _, e in sorted(ranked, key=lambda pair: pair[0])]
        known = set(self.topics.ids)
        return [Candidate(item=e.item, topics=tuple(t for t in e.classification.topics if t in known),
                          matched=_matched_words([e])) for e in entries[: max(limit, 0)]]

    def send_test(self, date: dt.date, address: str, *, env: Mapping[str, str] | None = None,
                  now: dt.datetime | None = None) -> str:
        """Mail the issue of `date` as it stands to one address (the editor's), subject marked
        "[TEST]": no reader's delivery record is read or written. Returns the server's reply."""
        from pipeline.deliver import credentials_from_env, send_test, unsubscribe_links

        settings = self.delivery_settings()
        env = os.environ if env is None else env
        issue = self.stored_issue(date)
        secret = env.get(settings.unsubscribe_secret_env) or None
        unsubscribe_links(settings, "check@example.org", secret)  # a missing secret fails before sending
        return send_test(issue, self.render_for_email(issue), settings, address.strip(),
                         credentials_from_env(settings, env), secret, now or utc_now())

    # -- stored issues

    def stored_issue(self, date: dt.date) -> Issue:
        """The issue of `date` as it was built and stored; no composing, no network."""
        missing = PipelineError(f"no issue built for {date.isoformat()}; run `pipeline run --date "
                                f"{date.isoformat()}` first")
        if self._store is None and not self.store_target.exists():  # opening would create an empty store
            raise missing
        stored = self.store.issue(date)
        if stored is None:
            raise missing
        return issue_from_json(stored.issue_json, self.config.newsletter)

    def email_links(self, date: dt.date) -> IssueLinks:
        """Links of an issue read in a mailbox: absolute only, and no previous/next issue."""
        base = self.config.newsletter.base_url
        from pipeline.render import IssueLinks

        return IssueLinks(web_url=f"{base}{date.isoformat()}/", archive_url=base,
                          text_href=f"{base}{date.isoformat()}/digest.txt", home_href=None)

    def render_for_email(self, issue: Issue) -> RenderedIssue:
        """A stored issue rendered for email (its "voir dans votre navigateur" link points at its
        archive page)."""
        return self.renderer.render_issue(issue, self.topic_info, self.email_links(issue.date))

    def archive_listing(self) -> list[IssueListing]:
        """Every stored issue, newest first, with what changed since it was built: the rules, the
        templates, the code (not known for an issue built before the store kept it: not said)."""
        from pipeline.render import french_date

        listing: list[IssueListing] = []
        for stored in self._existing_store().issues():
            outdated = tuple(what for what, old, new in (
                ("rules", stored.rules_fingerprint, self.topics.fingerprint),
                ("templates", stored.templates_fingerprint, self.renderer.fingerprint),
                ("code", stored.code_fingerprint or self.build_code, self.build_code)) if old != new)
            listing.append(IssueListing(date=stored.date, story_count=stored.story_count, outdated=outdated,
                                        label=french_date(stored.date, year=True)))
        return listing

    def delete_issue(self, date: dt.date, *, dry_run: bool = False, lock_timeout: float | None = None
                     ) -> IssueDeletion:
        """Remove the issue of `date` as if it had never been built (`pipeline archive delete`):
        from the store (record, stories, search entries, featured items, the editors' decisions
        and approvals: a new issue of that date starts unreviewed) in one transaction, then from
        the site (its folder, and the index, topic pages, feed and search index, rewritten), its
        listed neighbours' pages re-rendered with their new previous/next links.

        Its stories go back to the dates they would otherwise have appeared in: the items it
        featured may be shown by another issue (the next build of a later date whose window holds
        them), and the undated items that its runs saw first, which count from when they were
        first seen and so belong to its window (or, for a date ahead of the clock, to the time it
        ran), are forgotten with their feeds' validators, so that the next run stores them again
        as seen then. An undated item inside another stored issue's window stays: it is that
        issue's. `dry_run` only says what would go. A deletion interrupted after the store's part
        is finished by running it again (the site still has the pages)."""
        from pipeline.compose import issue_window

        self._check_templates()
        store = self._existing_store()
        with self.build_lock(lock_timeout, f"pipeline archive delete {date}"):
            stored = store.issue(date)
            archive = self.new_archive()
            pages = archive.issue_pages(date)
            if stored is None and not pages:
                raise PipelineError(f"no issue stored for {date.isoformat()} (see `pipeline archive list`)")
            remaining = [d for d in store.issue_dates() if d != date]
            held = self.held_drafts(remaining)
            listed = [d for d in remaining if d not in held]  # drafts awaiting approval are in nobody's links
            position = bisect.bisect_left(listed, date)
            neighbours = tuple(listed[max(position - 1, 0) : position + 1])
            featured: list[str] = []
            forgotten: list[str] = []
            later: list[dt.date] = []
            if stored is not None:
                featured = featured_item_ids(issue_from_json(stored.issue_json, self.config.newsletter))
                forgotten = self._first_seen_by(date, set(remaining))
                freed = set(featured)
                for later_date in remaining[bisect.bisect_left(remaining, date):]:
                    start, end = issue_window(later_date, self.config.newsletter)
                    if any(item.id in freed for item in store.items_between(start, end)):
                        later.append(later_date)
            deletion = IssueDeletion(
                date=date, stories=stored.story_count if stored else 0, in_store=stored is not None,
                pages=tuple(self.output_dir / page for page in pages), neighbours=neighbours,
                featured=tuple(featured), forgotten=tuple(forgotten), later_issues=tuple(later))
            if dry_run:
                return deletion
            if stored is not None:
                store.delete_issue(date, forgotten)
            archive.remove_issue(date)
            for neighbour in neighbours:
                self._rerender_stored(archive, neighbour, listed)
            self.publish_site(archive)
        return dataclasses.replace(deletion, done=True)

    def _first_seen_by(self, date: dt.date, other_dates: set[dt.date]) -> list[str]:
        """The undated items first seen by the runs of `date` that no other stored issue's window holds."""
        from pipeline.compose import issue_window

        store, newsletter = self.store, self.config.newsletter
        zone = zoneinfo.ZoneInfo(newsletter.timezone)
        found: list[str] = []
        for started in store.run_starts("run", date):
            seen = self._seen_at(date, started).replace(microsecond=0)
            local = seen.astimezone(zone).date()
            owner = next((d for d in (local, local + dt.timedelta(days=1))
                          if issue_window(d, newsletter)[0] <= seen < issue_window(d, newsletter)[1]), None)
            if owner in other_dates:
                continue
            found.extend(item.id for item in store.items_between(seen, seen + dt.timedelta(seconds=1))
                         if item.published is None and item.first_seen == seen and item.id not in found)
        return found

    def stored_items(self) -> list[Item]:
        """Every stored item, or none when the archive has no store yet (nothing is created)."""
        if self._store is None and not self.store_target.exists():
            return []
        return self.store.items_between(dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 1, 1, tzinfo=dt.UTC))

    def issue_text(self, date: dt.date) -> str:
        """The published plain text of a stored issue."""
        if self._existing_store().issue(date) is None:
            raise PipelineError(f"no issue stored for {date.isoformat()} (see `pipeline archive list`)")
        text_path = self.output_dir / date.isoformat() / "digest.txt"
        if not text_path.is_file():
            raise PipelineError(f"{text_path}: missing; run `pipeline rebuild --date {date}`")
        return text_path.read_text(encoding="utf-8")

    def search(self, query: str, limit: int = 20, topic: str | None = None) -> list[SearchHit]:
        """Stored stories matching `query`, best first (see Store.search_stories)."""
        store = self._existing_store()
        if topic is not None and topic not in self.topics.ids:
            raise PipelineError(f"unknown topic {topic!r} (topics of {self.topics.path}: "
                                f"{', '.join(self.topics.ids)})")
        return store.search_stories(query, limit=limit, topic=topic)

    # -- rules

    def try_rules(self, candidate: TopicsConfig, since: dt.date | None = None,
                  until: dt.date | None = None) -> RulePreview:
        """Classify stored items with the current rules and with `candidate`, and list those whose
        topics would change: a rule change tried on real items before it goes live. Read-only."""
        store = self._existing_store()
        from pipeline.classify import Classifier

        current, proposed = self.classifier, Classifier.compile(candidate)
        zone = zoneinfo.ZoneInfo(self.config.newsletter.timezone)
        start = (dt.datetime.combine(since, dt.time(), tzinfo=zone) if since
                 else dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
        end = (dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), tzinfo=zone) if until
               else dt.datetime(9999, 1, 1, tzinfo=dt.UTC))
        changes: list[RuleChange] = []
        items = store.items_between(start, end)
        for item in items:
            before, after = current.classify(item), proposed.classify(item)
            if before.topics != after.topics:
                changes.append(RuleChange(item=item, before=before.topics, after=after.topics,
                                          classification=after))
        dates = [d for d in store.issue_dates() if (since is None or d >= since) and (until is None or d <= until)]
        return RulePreview(items=len(items), changes=tuple(changes),
                           unneeded=tuple(self._unneeded_decisions(dates, current, proposed)))

    def _unneeded_decisions(self, dates: Sequence[dt.date], current: Classifier,
                            proposed: Classifier) -> Iterator[UnneededDecision]:
        """The editorial decisions on the issues of `dates` that the `proposed` rules would have
        made unnecessary: an item added by hand that they tag, a story dropped by hand whose
        items they no longer tag, a story moved by hand to the one topic they give its items."""
        store = self.store
        for date in dates:
            decisions = [d for d in store.decisions_for(date) if d.action in ("add", "drop", "move")]
            if not decisions:
                continue
            window = {i.id: i for i in self.window_items(date)}
            groups = {i: s.item_ids for s in store.issue_stories(date) for i in s.item_ids}
            for decision in decisions:
                # A dropped story is not in the issue any more: its item stands for it.
                members = [window[i] for i in groups.get(decision.item_id, (decision.item_id,)) if i in window]
                if not members:
                    continue
                before = {t for item in members for t in current.classify(item).topics}
                after = [t for t in self.topics.ids if any(t in proposed.classify(i).topics for i in members)]
                if decision.action == "add" and not before and after:
                    yield UnneededDecision(decision, f"the candidate rules tag it {', '.join(after)}")
                elif decision.action == "drop" and before and not after:
                    yield UnneededDecision(decision, "the candidate rules no longer tag it")
                elif decision.action == "move" and after == [decision.section] and before != {decision.section}:
                    yield UnneededDecision(decision, f"the candidate rules file it under {decision.section} alone")

    # -- feeds

    def feed_statuses(self) -> list[FeedStatus]:
        """Every configured feed, in config order, with its health."""
        health = {h.feed_id: h for h in self.store.feed_health()}
        newest = self.store.last_new_item()
        return [FeedStatus(feed=feed, health=health.get(feed.id), newest_item=newest.get(feed.id))
                for feed in self.config.feeds]

    def set_feeds_enabled(self, feed_ids: Sequence[str] | None, enabled: bool) -> int:
        """Re-enable (reset failures) or disable configured feeds (None: all); returns feeds changed."""
        store = self.store
        known = {f.id for f in self.config.feeds}
        for feed_id in feed_ids or []:
            if feed_id not in known:
                raise PipelineError(f"unknown feed id {feed_id!r} (not in {self.config.path})")
        return store.set_feeds_enabled(feed_ids, enabled=enabled)

    # -- email

    def delivery_settings(self) -> DeliverySettings:
        """The config's `delivery:` section; a clear error when there is none."""
        if self.config.delivery is None:
            raise PipelineError(f"{self.config.path}: no `delivery:` section; add one to send issues by email "
                                "(see README, \"Email delivery\")")
        return self.config.delivery

    def send(self, date: dt.date | None = None, *, dry_run: bool = False, outbox: Path | None = None,
             resend_uncertain: bool = False, confirm_delivered: Sequence[str] = (),
             confirm_lost: Sequence[str] = (), env: Mapping[str, str] | None = None,
             now: Callable[[], dt.datetime] | None = None, sleep: Callable[[float], None] = time.sleep,
             on_event: Callable[[DeliveryEvent], None] | None = None) -> DeliveryReport:
        """Send the stored issue of `date` (default: today) to every reader who has not had it
        yet, exactly once (see pipeline.deliver). Safe to call again after any interruption.
        `dry_run` writes one .eml per reader to `outbox` (default: outbox/ beside the database).
        `confirm_delivered` / `confirm_lost`: Message-IDs of uncertain deliveries that the operator
        found in the mail server's log or not; recorded first (all or none), a lost one is then
        mailed again by this send."""
        from pipeline.deliver import DeliveryReport, credentials_from_env, send_mailing, settle_findings, write_outbox

        settings = self.delivery_settings()
        findings = settle_findings(confirm_delivered, confirm_lost)
        if findings and dry_run:
            raise PipelineError("--confirm-delivered / --confirm-lost record a finding in the store; "
                                "--dry-run records nothing")
        started = time.monotonic()
        date = date or self.today()
        env = os.environ if env is None else env
        clock = now or utc_now
        mailing = self._mailing(date, env)
        if mailing is None:  # an empty issue, and delivery.send_empty is false
            return DeliveryReport(date=date, dry_run=dry_run, empty_issue=True)
        if dry_run:
            report = write_outbox(self.store, mailing, Path(outbox) if outbox else self.db_path.parent / "outbox",
                                  resend_uncertain=resend_uncertain, now=clock, on_event=on_event)
        else:
            credentials = credentials_from_env(settings, env)
            with self.send_lock():
                self.store.durable_commits()
                report = send_mailing(self.store, mailing, credentials, resend_uncertain=resend_uncertain,
                                      findings=findings, now=clock, sleep=sleep, on_event=on_event)
            if self.require_approval:  # a draft mailed without approval is published all the same
                self.publish_issue(date)
        report.duration = time.monotonic() - started
        return report

    def settle_uncertain(self, date: dt.date, confirm_delivered: Sequence[str] = (),
                         confirm_lost: Sequence[str] = (), now: dt.datetime | None = None) -> DeliveryReport:
        """Record the operator's findings on uncertain deliveries of `date` without sending (the
        distributed mode, where the email workers send): delivered ones become 'sent', lost ones
        'failed-temporary', which the next queueing of the issue takes again. All or none."""
        from pipeline.deliver import DeliveryReport, settle, settle_findings

        report = DeliveryReport(date=date)
        settle(self.store, date, settle_findings(confirm_delivered, confirm_lost), now or utc_now(), report)
        return report

    @contextmanager
    def send_lock(self) -> Iterator[None]:
        """Keeps two sends from working on the same store at once."""
        with exclusive(self.db_path.with_name(self.db_path.name + ".send-lock"),
                       "another `pipeline send` on this database"):
            yield

    def subscribers(self) -> Subscribers:
        from pipeline.deliver import load_recipients

        path = self.delivery_settings().recipients
        suppressed = self.store.suppressions()
        recipients = load_recipients(path, [t.id for t in self.topic_info])
        return Subscribers(path=path, recipients=tuple(recipients), suppressed=suppressed)

    def add_subscriber(self, email: str, name: str = "",
                       topics: Sequence[str] = ()) -> tuple[Recipient, Suppression | None]:
        """Add a reader to the recipients file and lift a suppression of the address; returns the
        reader and the suppression lifted, if any."""
        from pipeline.deliver import add_recipient

        path = self.delivery_settings().recipients
        store = self.store
        recipient = add_recipient(path, email, name=name, topics=topics, known_topics=[t.id for t in self.topic_info])
        return recipient, store.unsuppress(recipient.key)

    def remove_subscriber(self, email: str, now: dt.datetime | None = None) -> Recipient:
        """Take a reader out of the recipients file and suppress the address."""
        from pipeline.deliver import remove_recipient

        path = self.delivery_settings().recipients
        store = self.store
        recipient = remove_recipient(path, email)
        store.suppress(recipient.key, "unsubscribed", "pipeline subscribers remove", now or utc_now())
        return recipient

    # -- readers' one-click unsubscribe (`pipeline desk`)

    def unsubscribe_route(self, env: Mapping[str, str] | None = None) -> UnsubscribeRoute:
        """Where the one-click requests of `delivery.unsubscribe_url` arrive (its path and the names
        of its {email} and {token} parameters); fails now, with one line, if the endpoint could
        not check them (no `delivery:` section, a missing or short unsubscribe secret)."""
        from pipeline.deliver import unsubscribe_links, unsubscribe_route

        settings = self.delivery_settings()
        env = os.environ if env is None else env
        secret = env.get(settings.unsubscribe_secret_env) or None
        if not secret:
            raise PipelineError(f"environment variable {settings.unsubscribe_secret_env} is not set: the desk "
                                "cannot check readers' unsubscribe tokens without the key that signed them")
        unsubscribe_links(settings, "check@example.org", secret)  # a short secret is refused here
        return unsubscribe_route(settings)

    def unsubscribe(self, email: str, token: str, *, confirm: bool, detail: str = "one-click unsubscribe",
                    env: Mapping[str, str] | None = None, now: dt.datetime | None = None) -> UnsubscribeOutcome:
        """A reader's unsubscribe request: `token` must be the HMAC of `email` under the unsubscribe
        secret. With `confirm`, the address goes on the suppression list (the next send skips it;
        the recipients file is left as it is, `pipeline subscribers list` shows it suppressed);
        without, nothing is written (the confirmation page of a GET)."""
        from pipeline.deliver import unsubscribe_token_matches

        settings = self.delivery_settings()
        env = os.environ if env is None else env
        secret = env.get(settings.unsubscribe_secret_env) or ""
        key = email.strip().lower()
        if (not secret or not key or len(key) > MAX_ADDRESS_CHARS or "@" not in key
                or not unsubscribe_token_matches(secret, key, token.strip())):
            return UnsubscribeOutcome(email=key[:MAX_ADDRESS_CHARS], outcome="refused")
        store = self.store
        if key in store.suppressions():
            return UnsubscribeOutcome(email=key, outcome="already")
        if not confirm:
            return UnsubscribeOutcome(email=key, outcome="valid")
        done = store.suppress(key, "unsubscribed", detail, now or utc_now())
        return UnsubscribeOutcome(email=key, outcome="unsubscribed" if done else "already")
