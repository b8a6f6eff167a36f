"""Compose stage: from the classified items of a window, decide what an issue says.

Picks the items of the issue's window, merges the same story told by several outlets,
ranks stories, chooses the lead, the menu, the sections, the agenda and further reading.
Nothing here renders or touches storage.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
import zoneinfo
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.models import (
    AgendaEntry,
    Issue,
    MenuTeaser,
    NewsletterSettings,
    Section,
    SourceRef,
    StoredItem,
    Story,
    TopicInfo,
)

MONTHS_FR = {
    "janvier": 1, "fevrier": 2, "mars": 3, "avril": 4, "mai": 5, "juin": 6, "juillet": 7, "aout": 8,
    "septembre": 9, "octobre": 10, "novembre": 11, "decembre": 12,
}

# Words too common in French tech news to say two items tell the same story.
_STOPWORDS = frozenset("""
a au aux avec ce ces cet cette dans de des du elle en est et il ils la le les leur leurs mais
ne ni nous on ou par pas plus pour qu que qui sa se ses son sont sur un une vos votre vous y
ete etre fait faire avoir peut doit deja aussi comme entre apres avant depuis sans sous tout
tous toute toutes tres bien encore selon alors ainsi dont cela leurs meme autre autres lors
the of and to in for on with is are be by this that from at as it an or its was will has have
annonce annoncee nouveau nouvelle nouvelles nouveaux jour jours semaine mois annee ans selon
""".split())

_WORD_RE = re.compile(r"[a-z0-9]+")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?…])[»\"”)]?\s+(?=[«\"“(]?[A-ZÀ-ÖØ-Þ0-9])")


def fold(text: str) -> str:
    """Lower case without accents, for comparing texts."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def issue_window(date: dt.date, settings: NewsletterSettings) -> tuple[dt.datetime, dt.datetime]:
    """The 24 hours before the issue time of `date`, in UTC: [start, end)."""
    zone = zoneinfo.ZoneInfo(settings.timezone)
    end_local = dt.datetime.combine(date, settings.issue_time, tzinfo=zone)
    start_local = dt.datetime.combine(date - dt.timedelta(days=1), settings.issue_time, tzinfo=zone)
    return start_local.astimezone(dt.UTC), end_local.astimezone(dt.UTC)


# ---------------------------------------------------------------- text helpers


def cut_at_sentence(text: str, limit: int) -> str:
    """Whole sentences up to `limit` characters; a first sentence too long is cut at a word."""
    text = text.strip()
    if len(text) <= limit:
        return text
    sentences = _SENTENCE_END_RE.split(text)
    kept = ""
    for sentence in sentences:
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > limit:
            break
        kept = candidate
    if kept:
        return kept
    cut = text.rfind(" ", 0, limit - 1)
    head = text[: cut if cut > 0 else limit - 1].rstrip(" ,;:-–—(«\"'")
    return head + "…"


def make_kicker(title: str) -> str:
    """An upper-case kicker ending with a full stop, from the title's first clause."""
    head = title.strip()
    for separator in (" : ", " — ", " – ", " | ", ": "):
        first = head.split(separator, 1)[0]
        if separator in head and 8 <= len(first) <= 60:
            head = first
            break
    if len(head) > 60:
        words = head.split()
        head = ""
        for word in words:
            if len(head) + len(word) + 1 > 55:
                break
            head = f"{head} {word}".strip()
    head = head.rstrip(" .!?…:;,-–—«»\"'")
    return head.upper() + "."


# ---------------------------------------------------------------- clustering


@dataclass
class _Candidate:
    entry: StoredItem
    words: frozenset[str]
    title_key: str
    score: float


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD_RE.findall(fold(text)) if (len(w) > 3 or w.isdigit()) and w not in _STOPWORDS)


class _UnionFind:
    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, index: int) -> int:
        while self.parent[index] != index:
            self.parent[index] = self.parent[self.parent[index]]
            index = self.parent[index]
        return index

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _same_story(a: _Candidate, b: _Candidate, idf: Mapping[str, float]) -> bool:
    item_a, item_b = a.entry.item, b.entry.item
    if item_a.url and item_a.url == item_b.url:
        return True
    if item_a.guid and item_a.guid == item_b.guid:
        return True
    if item_a.feed_id == item_b.feed_id:
        # An outlet does not carry the same story twice a day, but it may reuse one title for
        # different stories ("La revue du jour"), so only identical links or guids merge here.
        return False
    if not set(a.entry.classification.topics) & set(b.entry.classification.topics):
        return False
    shared = a.words & b.words
    if not shared:
        return False
    weight_shared = sum(idf[w] for w in shared)
    smaller = min(sum(idf[w] for w in a.words), sum(idf[w] for w in b.words))
    # Distinctive words (rare in the day's items) shared by both carry the decision.
    return smaller > 0 and weight_shared / smaller >= 0.34 and len(shared) >= 4


def cluster(entries: Sequence[StoredItem], source_weights: Mapping[str, float]) -> list[list[StoredItem]]:
    """Group items telling the same story; each group is ordered best item first."""
    candidates = [
        _Candidate(
            entry=e,
            words=_words(f"{e.item.title} {e.item.summary}"),
            title_key=fold(e.item.title),
            score=max(e.classification.scores.values(), default=0.0) * source_weights.get(e.item.feed_id, 1.0),
        )
        for e in entries
    ]
    document_frequency: Counter[str] = Counter()
    for candidate in candidates:
        document_frequency.update(candidate.words)
    total = max(len(candidates), 1)
    idf = {w: math.log((1 + total) / (1 + n)) + 1.0 for w, n in document_frequency.items()}
    groups = _UnionFind(len(candidates))
    for i in range(len(candidates)):
        for j in range(i + 1, len(candidates)):
            if _same_story(candidates[i], candidates[j], idf):
                groups.union(i, j)
    clusters: dict[int, list[_Candidate]] = {}
    for index, candidate in enumerate(candidates):
        clusters.setdefault(groups.find(index), []).append(candidate)
    return [
        [c.entry for c in sorted(members, key=lambda c: (-c.score, c.entry.item.id))]
        for members in clusters.values()
    ]


# ---------------------------------------------------------------- agenda

_DATE_RE = re.compile(
    r"\b(?P<lead>jusqu'au|jusqu’au|avant le|au plus tard le|d'ici le|d’ici le|dès le|des le|à partir du|a partir du"
    r"|à compter du|a compter du|depuis le|le|du|au)?\s*"
    r"(?P<day>1er|[12]?\d|3[01])\s+(?P<month>janvier|février|fevrier|mars|avril|mai|juin|juillet|août|aout"
    r"|septembre|octobre|novembre|décembre|decembre)(?:\s+(?P<year>20\d\d))?\b",
    re.IGNORECASE,
)


def _sentence_around(text: str, start: int, end: int) -> str:
    left = max(text.rfind(". ", 0, start), text.rfind("! ", 0, start), text.rfind("? ", 0, start))
    right_candidates = [i for i in (text.find(". ", end), text.find("! ", end), text.find("? ", end)) if i >= 0]
    right = min(right_candidates) + 1 if right_candidates else len(text)
    sentence = text[left + 1 if left >= 0 else 0 : right].strip()
    return cut_at_sentence(sentence, 220) if len(sentence) > 220 else sentence


def find_dates(text: str, reference: dt.date) -> list[tuple[dt.date, str]]:
    """French dates in `text` with the sentence they stand in. A date without a year is the next
    such day after `reference`; vague periods ("d'ici à 2027", "en 2026") are not dates."""
    found: list[tuple[dt.date, str]] = []
    for match in _DATE_RE.finditer(text):
        day = 1 if match["day"].lower() == "1er" else int(match["day"])
        month = MONTHS_FR[fold(match["month"])]
        try:
            if match["year"]:
                when = dt.date(int(match["year"]), month, day)
            else:
                when = dt.date(reference.year, month, day)
                if when < reference:
                    when = dt.date(reference.year + 1, month, day)
        except ValueError:
            continue  # "31 juin"
        found.append((when, _sentence_around(text, match.start(), match.end())))
    return found


def build_agenda(stories: Sequence[Story], entries: Mapping[str, StoredItem], issue_date: dt.date,
                 limit: int = 8) -> tuple[AgendaEntry, ...]:
    """Dated events and deadlines after the issue date, found in the issue's stories."""
    seen: set[tuple[dt.date, str]] = set()
    agenda: list[AgendaEntry] = []
    for story in stories:
        for item_id in story.item_ids:
            item = entries[item_id].item
            reference = (item.published or item.first_seen or dt.datetime.combine(issue_date, dt.time(),
                         tzinfo=dt.UTC)).date()
            for field_text in (item.title, item.summary, item.content):
                for when, context in find_dates(field_text, reference):
                    if when <= issue_date or (when, story.id) in seen:
                        continue
                    seen.add((when, story.id))
                    agenda.append(AgendaEntry(date=when, context=context, source=item.source, url=item.url))
    agenda.sort(key=lambda a: (a.date, a.source, a.context))
    return tuple(agenda[:limit])


# ---------------------------------------------------------------- the issue


def _make_story(group: Sequence[StoredItem], topic_order: Sequence[str], source_weights: Mapping[str, float],
                settings: NewsletterSettings, window_end: dt.datetime) -> Story:
    lead = group[0]
    scores: dict[str, float] = {}
    for entry in group:
        for topic in entry.classification.topics:
            scores[topic] = max(scores.get(topic, 0.0), entry.classification.scores.get(topic, 0.0))
    topics = tuple(t for t in topic_order if t in scores)
    primary = max(topics, key=lambda t: (scores[t], -topic_order.index(t)))
    outlets: dict[str, SourceRef] = {}
    for entry in group[1:]:
        if entry.item.source != lead.item.source:
            outlets.setdefault(entry.item.source, SourceRef(entry.item.source, entry.item.url))
    published = lead.item.published or lead.item.first_seen
    hours_old = (window_end - published).total_seconds() / 3600 if published else 24.0
    recency = max(0.0, 1.0 - max(hours_old, 0.0) / 48.0)
    weight = max(source_weights.get(e.item.feed_id, 1.0) for e in group)
    score = round(max(scores.values()) * weight * (1 + 0.6 * len(outlets)) + recency, 4)
    why = tuple(dict.fromkeys(m.text for m in lead.classification.matches_for(primary)))[:5]
    text = cut_at_sentence(lead.item.summary or lead.item.content, settings.summary_chars)
    return Story(
        id=lead.item.id, kicker=make_kicker(lead.item.title), title=lead.item.title, text=text,
        url=lead.item.url, source=lead.item.source, topics=topics, primary_topic=primary, score=score,
        item_ids=tuple(e.item.id for e in group), also_on=tuple(outlets.values()), published=published,
        why=why,
    )


def compose_issue(
    date: dt.date,
    entries: Sequence[StoredItem],
    topics: Sequence[TopicInfo],
    settings: NewsletterSettings,
    source_weights: Mapping[str, float],
    already_featured: frozenset[str] | set[str] = frozenset(),
) -> Issue:
    """The issue of `date` from the classified items of its window."""
    _, window_end = issue_window(date, settings)
    topic_order = [t.id for t in topics]
    known = set(topic_order)
    relevant = [
        e for e in entries
        if e.item.id not in already_featured and any(t in known for t in e.classification.topics)
    ]
    groups = cluster(relevant, source_weights)
    stories = sorted(
        (_make_story(g, topic_order, source_weights, settings, window_end) for g in groups),
        key=lambda s: (-s.score, s.id),
    )
    themes = {t.id: t.theme for t in topics}
    if not stories:
        return Issue(date=date, newsletter=settings, menu=(), lead=None, sections=(), agenda=(),
                     further_reading=())
    lead, rest = stories[0], stories[1:]
    sections: list[Section] = []
    further: list[Story] = []
    for topic in topics:
        in_topic = [s for s in rest if s.primary_topic == topic.id]
        shown = in_topic[: settings.max_stories_per_section]
        further.extend(in_topic[settings.max_stories_per_section :])
        if shown:
            sections.append(Section(topic=topic.id, heading=topic.heading, stories=tuple(shown)))
    further.sort(key=lambda s: (-s.score, s.id))
    menu = tuple(
        MenuTeaser(theme=themes[s.primary_topic], text=s.title, story_id=s.id) for s in stories[:3]
    )
    shown_stories = [lead, *[s for sec in sections for s in sec.stories]]
    by_id = {e.item.id: e for e in relevant}
    return Issue(
        date=date, newsletter=settings, menu=menu, lead=lead, sections=tuple(sections),
        agenda=build_agenda(shown_stories + further, by_id, date),
        further_reading=tuple(further[: settings.max_further_reading]),
    )
