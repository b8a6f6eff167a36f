"""How an issue is kept, whatever the backend: as it was composed, and story by story.

An issue is stored as it was composed (JSON, without the newsletter settings, which come from
the current config), so that archive pages and neighbours' links can be rendered again without
recomposing (which could silently pick up newer rules). Its stories are also kept one by one
(`IssueStory`) for search and for the rebuild's checks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

from pipeline.models import (
    AgendaEntry,
    FeedSource,
    FeedState,
    Issue,
    Item,
    MenuTeaser,
    NewsletterSettings,
    Section,
    SourceRef,
    Story,
)
from pipeline.store.records import FeedHealth, IssueStory, RunOutcome

_STORY_FIELDS = tuple(f.name for f in dataclasses.fields(Story))


def to_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A time as the store keeps it, whatever the backend: in UTC, to the second."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    return value.astimezone(dt.UTC).replace(microsecond=0)


def to_iso(value: dt.datetime | None) -> str | None:
    """A time as the SQLite backend keeps it: ISO 8601 in UTC, to the second."""
    utc = to_utc(value)
    return utc.isoformat() if utc else None


def from_iso(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def item_content_sha256(item: Item) -> str:
    """sha256 of what an upsert writes of an item (first_seen, which never moves, aside): stored
    with it, so that a changed item changes the input key of its issue (StoredIssue.input_key)."""
    fields = (item.feed_id, item.source, item.guid, item.url, item.title, item.summary, item.content,
              item.language, to_iso(item.published), item.author, list(item.categories))
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


def _story_to_dict(story: Story) -> dict[str, Any]:
    # Field by field rather than dataclasses.asdict, whose deep copy dominated a rebuild's store time.
    data = {name: getattr(story, name) for name in _STORY_FIELDS}
    data["also_on"] = [dataclasses.asdict(ref) for ref in story.also_on]
    data["published"] = to_iso(story.published)
    return data


def _story_from_dict(data: dict[str, Any]) -> Story:
    return Story(
        **{
            **data,
            "topics": tuple(data["topics"]),
            "item_ids": tuple(data["item_ids"]),
            "also_on": tuple(SourceRef(**ref) for ref in data["also_on"]),
            "published": from_iso(data["published"]),
            "why": tuple(data["why"]),
        }
    )


def issue_to_json(issue: Issue) -> str:
    """The issue without its newsletter settings (those come from the current config)."""
    data = {
        "date": issue.date.isoformat(),
        "menu": [dataclasses.asdict(t) for t in issue.menu],
        "lead": _story_to_dict(issue.lead) if issue.lead else None,
        "sections": [
            {"topic": s.topic, "heading": s.heading, "stories": [_story_to_dict(x) for x in s.stories]}
            for s in issue.sections
        ],
        "agenda": [{**dataclasses.asdict(a), "date": a.date.isoformat()} for a in issue.agenda],
        "further_reading": [_story_to_dict(s) for s in issue.further_reading],
    }
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def issue_from_json(text: str, newsletter: NewsletterSettings) -> Issue:
    data = json.loads(text)
    return Issue(
        date=dt.date.fromisoformat(data["date"]),
        newsletter=newsletter,
        menu=tuple(MenuTeaser(**t) for t in data["menu"]),
        lead=_story_from_dict(data["lead"]) if data["lead"] else None,
        sections=tuple(
            Section(topic=s["topic"], heading=s["heading"], stories=tuple(_story_from_dict(x) for x in s["stories"]))
            for s in data["sections"]
        ),
        agenda=tuple(
            AgendaEntry(**{**a, "date": dt.date.fromisoformat(a["date"])}) for a in data["agenda"]
        ),
        further_reading=tuple(_story_from_dict(s) for s in data["further_reading"]),
    )


def issue_stories(issue: Issue) -> list[IssueStory]:
    """The stories of an issue in reading order, by part: the lead, each section, further reading.
    A story shown twice (the lead is also in its section) is listed in each part."""
    parts: list[tuple[str, tuple[Story, ...]]] = [("lead", (issue.lead,) if issue.lead else ())]
    parts += [(f"section:{s.topic}", s.stories) for s in issue.sections]
    parts += [("further", issue.further_reading)]
    return [
        IssueStory(
            date=issue.date, position=position, story_id=story.id, part=part, topic=story.primary_topic,
            topics=story.topics, kicker=story.kicker, title=story.title, text=story.text, source=story.source,
            url=story.url, item_ids=story.item_ids,
        )
        for position, (part, story) in enumerate((part, story) for part, stories in parts for story in stories)
    ]


def featured_item_ids(issue: Issue) -> list[str]:
    """The items an issue shows (later issues never show them again)."""
    return [item_id for story in issue.stories() for item_id in story.item_ids]


def outcome_to_json(outcome: RunOutcome | None) -> str:
    """What a run found, as the runs table keeps it (JSON text), whatever the backend."""
    if outcome is None:
        return "{}"
    data = {
        "date": outcome.date.isoformat(),
        "new_items": outcome.new_items,
        "feeds": [
            {"feed": f.feed_id, "status": f.status, "error": f.error, "new_items": f.new_items,
             "elapsed": round(f.elapsed, 3), "moved_to": f.moved_to}
            for f in outcome.feeds
        ],
        "stories": outcome.stories,
    }
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def feed_state(feed: FeedSource, health: FeedHealth | None) -> FeedState:
    """A configured feed's state from what the store keeps of it. A redirect or validators
    stored for an older configured URL are forgotten."""
    if health is None:
        return FeedState(feed_id=feed.id)
    same_config = health.config_url == feed.url
    return FeedState(
        feed_id=feed.id,
        url=health.url if same_config else None,
        etag=health.etag if same_config else None,
        last_modified=health.last_modified if same_config else None,
        consecutive_failures=health.consecutive_failures,
        last_status=health.last_status,
        last_error=health.last_error,
        last_success=health.last_success,
        items_seen=health.items_seen,
        disabled=health.disabled,
    )
