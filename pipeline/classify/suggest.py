"""Rule suggestions from labelled items: the words that separate the missed items from the rest.

``pipeline suggest-rules LABELLED.jsonl [--topic T]`` only proposes: for each
topic, the items labelled with it that the rules miss are compared with the
items not labelled with it, word by word and two-word phrase by phrase, with
the weighted log-odds ratio and an informative Dirichlet prior of Monroe,
Colaresi & Quinn (2008, "Fightin' Words", Political Analysis 16(4)): a
feature's log-odds in the missed items minus its log-odds in the others,
both smoothed towards its frequency in all the texts (labelled and stored),
divided by its standard error (a z-score). Frequent words get no credit for
being frequent, rare ones none for a single occurrence.

Each candidate is then tried for real: the topic's rules plus one rule made of
that term alone, compiled and run on the labelled items (the items it would
gain, the false tags it would add) and on the stored items (the items that
would newly get the topic), so an editor sees the price of every word before
writing it into ``topics.yaml``. Nothing is written.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from pipeline.classify.engine import Classifier
from pipeline.classify.jsonl import read_records, record_item, record_labels
from pipeline.classify.normalize import normalize, term_words
from pipeline.classify.rules import Rule, Term, TopicRules
from pipeline.config.topics import TopicsConfig
from pipeline.errors import PipelineError
from pipeline.models import Item

__all__ = ["LabelledItem", "Suggestion", "TopicSuggestions", "format_suggestions", "read_labelled", "suggest_rules",
           "weighted_log_odds"]

# Function words of French and English: never a feature, never the edge of a phrase.
_STOPWORDS = frozenset("""
a au aux avec ce ces cet cette dans de des du elle en et est il ils je la le les leur leurs lui ma mais me
meme mes moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi ton tu un une
vos votre vous y l d j n s c m t qu jusqu lorsqu puisqu plus sont ont ete etre avoir fait sans sous entre
apres avant depuis selon comme aussi tout tous toute toutes tres peut doit deja encore bien alors donc si ni
the of and to in for on at by with from as is are was were be been has have had it its this that these those
an or not but will would can could should may might than then there their they them he she his her we our
you your i me my into over about after before under up out more most new also just said says
""".split())
# Only features more typical of the missed items than of the others (z > 0); the z-score is shown,
# and on small labelled sets even the best candidates stay below the usual 1.96.
_MIN_Z = 0.0


@dataclass(frozen=True)
class LabelledItem:
    """One labelled item (its fields through the text pass, as a feed's items) and its labels."""

    item: Item
    labels: frozenset[str]


@dataclass(frozen=True)
class Suggestion:
    """A candidate term for a topic and what adding it as a rule would do."""

    term: str  # normalised words, ready to be written as a term
    z: float  # weighted log-odds z-score, missed items against the others
    in_missed: int  # missed items whose text has the term
    gains: tuple[str, ...]  # labelled items it would make right (ids)
    false_tags: tuple[str, ...]  # labelled items it would tag wrongly (ids)
    stored_tags: tuple[str, ...]  # titles of stored items that would newly get the topic


@dataclass(frozen=True)
class TopicSuggestions:
    topic: str
    labelled: int  # items labelled with the topic
    missed: int  # of those, items the rules miss
    weight: float  # weight of the one-term rule each candidate was tried as
    stored: int  # stored items the candidates were tried on
    suggestions: tuple[Suggestion, ...]


def _features(text: str) -> set[str]:
    """The words and two-word phrases of a text, normalised; no function word at an edge."""
    words = normalize(text).split()
    out = {w for w in words if w not in _STOPWORDS and len(w) > 1 and not w.isdigit()}
    out.update(f"{a} {b}" for a, b in pairwise(words)
               if a not in _STOPWORDS and b not in _STOPWORDS and not a.isdigit() and not b.isdigit())
    return out


def _item_text(item: Item) -> str:
    return " \n ".join((item.title, item.summary, item.content))


def weighted_log_odds(target: Sequence[set[str]], others: Sequence[set[str]],
                      background: Counter[str]) -> dict[str, float]:
    """z-scores of every feature of ``target``: positive when it is more typical of ``target``.

    Counts are the number of items (sets of features) that hold a feature;
    ``background`` counts them over every text and sets the prior.
    """
    in_target = Counter(f for features in target for f in features)
    in_others = Counter(f for features in others for f in features)
    # The prior is the background counts themselves (alpha_0 = their total), as in Monroe et al.'s
    # application: it is worth as much as the data, whatever the size of the sets.
    prior = sum(background.values()) or 1
    n_target, n_others = sum(in_target.values()), sum(in_others.values())
    scores: dict[str, float] = {}
    for feature, count in in_target.items():
        alpha = background[feature]
        if alpha <= 0:
            continue
        other = in_others[feature]
        log_odds_target = math.log((count + alpha) / (n_target + prior - count - alpha))
        log_odds_others = math.log((other + alpha) / (n_others + prior - other - alpha))
        variance = 1 / (count + alpha) + 1 / (other + alpha)
        scores[feature] = (log_odds_target - log_odds_others) / math.sqrt(variance)
    return scores


def suggest_rules(config: TopicsConfig, items: Sequence[LabelledItem], stored: Sequence[Item] = (),
                  topic: str | None = None, limit: int = 12) -> tuple[TopicSuggestions, ...]:
    """Candidate terms for each topic (or ``topic``), tried on ``items`` and ``stored``."""
    known = {t.id: t for t in config.topics}
    if topic is not None and topic not in known:
        raise PipelineError(f"unknown topic {topic!r} (known: {', '.join(known)})")
    if not items:
        raise PipelineError("no labelled item to learn from")
    classifier = Classifier.compile(config)
    predicted = [set(classifier.classify(labelled.item).topics) for labelled in items]
    features = [_features(_item_text(labelled.item)) for labelled in items]
    background = Counter(f for fs in features for f in fs)
    background.update(f for item in stored for f in _features(_item_text(item)))
    stored_before = [set(classifier.classify(item).topics) for item in stored]
    out: list[TopicSuggestions] = []
    for rules in config.topics:
        if topic is not None and rules.id != topic:
            continue
        labelled = [i for i, item in enumerate(items) if rules.id in item.labels]
        missed = [i for i in labelled if rules.id not in predicted[i]]
        others = [i for i, item in enumerate(items) if rules.id not in item.labels]
        # One mention in the summary (or the title) is enough for the tried rule to select.
        weight = rules.threshold / (rules.field_weight("summary") or 1.0)
        suggestions: list[Suggestion] = []
        if missed:
            scores = weighted_log_odds([features[i] for i in missed], [features[i] for i in others], background)
            ranked = sorted((z, f) for f, z in scores.items() if z > _MIN_Z)
            ranked.reverse()
            for z, feature in ranked[: limit * 3]:
                if len(suggestions) == limit:
                    break
                suggestion = _try(config, rules, feature, weight, items, predicted, stored, stored_before)
                if suggestion is None or len(suggestion.gains) <= len(suggestion.false_tags):
                    continue  # gains nothing, or costs more than it gains on the labelled items
                suggestions.append(replace(suggestion, z=z,
                                           in_missed=sum(feature in features[i] for i in missed)))
        out.append(TopicSuggestions(rules.id, len(labelled), len(missed), weight, len(stored), tuple(suggestions)))
    return tuple(out)


def _try(config: TopicsConfig, rules: TopicRules, feature: str, weight: float, items: Sequence[LabelledItem],
         predicted: Sequence[set[str]], stored: Sequence[Item], stored_before: Sequence[set[str]]) -> Suggestion | None:
    """The effect of adding ``feature`` as a one-term rule of weight ``weight`` to ``rules``."""
    words = term_words(feature)
    if not words:
        return None
    rule = Rule(name="suggested", condition=Term(text=feature, words=words), weight=weight)
    topics = tuple(replace(t, rules=(*t.rules, rule)) if t.id == rules.id else t for t in config.topics)
    candidate = Classifier.from_topics(topics, dampen=config.dampen, depth=config.depth,
                                       teaser_lead=config.teaser_lead)
    gains: list[str] = []
    false_tags: list[str] = []
    for labelled, before in zip(items, predicted, strict=True):
        if rules.id in before:
            continue
        if rules.id in candidate.classify(labelled.item).topics:
            (gains if rules.id in labelled.labels else false_tags).append(labelled.item.id)
    stored_tags = [item.title for item, before in zip(stored, stored_before, strict=True)
                   if rules.id not in before and rules.id in candidate.classify(item).topics]
    return Suggestion(term=feature, z=0.0, in_missed=0, gains=tuple(gains), false_tags=tuple(false_tags),
                      stored_tags=tuple(stored_tags))


def read_labelled(lines: Iterable[str], source_name: str, topics: Sequence[str]) -> list[LabelledItem]:
    """The items of labelled JSONL lines (``pipeline classify`` input plus ``labels``); bad lines raise."""
    return [LabelledItem(record_item(r), record_labels(r, topics, source_name))
            for r in read_records(lines, source_name)]


def format_suggestions(results: Sequence[TopicSuggestions], source: str) -> str:
    """A readable report: per topic, the candidate terms with their gains and their price."""
    lines = [f"Candidate terms from {source} (proposals only: nothing is written)."]
    for result in results:
        lines.append("")
        lines.append(f"{result.topic}: the rules miss {result.missed} of {result.labelled} labelled items; "
                     f"each term tried as a rule of weight {result.weight:g}"
                     + (f", also on {result.stored} stored items" if result.stored else ""))
        if not result.missed:
            lines.append("  nothing missed: no suggestion")
            continue
        if not result.suggestions:
            lines.append("  no term separates the missed items from the others")
            continue
        for s in result.suggestions:
            lines.append(f"  {s.term!r}  z {s.z:.2f}, in {s.in_missed} of the {result.missed} missed")
            lines.append(f"      gains {len(s.gains)}: {', '.join(s.gains)}")
            wrong = f": {', '.join(s.false_tags)}" if s.false_tags else ""
            lines.append(f"      false tags {len(s.false_tags)}{wrong}")
            if result.stored:
                shown = "; ".join(t[:60] for t in s.stored_tags[:3]) + (" …" if len(s.stored_tags) > 3 else "")
                lines.append(f"      stored items newly tagged {len(s.stored_tags)}" + (f": {shown}" if shown else ""))
    return "\n".join(lines) + "\n"
