"""The flow of DESIGN.md, wired once: fetch → parse → store → classify → compose → render → archive.

The command line and the scheduler call these functions; no stage calls another stage
directly, so each stays replaceable (and testable) on its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import time
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.archive import Archive, ArchiveEntry
from pipeline.classify import Classifier
from pipeline.compose import compose_issue, issue_window
from pipeline.config.topics import TopicsConfig
from pipeline.errors import PipelineError, RunFailed, unexpected_error
from pipeline.fetch import fetch_feeds
from pipeline.lock import BuildLock, build_lock
from pipeline.models import (
    Classification,
    Config,
    FetchResult,
    FetchStatus,
    Issue,
    Item,
    NewsletterSettings,
    ParseResult,
    RenderedIssue,
    StoredItem,
    TopicInfo,
)
from pipeline.parse import parse_feed
from pipeline.render import IssueLinks, Renderer
from pipeline.store import (
    FeedOutcome,
    RunOutcome,
    Store,
    StoredIssue,
    StoreTarget,
    featured_item_ids,
    issue_from_json,
    issue_stories,
    issue_to_json,
    open_store,
)


@dataclass(frozen=True)
class Workspace:
    """Everything a build needs, resolved from the command line and the config."""

    config: Config
    topics: TopicsConfig
    db_path: Path
    output_dir: Path
    templates_dir: Path


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

    @property
    def feeds_read(self) -> int:
        return sum(1 for f in self.feeds if f.status in ("new", "unchanged", "moved"))

    @property
    def feeds_failed(self) -> int:
        return sum(1 for f in self.feeds if f.status == "failed")


def today_in(timezone: str, now: dt.datetime | None = None) -> dt.date:
    current = now or dt.datetime.now(dt.UTC)
    return current.astimezone(zoneinfo.ZoneInfo(timezone)).date()


def _seen_at(config: Config, date: dt.date, now: dt.datetime) -> dt.datetime:
    """When items first seen in this run count as seen. Building a past date stamps undated
    items at that issue's cut-off, so a backfill puts them in the issue being built."""
    _, window_end = issue_window(date, config.newsletter)
    return min(now, window_end - dt.timedelta(seconds=1))


# One run stores at most this many items, so a flood of feeds cannot swamp the store or a digest.
MAX_ITEMS_PER_RUN = 5_000


def _staleness(after_days: int, last_new: dt.datetime | None, new_items: int, seen_at: dt.datetime) -> str | None:
    """A feed that answers but has brought nothing new for weeks has often silently broken
    (a moved page still serving an old feed, a CMS export frozen): say so."""
    if not after_days or new_items or last_new is None:
        return None
    days = (seen_at - last_new).days
    if days < after_days:
        return None
    return f"no new item for {days} days (since {last_new:%Y-%m-%d}): check that the feed still works"


def fetch_and_store(ws: Workspace, store: Store, date: dt.date, now: dt.datetime,
                    on_result: Callable[[FetchResult], None] | None = None) -> list[FeedReport]:
    """Fetch every feed, parse what came back, store new items and each feed's health."""
    feeds = list(ws.config.feeds)
    states = store.feed_states(feeds)
    results = fetch_feeds(feeds, ws.config.fetch, states, on_result=on_result)
    seen_at = _seen_at(ws.config, date, now)
    last_new = store.last_new_item()
    reports: list[FeedReport] = []
    budget = MAX_ITEMS_PER_RUN
    for result in results:
        new_items = 0
        parse_error: str | None = None
        warnings: tuple[str, ...] = ()
        if result.body is not None and result.status in (FetchStatus.NEW, FetchStatus.MOVED):
            try:
                parsed = parse_feed(result, seen_at)
            except Exception as exc:  # one feed's body, whatever it provokes, fails that feed alone
                parsed = ParseResult(feed=result.feed, items=(), error=f"could not parse: {unexpected_error(exc)}")
            parse_error = parsed.error
            warnings = parsed.warnings
            items = parsed.items[:budget]
            if len(items) < len(parsed.items):
                warnings += (f"run limit of {MAX_ITEMS_PER_RUN} items reached: "
                             f"{len(parsed.items) - len(items)} items of this feed left for the next run",)
            budget -= len(items)
            if items:
                new_items = store.upsert_items(items)
        store.record_fetch(result, new_items, now, parse_error=parse_error)
        stale = _staleness(ws.config.fetch.stale_after_days, last_new.get(result.feed.id), new_items, seen_at)
        if stale and not parse_error and result.status is not FetchStatus.FAILED:
            warnings += (stale,)
        status = "failed" if parse_error else str(result.status)
        if parse_error:
            result = dataclasses.replace(result, status=FetchStatus.FAILED, error=parse_error)
        reports.append(FeedReport(
            feed_id=result.feed.id, name=result.feed.name, status=status, error=result.error or parse_error,
            new_items=new_items, elapsed=result.elapsed, moved_to=result.permanent_redirect, warnings=warnings,
            fetch=result,
        ))
    return reports


def classified_window(store: Store, classifier: Classifier, topics: TopicsConfig,
                      config: Config, date: dt.date) -> list[StoredItem]:
    """The items of an issue's window with their classification under the current rules."""
    start, end = issue_window(date, config.newsletter)
    items = store.items_between(start, end)
    known = store.classifications([i.id for i in items], topics.fingerprint)
    missing = [classifier.classify(i) for i in items if i.id not in known]
    if missing:
        store.save_classifications(missing, topics.fingerprint)
        known.update({c.item_id: c for c in missing})
    return [StoredItem(item=i, classification=known[i.id]) for i in items]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _render_key(issue_json: str, topics: Sequence[TopicInfo], links: IssueLinks, newsletter: NewsletterSettings,
                renderer: Renderer) -> str:
    """Everything an issue's pages are rendered from; see StoredIssue.render_key."""
    return _sha("\0".join((issue_json, repr(tuple(topics)), repr(links), repr(newsletter), renderer.fingerprint)))


def build_issue(ws: Workspace, store: Store, classifier: Classifier, renderer: Renderer, date: dt.date,
                now: dt.datetime, skip_empty: bool = False, archive: Archive | None = None,
                publish: bool = True, featured_before: set[str] | None = None) -> BuildResult:
    """Compose, render and publish the issue of `date` from what is stored; no network.
    `archive` lets several builds share one Archive (its `written` list); `publish=False` leaves
    the pages that list issues (index, topics, feed, search) to the caller, who publishes once.
    `featured_before`: the items of every issue before `date`, when the caller already knows them."""
    config = ws.config
    topic_info = ws.topics.info()
    entries = classified_window(store, classifier, ws.topics, config, date)
    weights = {f.id: f.weight for f in config.feeds}
    issue = compose_issue(date, entries, topic_info, config.newsletter, weights,
                          already_featured=store.featured_item_ids(before=date) if featured_before is None
                          else featured_before)
    if archive is None:
        archive = Archive(ws.output_dir, renderer, config.newsletter.base_url, config.newsletter.name)
    written_before = len(archive.written)
    issue_dir = ws.output_dir / date.isoformat()
    if issue.is_empty and skip_empty:
        return BuildResult(date=date, stories=0, empty=True, skipped=True, changed_files=(), issue_dir=issue_dir)

    known_dates = store.issue_dates()
    is_new_date = date not in known_dates
    links = archive.issue_links(date, known_dates)
    issue_json = issue_to_json(issue)
    render_key = _render_key(issue_json, topic_info, links, config.newsletter, renderer)
    previous = None if is_new_date else store.issue(date)
    if previous is not None and previous.render_key == render_key and \
            archive.has_issue(date, previous.html_sha256, previous.text_sha256):
        # Same inputs, pages intact: rendering again would give the same bytes (it is deterministic).
        html_sha, text_sha = previous.html_sha256, previous.text_sha256
    else:
        rendered = renderer.render_issue(issue, topic_info, links)
        archive.write_issue(rendered)
        html_sha, text_sha = _sha(rendered.html), _sha(rendered.text)
    item_ids = featured_item_ids(issue)
    record = StoredIssue(
        date=date, built_at=now, rules_fingerprint=ws.topics.fingerprint,
        templates_fingerprint=renderer.fingerprint, html_sha256=html_sha, text_sha256=text_sha,
        story_count=len(issue.stories()), issue_json=issue_json, render_key=render_key,
    )
    if previous is None or dataclasses.replace(previous, built_at=now) != record:
        # An identical record is not written again: a rebuild with nothing changed writes nothing.
        store.save_issue(record, issue_stories(issue), item_ids)
    all_dates = sorted({*known_dates, date})
    if is_new_date:
        # A new issue changes its neighbours' previous/next links.
        position = all_dates.index(date)
        for neighbour in all_dates[max(position - 1, 0) : position] + all_dates[position + 1 : position + 2]:
            _rerender_stored(ws, store, renderer, archive, neighbour, all_dates)
    if publish:
        publish_site(ws, store, archive)
    return BuildResult(date=date, stories=len(issue.stories()), empty=issue.is_empty, skipped=False,
                       changed_files=tuple(archive.written[written_before:]), issue_dir=issue_dir,
                       item_ids=tuple(item_ids))


def _rerender_stored(ws: Workspace, store: Store, renderer: Renderer, archive: Archive, date: dt.date,
                     dates: Sequence[dt.date]) -> None:
    stored = store.issue(date)
    if stored is None:
        return
    issue = issue_from_json(stored.issue_json, ws.config.newsletter)
    links = archive.issue_links(date, dates)
    topic_info = ws.topics.info()
    rendered = renderer.render_issue(issue, topic_info, links)
    archive.write_issue(rendered)
    # Keep the record true to the pages on disk, so the next rebuild can tell they are current.
    store.update_issue_render(date, _sha(rendered.html), _sha(rendered.text),
                              _render_key(stored.issue_json, topic_info, links, ws.config.newsletter, renderer))


def publish_site(ws: Workspace, store: Store, archive: Archive) -> None:
    entries = [ArchiveEntry(issue=issue_from_json(s.issue_json, ws.config.newsletter)) for s in store.issues()]
    archive.write_site(entries, ws.topics.info())


def run(ws: Workspace, date: dt.date | None = None, now: dt.datetime | None = None, retry_failed: bool = False,
        skip_empty: bool = False, on_result: Callable[[FetchResult], None] | None = None,
        lock_timeout: float | None = None, lock: BuildLock | None = None) -> RunReport:
    """The daily job: fetch every feed, then build the issue of `date` (default: today).
    Holds the archive's build lock throughout (waiting up to `lock_timeout`, default
    schedule.lock_timeout_seconds); `lock` is one the caller already holds (the scheduler)."""
    started = time.monotonic()
    now = now or dt.datetime.now(dt.UTC)
    date = date or today_in(ws.config.newsletter.timezone, now)
    report = RunReport(date=date)
    classifier = Classifier.compile(ws.topics)
    renderer = Renderer(ws.templates_dir)
    wait = ws.config.schedule.lock_timeout_seconds if lock_timeout is None else lock_timeout
    with build_lock(ws.db_path, wait, f"pipeline run {date}", held=lock), open_store(StoreTarget(ws.db_path)) as store:
        run_id = store.start_run("run", date, now)
        status = "failed"
        try:
            if retry_failed:
                store.set_feeds_enabled(None, enabled=True)
            report.feeds = fetch_and_store(ws, store, date, now, on_result=on_result)
            report.new_items = sum(f.new_items for f in report.feeds)
            if report.feeds_read == 0:
                raise RunFailed(
                    f"no feed could be read ({report.feeds_failed} failed, "
                    f"{sum(1 for f in report.feeds if f.status == 'skipped')} skipped); no issue built",
                    report=report,
                )
            report.build = build_issue(ws, store, classifier, renderer, date, now, skip_empty=skip_empty)
            status = "ok"
        finally:
            report.duration = time.monotonic() - started
            store.finish_run(run_id, status, summarize(report), _outcome(report),
                             dt.datetime.now(dt.UTC))
    return report


def rebuild(ws: Workspace, dates: Sequence[dt.date] | None, now: dt.datetime | None = None,
            skip_empty: bool = False, lock_timeout: float | None = None) -> list[BuildResult]:
    """Re-render issues from the store with the current rules and templates; no network.
    `dates=None` rebuilds every stored issue. Holds the archive's build lock throughout."""
    now = now or dt.datetime.now(dt.UTC)
    classifier = Classifier.compile(ws.topics)
    renderer = Renderer(ws.templates_dir)
    if not ws.db_path.exists():
        raise PipelineError(f"{ws.db_path}: no such database; run `pipeline run` first")
    results: list[BuildResult] = []
    wait = ws.config.schedule.lock_timeout_seconds if lock_timeout is None else lock_timeout
    what = "--all" if dates is None else " ".join(d.isoformat() for d in dates)
    with build_lock(ws.db_path, wait, f"pipeline rebuild {what}"), open_store(StoreTarget(ws.db_path)) as store:
        # Oldest first: an issue never repeats items featured in earlier ones, so those must be final.
        targets = sorted(set(dates)) if dates is not None else store.issue_dates()
        if dates is None and not targets:
            raise PipelineError(f"{ws.db_path}: no issue stored yet; nothing to rebuild")
        stored_dates = set(store.issue_dates())
        for date in targets:  # every date is checked before anything is written
            start, end = issue_window(date, ws.config.newsletter)
            if date not in stored_dates and store.count_items_between(start, end) == 0:
                raise PipelineError(f"no stored items for {date.isoformat()} (window {start:%Y-%m-%d %H:%M} to "
                                    f"{end:%Y-%m-%d %H:%M} UTC); nothing to rebuild")
        # One Archive and one publication of the listing pages for the whole rebuild: rendering the
        # index, topic pages, feed and search index once per issue would make --all quadratic.
        archive = Archive(ws.output_dir, renderer, ws.config.newsletter.base_url, ws.config.newsletter.name)
        # When every stored issue is rebuilt, oldest first, the items featured before each date are
        # the previous builds' items: kept in memory rather than read back from the store each time.
        featured: set[str] | None = set() if stored_dates <= set(targets) else None
        for date in targets:
            run_id = store.start_run("rebuild", date, now)
            try:
                result = build_issue(ws, store, classifier, renderer, date, now, skip_empty=skip_empty,
                                     archive=archive, publish=False, featured_before=featured)
            except BaseException as exc:  # the runs table must not keep a rebuild "running" forever
                store.finish_run(run_id, "failed", f"rebuild {date.isoformat()} failed: {exc}", None,
                                 dt.datetime.now(dt.UTC))
                raise
            store.finish_run(run_id, "ok", f"rebuilt {date.isoformat()}: {result.stories} stories", None,
                             dt.datetime.now(dt.UTC))
            results.append(result)
            if featured is not None:
                featured = featured | set(result.item_ids)
        written_before = len(archive.written)
        publish_site(ws, store, archive)
        if results:  # the listing pages rewritten at the end count with the last issue rebuilt
            last = results[-1]
            results[-1] = dataclasses.replace(
                last, changed_files=last.changed_files + tuple(archive.written[written_before:]))
    return results


def summarize(report: RunReport) -> str:
    built = report.build
    where = f"{built.issue_dir}" if built and not built.skipped else "no issue written"
    stories = built.stories if built else 0
    return (f"{report.date.isoformat()}: {report.feeds_read} feeds read, {report.feeds_failed} failed, "
            f"{report.new_items} new items, {stories} stories, {report.duration:.1f} s, {where}")


def _outcome(report: RunReport) -> RunOutcome:
    return RunOutcome(
        date=report.date, new_items=report.new_items,
        feeds=tuple(FeedOutcome(feed_id=f.feed_id, status=f.status, error=f.error, new_items=f.new_items,
                                elapsed=f.elapsed, moved_to=f.moved_to) for f in report.feeds),
        stories=report.build.stories if report.build else 0,
    )


# ---------------------------------------------------------------- stored issues for email delivery


def load_stored_issue(ws: Workspace, date: dt.date) -> Issue:
    """The issue of `date` as it was built and stored; no composing, no network."""
    missing = PipelineError(f"no issue built for {date.isoformat()}; run `pipeline run --date {date.isoformat()}` "
                            "first")
    if not ws.db_path.exists():  # opening a Store would create an empty database
        raise missing
    with open_store(StoreTarget(ws.db_path)) as store:
        stored = store.issue(date)
    if stored is None:
        raise missing
    return issue_from_json(stored.issue_json, ws.config.newsletter)


def email_links(ws: Workspace, date: dt.date) -> IssueLinks:
    """Links of an issue read in a mailbox: absolute only, and no previous/next issue."""
    base = ws.config.newsletter.base_url
    return IssueLinks(web_url=f"{base}{date.isoformat()}/", archive_url=base,
                      text_href=f"{base}{date.isoformat()}/digest.txt", home_href=None)


def render_stored_issue(ws: Workspace, date: dt.date) -> RenderedIssue:
    """The stored issue of `date` rendered for email (the "voir dans votre navigateur" link
    points at its archive page)."""
    issue = load_stored_issue(ws, date)
    return Renderer(ws.templates_dir).render_issue(issue, ws.topics.info(), email_links(ws, date))


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
class RulePreview:
    items: int  # stored items compared
    changes: tuple[RuleChange, ...]


def preview_rules(ws: Workspace, candidate: TopicsConfig, since: dt.date | None = None,
                  until: dt.date | None = None) -> RulePreview:
    """Classify stored items with the current rules and with `candidate`, and list those whose
    topics would change: a rule change tried on real items before it goes live. Read-only."""
    if not ws.db_path.exists():
        raise PipelineError(f"{ws.db_path}: no such database; run `pipeline run` first")
    current, proposed = Classifier.compile(ws.topics), Classifier.compile(candidate)
    zone = zoneinfo.ZoneInfo(ws.config.newsletter.timezone)
    start = dt.datetime.combine(since, dt.time(), tzinfo=zone) if since else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    end = (dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), tzinfo=zone) if until
           else dt.datetime(9999, 1, 1, tzinfo=dt.UTC))
    changes: list[RuleChange] = []
    with open_store(StoreTarget(ws.db_path)) as store:
        items = store.items_between(start, end)
    for item in items:
        before, after = current.classify(item), proposed.classify(item)
        if before.topics != after.topics:
            changes.append(RuleChange(item=item, before=before.topics, after=after.topics, classification=after))
    return RulePreview(items=len(items), changes=tuple(changes))
