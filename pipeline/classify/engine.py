"""The compiled rules engine: one Aho-Corasick pass over each item for all topics.

How it works (README.md, "Topic rules", has the editor's view):

1. :meth:`Classifier.compile` collects every distinct term of every topic
   (rule conditions and ``unless`` contexts) and expands it into its literal
   forms: normalised words (see :mod:`pipeline.classify.normalize`), plural
   and singular forms, ligature spellings. Each form, padded with a space on
   both sides (``" ai act "``; a prefix ``régul*`` is ``" regul"``), becomes a
   keyword of one Aho-Corasick automaton. Because the folded text has a
   space in place of every non-alphanumeric character, a padded keyword can
   only match whole words, and the words of a phrase must follow each other
   separated by exactly one space, hyphen or apostrophe (a comma or a full
   stop ends a phrase).
2. An item's fields are folded together (one Latin-1 byte-table pass) and
   scanned once by the automaton (pyahocorasick, in C); every occurrence of every term comes
   out, overlapping ones included ("AI Act" also reports "AI"), with its
   offsets. ``case: true`` terms are then checked against the case-kept fold
   of the matched characters.
3. Only rules that use a term found in a field are evaluated there. A rule
   that holds in a field adds ``weight × field weight`` to its topic's score,
   once per field; a topic is selected when its score reaches its threshold.
   Which rules are candidates, and the outcome of every rule that does not
   depend on positions (no `near` with both sides present, no `unless`
   context that can apply), follow from the set of terms in the field alone:
   they are worked out once per (field, language, set of terms) into a
   *plan*, memoised by the classifier, and an item whose term sets were
   seen before only collects its spans and evaluates the rest.

Offsets in matches index the field text given to the classifier: the text
pass's output (:func:`pipeline.text.clean_text`), never HTML.

Why an automaton: the first version compiled the same terms into one
regular expression (a character trie as nested alternations, tried at every
word start). On the benchmark's items its scan alone took about fifteen times
as long as folding plus the automaton's, because the regex engine tries the
alternatives one after the other at each word, while the automaton reads each
character once. ``benchmarks/classify.py`` compares the engine with the naive
approach.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice, product
from typing import TYPE_CHECKING, NamedTuple

import ahocorasick

from pipeline.classify.normalize import (
    ELISIONS,
    case_fold_latin1,
    fold_for_match,
    fold_parts,
    ligature_forms,
    original_span,
    word_forms,
)
from pipeline.classify.rules import FIELDS, AllOf, AnyOf, Damper, Near, Node, Not, Term, TopicRules, terms_of
from pipeline.models import MATCH_SOURCE_FIELDS, Classification, Damping, Item, Matches

if TYPE_CHECKING:
    from pipeline.config.topics import TopicsConfig

__all__ = ["Classifier"]

# Fields are joined with two spaces' worth of separator: no phrase (one
# space between words) can run from a title into a summary.
_FIELD_SEPARATOR = "\n\n"

_Span = tuple[int, int]
_Occurrences = dict[int, list[_Span]]


# Compiled expression nodes: the rule language's nodes with term ids in place
# of terms (frozen, so plans holding them can be compared and shared).
@dataclass(frozen=True, slots=True)
class _TermSet:
    """Any of these terms."""

    ids: frozenset[int]


@dataclass(frozen=True, slots=True)
class _AnyOf:
    parts: tuple[_CNode, ...]


@dataclass(frozen=True, slots=True)
class _AllOf:
    parts: tuple[_CNode, ...]


@dataclass(frozen=True, slots=True)
class _NotOf:
    part: _CNode


@dataclass(frozen=True, slots=True)
class _NearOf:
    left: frozenset[int]
    right: frozenset[int]
    within: int
    ordered: bool


_CNode = _TermSet | _AnyOf | _AllOf | _NotOf | _NearOf
# An `unless` context: terms, or a `near` of terms.
_Context = _TermSet | _NearOf


# The hot loops unpack these per step and per keyword found: plain tuples,
# because CPython unpacks an exact tuple faster than a NamedTuple.
#
# What a step evaluates on occurrences: (the rule's node, the topic's
# contexts and the rule's own that can apply).
_Positional = tuple[_CNode, tuple[_Context, ...], tuple[_Context, ...]]
# One candidate rule of a field's plan: (topic index, contribution in this
# field (weight × field weight), rule name, contribution as shown in matches
# (2 decimals), the terms whose occurrences explain the rule, and None when
# the terms present decide the rule, else what to evaluate on positions).
_Step = tuple[int, float, str, float, tuple[int, ...], _Positional | None]
# A field's plan: its candidate rules, in rule order.
_Plan = tuple[_Step, ...]
# A keyword's term that needs a check when found: (term id, the literal with
# its case for `case: true` terms or None, whether it is a prefix).
_Special = tuple[int, str | None, bool]
# What the automaton reports for a keyword: (its length, the one plain term
# it stands for (the commonest case) or -1, the terms found wherever it is,
# the terms that need a check).
_Keyword = tuple[int, int, tuple[int, ...], tuple[_Special, ...]]


class _CompiledDamper(NamedTuple):
    """A damper of topics.yaml, compiled."""

    markers: frozenset[int]  # its marker term ids
    look_in: tuple[int, ...]  # the field indexes where they are looked for
    factors: tuple[float, float, float]  # by field index: 1.0 where it does not scale
    name: str
    after_marker: bool  # it damps only what follows its marker in the field: passing lines
    keeps_stories: bool  # it keeps the stories it tells over two sentences: a roundup's paragraph


# A damper that lowered evidence, for the explanation: (field index of its marker,
# marker start, end in joined-folded offsets, damper index, factor, field indexes it scaled).
_DampingRow = tuple[int, int, int, int, float, tuple[int, ...]]
# Passing lines of a field: (where its first marker starts, joined-folded; factor; damper index).
_Tail = tuple[int, float, int]

# Plan zones beyond the three fields: the content read as the lead, and the title
# and the lead read together (rules with `combine`).
_CONTENT_AS_LEAD = 3
_COMBINED = 4

# Where a sentence ends: a full stop, question or exclamation mark before a space, a "|" or a line
# break (a roundup's sections). Not a semicolon: the one-liners of "En bref" are joined by them.
_SENTENCE_END = re.compile(r"[.!?…]+[\s»\"”)]+|\||\n")

# A summary of fewer words than this is no lead ("Lire la suite").
_SHORT_SUMMARY_WORDS = 5

# Distinct (field, language, term set) keys kept before the memo starts
# again: plans are shared, so an entry costs about its key (a few hundred
# bytes), tens of MB at most.
_PLAN_CACHE_SIZE = 65_536


@dataclass(frozen=True)
class _CompiledRule:
    topic: int  # index into the topics tuple
    name: str
    weight: float
    fields: frozenset[str]
    lang: frozenset[str]
    node: _CNode
    triggers: frozenset[int]  # term ids whose presence can make the rule true
    unless: tuple[_Context, ...]  # the rule's own contexts
    topic_unless: tuple[_Context, ...]  # its topic's contexts
    required: tuple[frozenset[int], ...]  # each must meet the field's terms for the rule to hold
    # weight × the topic's field weight, by field index, then for the title and the lead read together
    # (a `combine` rule: weighed as the lead)
    contributions: tuple[float, float, float, float]
    positional: bool  # has a `near`: its outcome depends on where the terms are, not only which
    rounded: tuple[float, float, float, float]  # contributions as shown in matches (2 decimals)


def _literals(term: Term) -> list[tuple[str, ...]]:
    """Every word sequence that ``term`` stands for, sorted for determinism."""
    options: list[set[str]] = []
    in_phrase = len(term.words) > 1
    for word in term.words:
        if word.endswith("*") or term.case:
            # Prefixes and case-sensitive acronyms are matched as written.
            options.append(ligature_forms({word}))
        else:
            options.append(set(word_forms(word, in_phrase)))
    return sorted(set(product(*options)))


# An English plural possessive in a phrase ("users' data"): its apostrophe and the space after
# it fold to two spaces, so the phrase is also looked for with two spaces after that word.
_POSSESSIVE_RE = re.compile(r"(\w*s)['’]\s")


def _possessives(term: Term) -> tuple[str, ...]:
    """The folded words of ``term`` written as plural possessives (``users'``)."""
    return tuple(sorted({fold_for_match(m.group(1)).text.lower() for m in _POSSESSIVE_RE.finditer(term.text)}))


def _with_possessives(keyword: str, possessives: tuple[str, ...]) -> list[str]:
    """``keyword``, then its spelling with two spaces after each possessive word it contains."""
    keywords = [keyword]
    for word in possessives:
        keywords += [k.replace(f" {word} ", f" {word}  ", 1) for k in keywords if f" {word} " in k[:-1]]
    return keywords


class Classifier:
    """Keyword-rule classifier compiled from a TopicsConfig. Build it with :meth:`compile`.

    Its rules are immutable once built, and it is safe to share between
    threads: the only state that changes is the bounded memo of plans, whose
    entries are immutable and equal whichever thread makes them.
    """

    def __init__(self, topics: tuple[TopicRules, ...], terms: tuple[Term, ...],
                 automaton: ahocorasick.Automaton, rules: tuple[_CompiledRule, ...],
                 rules_by_term: tuple[dict[int, tuple[int, ...]], ...], fingerprint: str = "",
                 dampers: tuple[_CompiledDamper, ...] = (), depth: tuple[int, int] = (0, 0),
                 teaser_lead: int = 0) -> None:
        self.topics = topics
        self.terms = terms
        self.fingerprint = fingerprint
        self._automaton = automaton
        self._rules = rules
        self._rules_by_term = rules_by_term
        self._dampers = dampers
        # By field index, the markers of every damper that looks there: one set test per field
        # rules out the common case, an item of no damped kind.
        self._damper_markers = tuple(frozenset().union(*(d.markers for d in dampers if f in d.look_in))
                                     for f in range(len(FIELDS)))
        # Whether some rule reads the title and the lead together.
        # The terms the `combine` rules read (conditions, negations, contexts): the plans of the title and
        # the lead read together are keyed by these alone, so that other words do not multiply them.
        combined = {r for rules_of_term in (rules_by_term[3].values() if len(rules_by_term) > 3 else ())
                    for r in rules_of_term}
        self._combine_terms = frozenset(
            tid for r in combined
            for node in (rules[r].node, *rules[r].unless, *rules[r].topic_unless) for tid in _all_ids(node))
        # Characters of the summary and of the content that are read (0: all).
        self._depth = depth
        # Sentences of the body that weigh as the lead of a teaser (0: never).
        self._teaser_lead = teaser_lead
        # By topic, what turns a contribution in the content into one in the lead (a roundup's story).
        self._content_to_lead = tuple(t.field_weight("summary") / t.field_weight("content")
                                      if t.field_weight("content") else 1.0 for t in topics)
        self._thresholds = tuple(t.threshold for t in topics)
        self._ids = tuple(t.id for t in topics)
        # (field index, language, terms present) → plan. Filled as items are
        # classified; plans are immutable, and a plan computed twice by two
        # threads is the same plan, so sharing the classifier stays safe.
        self._plans: dict[tuple[int, str, frozenset[int]], _Plan] = {}  # the language as given
        self._plan_copies: dict[_Plan, _Plan] = {}

    # ---------------------------------------------------------------- building

    @classmethod
    def compile(cls, topics: TopicsConfig) -> Classifier:
        """Compile every rule of ``topics`` into one automaton (done once per run)."""
        return cls.from_topics(topics.topics, topics.fingerprint, topics.dampen, topics.depth, topics.teaser_lead)

    @classmethod
    def from_topics(cls, topics: Iterable[TopicRules], fingerprint: str = "",
                    dampen: Iterable[Damper] = (), depth: tuple[int, int] = (0, 0),
                    teaser_lead: int = 0) -> Classifier:
        """Compile rules given as values (tests and tools build them in code).

        ``depth`` is how many characters of the summary and of the content are
        read (0: all of it): a mention deeper in a long text is not its subject.
        ``teaser_lead`` is how many sentences of the body weigh as the lead when
        the title and the summary hold no rule (a teaser; 0: never).
        """
        topic_list = tuple(topics)
        ids: dict[tuple[tuple[str, ...], bool], int] = {}
        terms: list[Term] = []

        def term_id(term: Term) -> int:
            key = (term.words, term.case)
            if key not in ids:
                ids[key] = len(terms)
                terms.append(term)
            return ids[key]

        def compile_node(node: Node) -> _CNode:
            if isinstance(node, Term):
                return _TermSet(frozenset({term_id(node)}))
            if isinstance(node, AnyOf):
                if all(isinstance(p, Term) for p in node.parts):
                    return _TermSet(frozenset(term_id(t) for t in terms_of(node)))
                # The plain terms of a mixed `any` are one set part (first):
                # it holds with the same spans as the terms one by one.
                # (Parts compiled in writing order: term ids stay those of the rules as written.)
                compiled = [(term_id(p), None) if isinstance(p, Term) else (-1, compile_node(p)) for p in node.parts]
                words = frozenset(tid for tid, part in compiled if part is None)
                others = tuple(part for _, part in compiled if part is not None)
                return _AnyOf((_TermSet(words), *others) if words else others)
            if isinstance(node, AllOf):
                return _AllOf(tuple(compile_node(p) for p in node.parts))
            if isinstance(node, Not):
                return _NotOf(compile_node(node.part))
            if isinstance(node, Near):
                left = frozenset(term_id(t) for t in terms_of(node.left))
                right = frozenset(term_id(t) for t in terms_of(node.right))
                return _NearOf(left, right, node.within, node.ordered)
            raise TypeError(f"not a rule node: {node!r}")

        def compile_context(node: Node) -> _Context:
            compiled = compile_node(node)
            if not isinstance(compiled, _TermSet | _NearOf):
                raise TypeError(f"an `unless` context is a term or a `near`: {node!r}")
            return compiled

        rules: list[_CompiledRule] = []
        # per field index, then for the title and the lead together (`combine` rules alone):
        # term id → rules that look there and use the term
        triggers: tuple[dict[int, list[int]], ...] = tuple({} for _ in range(len(FIELDS) + 1))
        for topic_index, topic in enumerate(topic_list):
            topic_unless = tuple(compile_context(u) for u in topic.unless)
            for rule in topic.rules:
                node = compile_node(rule.condition)
                unless = tuple(compile_context(u) for u in rule.unless)
                trig = frozenset(_positive_ids(node))
                # The candidate selection already guarantees one trigger term:
                # keep only the requirements that say more.
                required = tuple(r for r in _required(node) if r != trig)
                weights = dict(topic.field_weights)
                contributions = (rule.weight * weights.get("title", 0.0), rule.weight * weights.get("summary", 0.0),
                                 rule.weight * weights.get("content", 0.0), rule.weight * weights.get("summary", 0.0))
                rules.append(_CompiledRule(
                    topic_index, rule.name, rule.weight, frozenset(rule.fields), frozenset(rule.lang), node,
                    trig, unless, topic_unless, required, contributions, _has_near(node),
                    (round(contributions[0], 2), round(contributions[1], 2), round(contributions[2], 2),
                     round(contributions[3], 2))))
                zones = (3,) if rule.combine else tuple(i for i, f in enumerate(FIELDS) if f in rule.fields)
                for zone in zones:
                    for tid in sorted(trig):
                        triggers[zone].setdefault(tid, []).append(len(rules) - 1)

        dampers = tuple(
            _CompiledDamper(
                markers=frozenset(term_id(t) for t in damper.markers),
                look_in=tuple(FIELDS.index(f) for f in damper.look_in),
                factors=(damper.factor if "title" in damper.scales else 1.0,
                         damper.factor if "summary" in damper.scales else 1.0,
                         damper.factor if "content" in damper.scales else 1.0),
                name=damper.name, after_marker=damper.after_marker, keeps_stories=damper.keeps_stories)
            for damper in dampen)

        # keyword → its terms: plain ones, and those that need a check (case-kept or prefix)
        plain: dict[str, list[int]] = {}
        special: dict[str, list[_Special]] = {}
        for tid, term in enumerate(terms):
            possessives = () if term.case else _possessives(term)
            for words in _literals(term):
                prefix = words[-1].endswith("*")
                literal = " ".join(words).rstrip("*")
                first = " " + literal.lower() + ("" if prefix else " ")
                for keyword in _with_possessives(first, possessives):
                    if term.case or prefix:
                        entry: _Special = (tid, literal if term.case else None, prefix)
                        if entry not in special.setdefault(keyword, []):
                            special[keyword].append(entry)
                    elif tid not in plain.setdefault(keyword, []):
                        plain[keyword].append(tid)
        automaton = ahocorasick.Automaton()
        for keyword in sorted(plain.keys() | special.keys()):
            plain_ids, checked = tuple(plain.get(keyword, ())), tuple(special.get(keyword, ()))
            # The commonest keyword by far stands for one plain term: its id
            # (or -1) lets _scan record it with no loop.
            single = plain_ids[0] if len(plain_ids) == 1 and not checked else -1
            value: _Keyword = (len(keyword), single, plain_ids, checked)
            automaton.add_word(keyword, value)
        if plain or special:
            automaton.make_automaton()
        by_term = tuple({k: tuple(v) for k, v in t.items()} for t in triggers)
        return cls(topic_list, tuple(terms), automaton, tuple(rules), by_term, fingerprint, dampers, depth,
                   teaser_lead)

    # ---------------------------------------------------------------- classifying

    def classify(self, item: Item) -> Classification:
        """Classify a parsed item (its fields are plain text: offsets index them as they are)."""
        return self._classify(item.id, (item.title, item.summary, item.content), item.language)

    def classify_fields(self, item_id: str, title: str, summary: str, content: str = "",
                        lang: str = "fr") -> Classification:
        """Classify plain-text fields, as the text pass leaves them (offsets index them as they are)."""
        return self._classify(item_id, (title, summary, content), lang)

    def _classify(self, item_id: str, texts: tuple[str, str, str], lang: str) -> Classification:
        # This is the hot path (every item of every run): locals instead of
        # attributes, no helper calls where the common case needs none.
        summary_depth, content_depth = self._depth
        if (summary_depth and len(texts[1]) > summary_depth) or (content_depth and len(texts[2]) > content_depth):
            texts = (texts[0], _cut(texts[1], summary_depth), _cut(texts[2], content_depth))
        # An item without a real summary (none, or a "Read more" link) has its
        # lead in the content: the content then weighs as a summary.
        content_zone = (_CONTENT_AS_LEAD if texts[2] and len(texts[1].split(None, _SHORT_SUMMARY_WORDS))
                        < _SHORT_SUMMARY_WORDS else 2)
        text, starts, encoded, cased_fold = fold_parts(_FIELD_SEPARATOR.join(texts))
        occurrences = self._scan(text, starts, encoded, cased_fold, texts)
        if not (occurrences[0] or occurrences[1] or occurrences[2]):
            return Classification(item_id, (), {}, ())
        plans = self._plans
        # Factors by field of the item kinds found (roundup, job offer…), or None.
        markers = self._damper_markers
        scale: tuple[float, float, float] | None = None
        tails: tuple[_Tail | None, _Tail | None, _Tail | None] | None = None
        kinds: tuple[int, int, int] = (-1, -1, -1)
        dampings: list[_DampingRow] = []
        spared: dict[int, set[int]] | None = None  # damper → the topics whose stories it kept
        if (not markers[0].isdisjoint(occurrences[0]) or not markers[1].isdisjoint(occurrences[1])
                or not markers[2].isdisjoint(occurrences[2])):
            scale, kinds, tails = self._scale(occurrences)
        scores: dict[int, float] = {}
        # (field index, start, end, topic index, rule name, rounded contribution)
        found: list[tuple[int, int, int, int, str, float]] = []
        # Where each field starts in the joined text. On the fast path folded
        # offsets are the original's, so spans are made field-relative right
        # away; the slow path maps them back first (in _result).
        shifts = _field_origins(texts) if not starts else (0, 0, 0)
        for field_index in (0, 1, 2):
            occ = occurrences[field_index]
            if not occ:
                continue
            shift = shifts[field_index]
            # Keyed by the zone (the field, or the content weighed as a summary)
            # and the language as given: normalised only when a plan is made.
            key = (content_zone if field_index == 2 else field_index, lang, frozenset(occ))
            plan = plans.get(key)
            if plan is None:
                plan = self._memo_plan(key)
            # The rules that hold before a passing-line marker of this field ("En bref : …"), if any.
            tail = tails[field_index] if tails is not None else None
            head: set[tuple[int, str]] | None = None
            if tail is not None:
                head = self._holding_before(key[0], lang, occ, tail[0], text)
            # The topics a roundup tells over two sentences of this field: its stories, not damped.
            stories: frozenset[int] = frozenset()
            if scale is not None and kinds[field_index] >= 0 and self._dampers[kinds[field_index]].keeps_stories:
                stories = self._stories(field_index, lang, occ, tail, text, texts, starts)
                if stories:
                    if spared is None:
                        spared = {}
                    spared.setdefault(kinds[field_index], set()).update(stories)
                    self._note_damping(dampings, kinds[field_index], field_index, scale[field_index], occurrences,
                                       kinds)
            # Occurrences left once a topic's `unless` contexts are applied,
            # computed at most once per topic and field.
            topic_occ: dict[int, _Occurrences] | None = None
            for topic, contribution, name, rounded, tids, positional in plan:
                if positional is None:
                    # Decided by the terms present alone: the spans are those of `tids`.
                    spans = occ[tids[0]] if len(tids) == 1 else [span for tid in tids for span in occ[tid]]
                else:
                    if topic_occ is None:
                        topic_occ = {}
                    evaluated = _positional(positional, topic, occ, topic_occ, text)
                    if evaluated is None:
                        continue
                    spans = evaluated
                if scale is not None:
                    if topic in stories:
                        # A roundup's story is its lead: weighed as a lead, and only its passing lines damped.
                        contribution, rounded = self._as_story(contribution, field_index, content_zone, topic, tail,
                                                               head, name, dampings, occurrences, kinds)
                    else:
                        contribution, rounded = self._damp(contribution, rounded, field_index, scale, kinds, tail,
                                                           head, topic, name, dampings, occurrences)
                scores[topic] = scores.get(topic, 0.0) + contribution
                if len(spans) == 1:
                    span_start, span_end = spans[0]
                    found.append((field_index, span_start - shift, span_end - shift, topic, name, rounded))
                else:
                    for span_start, span_end in set(spans):
                        found.append((field_index, span_start - shift, span_end - shift, topic, name, rounded))
        if self._combine_terms:
            lead = 2 if content_zone == _CONTENT_AS_LEAD else 1
            if occurrences[0] and occurrences[lead]:
                self._combine(occurrences[0], occurrences[lead], lead, lang, text, starts, texts, shifts, scale,
                              kinds, tails, dampings, occurrences, scores, found)
        if not scores:
            return Classification(item_id, (), {}, ())
        teaser = 0
        if (self._teaser_lead and content_zone != _CONTENT_AS_LEAD and (scale is None or kinds[2] < 0)
                and all(row[0] == 2 for row in found)):
            teaser = self._teaser(lang, occurrences[2], tails[2] if tails is not None else None, text, texts,
                                  starts, scores, found)
        return self._result(item_id, texts, starts, scores, found, dampings, spared, teaser)

    def _scale(self, occurrences: tuple[_Occurrences, _Occurrences, _Occurrences]
               ) -> tuple[tuple[float, float, float], tuple[int, int, int],
                          tuple[_Tail | None, _Tail | None, _Tail | None] | None]:
        """By field: the factor of the strongest item kind found, and which damper it is (-1: none);
        then, by field, the passing lines (None: no passing-line marker anywhere).

        Dampers do not multiply: an item is of one kind, and a newsletter that says so in its title
        and in its lead is no less its subject than one that says so once. The lowest factor counts.
        """
        scale = [1.0, 1.0, 1.0]
        kinds = [-1, -1, -1]
        tails: list[_Tail | None] = [None, None, None]
        for index, damper in enumerate(self._dampers):
            for f in damper.look_in:
                if damper.markers.isdisjoint(occurrences[f]):
                    continue
                if damper.after_marker:
                    # The first marker of the field starts its passing lines; the earliest damper wins.
                    cut = min(span[0] for tid in damper.markers if tid in occurrences[f]
                              for span in occurrences[f][tid])
                    current = tails[f]
                    if current is None or cut < current[0]:
                        tails[f] = (cut, damper.factors[f], index)
                    continue
                for g in (0, 1, 2):
                    if damper.factors[g] < scale[g]:
                        scale[g], kinds[g] = damper.factors[g], index
                break
        return ((scale[0], scale[1], scale[2]), (kinds[0], kinds[1], kinds[2]),
                (tails[0], tails[1], tails[2]) if tails != [None, None, None] else None)

    def _damp(self, contribution: float, rounded: float, field_index: int, scale: tuple[float, float, float],
              kinds: tuple[int, int, int], tail: _Tail | None, head: set[tuple[int, str]] | None, topic: int,
              name: str, dampings: list[_DampingRow],
              occurrences: tuple[_Occurrences, _Occurrences, _Occurrences]) -> tuple[float, float]:
        """One rule's contribution in a damped item: the strongest damper that applies to it, noted."""
        factor, damper = scale[field_index], kinds[field_index]
        if tail is not None and head is not None and (topic, name) not in head and tail[1] < factor:
            # It holds only thanks to the passing lines.
            factor, damper = tail[1], tail[2]
        if damper < 0 or factor == 1.0:
            return contribution, rounded
        self._note_damping(dampings, damper, field_index, factor, occurrences, kinds)
        contribution *= factor
        return contribution, round(contribution, 2)

    def _as_story(self, contribution: float, field_index: int, content_zone: int, topic: int, tail: _Tail | None,
                  head: set[tuple[int, str]] | None, name: str, dampings: list[_DampingRow],
                  occurrences: tuple[_Occurrences, _Occurrences, _Occurrences],
                  kinds: tuple[int, int, int]) -> tuple[float, float]:
        """A rule's contribution in a roundup's story: weighed as the lead, its passing lines still damped."""
        if field_index == 2 and content_zone != _CONTENT_AS_LEAD:
            contribution *= self._content_to_lead[topic]
        if tail is not None and head is not None and (topic, name) not in head:
            self._note_damping(dampings, tail[2], field_index, tail[1], occurrences, kinds)
            contribution *= tail[1]
        return contribution, round(contribution, 2)

    def _stories(self, field_index: int, lang: str, occ: _Occurrences, tail: _Tail | None, text: str,
                 texts: tuple[str, str, str], starts: tuple[int, ...]) -> frozenset[int]:
        """The topics a damped field tells over two consecutive sentences, before its passing lines.

        A roundup's line is one sentence; its story ("Le gros morceau — …", a numbered item told at
        length) runs over several. Two consecutive sentences that each hold some of a topic's evidence,
        and that reach its threshold together weighed as a lead, make the topic a story of the item.
        """
        origin = _field_origins(texts)[field_index]
        # Where each sentence starts, in joined-folded offsets.
        bounds = [_folded(starts, b, len(text))
                  for b in [origin] + [origin + m.end() for m in _SENTENCE_END.finditer(texts[field_index])]]
        cut = tail[0] if tail is not None else len(text)
        by_sentence: dict[int, _Occurrences] = {}
        for tid, spans in occ.items():
            for span in spans:
                if span[1] <= cut:
                    by_sentence.setdefault(bisect_right(bounds, span[0]) - 1, {}).setdefault(tid, []).append(span)
        stories: set[int] = set()
        for first in sorted(by_sentence):
            second = by_sentence.get(first + 1)
            if second is None:
                continue
            window: _Occurrences = {tid: list(spans) for tid, spans in by_sentence[first].items()}
            for tid, spans in second.items():
                window[tid] = window.get(tid, []) + spans
            # The rules that read this field, weighed as the lead (in the body: the content's rules
            # with the summary's weight, as the story is then scored by _as_story).
            key = (_CONTENT_AS_LEAD if field_index == 2 else 1, lang, frozenset(window))
            plan = self._plan_for(key)
            scores: dict[int, float] = {}
            sides: dict[int, set[bool]] = {}
            for topic, contribution, _, _, _, spans in _run(plan, window, text):
                scores[topic] = scores.get(topic, 0.0) + contribution
                sides.setdefault(topic, set()).update(span[0] >= bounds[first + 1] for span in spans)
            stories.update(topic for topic, score in scores.items()
                           if len(sides[topic]) == 2 and score > 0 and score + 1e-9 >= self._thresholds[topic])
        return frozenset(stories)

    def _teaser(self, lang: str, occ: _Occurrences, tail: _Tail | None, text: str, texts: tuple[str, str, str],
                starts: tuple[int, ...], scores: dict[int, float],
                found: list[tuple[int, int, int, int, str, float]]) -> int:
        """A teaser's title and lead hold no rule ("Une lettre recommandée et six mois de patience"): the
        body's first sentences, where its subject is told, weigh as its lead. The rules of the body that
        hold on them take the lead's weight in ``scores`` and ``found``; returns how many sentences were
        read so (0: none of them held a rule).
        """
        origin = _field_origins(texts)[2]
        ends = [m.end() for m in islice(_SENTENCE_END.finditer(texts[2]), self._teaser_lead)]
        cut = len(text) if len(ends) < self._teaser_lead else _folded(starts, origin + ends[-1], len(text))
        if tail is not None:  # a page's "À lire aussi" is no part of its lead
            cut = min(cut, tail[0])
        lead = self._holding_before(_CONTENT_AS_LEAD, lang, occ, cut, text)
        # The body's own contributions of those rules (they hold before any passing line: undamped).
        body = {(topic, name): contribution
                for topic, contribution, name, _, _, _ in _run(self._plan_for((2, lang, frozenset(occ))), occ, text)
                if (topic, name) in lead}
        if not body:
            return 0
        for (topic, _), contribution in body.items():
            scores[topic] += contribution * (self._content_to_lead[topic] - 1)
        for index, (field_index, start, end, topic, name, _) in enumerate(found):
            if (topic, name) in body:
                found[index] = (field_index, start, end, topic, name,
                                round(body[topic, name] * self._content_to_lead[topic], 2))
        return self._teaser_lead

    def _note_damping(self, dampings: list[_DampingRow], damper: int, field_index: int, factor: float,
                      occurrences: tuple[_Occurrences, _Occurrences, _Occurrences],
                      kinds: tuple[int, int, int]) -> None:
        """Record (once per damper) which damper lowered evidence, with its first marker; a damper of
        passing lines adds each field whose evidence it lowered."""
        compiled = self._dampers[damper]
        for index, row in enumerate(dampings):
            if row[3] == damper:
                if compiled.after_marker and field_index not in row[5]:
                    dampings[index] = (*row[:5], tuple(sorted((*row[5], field_index))))
                return
        where = (field_index,) if compiled.after_marker else compiled.look_in
        for f in where:
            spans = [span for tid in compiled.markers if tid in occurrences[f] for span in occurrences[f][tid]]
            if spans:
                start, end = min(spans)
                scaled = (f,) if compiled.after_marker else tuple(g for g in (0, 1, 2) if kinds[g] == damper)
                dampings.append((f, start, end, damper, factor, scaled))
                return

    def _holding_before(self, zone: int, lang: str, occ: _Occurrences, cut: int, text: str) -> set[tuple[int, str]]:
        """The rules (topic, name) that hold in a field on its words before ``cut`` alone."""
        head = {tid: kept for tid, spans in occ.items() if (kept := [s for s in spans if s[1] <= cut])}
        return self._holding(zone, lang, head, text)

    def _holding(self, zone: int, lang: str, occ: _Occurrences, text: str) -> set[tuple[int, str]]:
        """The rules (topic, name) of ``zone`` that hold on ``occ`` alone."""
        if not occ:
            return set()
        plan = self._plan_for((zone, lang, frozenset(occ)))
        return {(topic, name) for topic, _, name, _, _, _ in _run(plan, occ, text)}

    def _combine(self, title: _Occurrences, lead_occ: _Occurrences, lead: int, lang: str, text: str,
                 starts: tuple[int, ...], texts: tuple[str, str, str], shifts: tuple[int, int, int],
                 scale: tuple[float, float, float] | None, kinds: tuple[int, int, int],
                 tails: tuple[_Tail | None, _Tail | None, _Tail | None] | None, dampings: list[_DampingRow],
                 occurrences: tuple[_Occurrences, _Occurrences, _Occurrences], scores: dict[int, float],
                 found: list[tuple[int, int, int, int, str, float]]) -> None:
        """The `combine` rules: the title and the lead read together, each giving part of the evidence.

        A rule counts once, weighed as the lead (and damped as the lead is), and only when it
        holds on the two fields together, not on the title alone (whose own rules say it three
        times as strongly), and the title gives some of its evidence in words the lead does not
        have: a lead that names Apple, a partnership and Bloomberg is not made a press deal by
        "Apple" again in the title, while "Bacs à sable" in a title adds to a lead on AI systems
        placed on the market.
        """
        terms = self._combine_terms
        title_terms, lead_terms = terms.intersection(title), terms.intersection(lead_occ)
        if not lead_terms or title_terms <= lead_terms:
            return  # the title adds no word of theirs to the lead
        key = (_COMBINED, lang, title_terms | lead_terms)
        plan = self._plan_for(key)
        if not plan:
            return
        title = {tid: title[tid] for tid in title_terms}
        lead_occ = {tid: lead_occ[tid] for tid in lead_terms}
        merged: _Occurrences = dict(title)
        for tid, spans in lead_occ.items():
            merged[tid] = merged[tid] + spans if tid in merged else spans
        # Where the lead starts in the joined-folded text: spans before it are the title's.
        boundary = _folded(starts, _field_origins(texts)[1], len(text))
        tail = tails[lead] if tails is not None else None
        head = self._holding_before(_COMBINED, lang, merged, tail[0], text) if tail is not None else None
        # The title's words that the lead does not have: what the title adds.
        new = {span for tid in title_terms - lead_terms for span in title[tid]}
        title_alone: set[tuple[int, str]] | None = None
        for topic, contribution, name, rounded, _, spans in _run(plan, merged, text):
            in_title = [span for span in spans if span[0] < boundary]
            if len(in_title) == len(spans) or new.isdisjoint(in_title):
                continue  # the lead's words alone, or the title only repeats them
            if title_alone is None:  # the combined rules the title holds by itself
                title_alone = self._holding(_COMBINED, lang, title, text)
            if (topic, name) in title_alone:
                continue
            if scale is not None:
                contribution, rounded = self._damp(contribution, rounded, lead, scale, kinds, tail, head, topic,
                                                   name, dampings, occurrences)
            scores[topic] = scores.get(topic, 0.0) + contribution
            for span in set(spans):
                field_index = 0 if span[0] < boundary else lead
                shift = shifts[field_index]
                found.append((field_index, span[0] - shift, span[1] - shift, topic, name, rounded))

    def _plan_for(self, key: tuple[int, str, frozenset[int]]) -> _Plan:
        """The memoised plan for ``key`` (an empty plan is a plan too: no `or` on the lookup)."""
        plan = self._plans.get(key)
        return self._memo_plan(key) if plan is None else plan

    def _memo_plan(self, key: tuple[int, str, frozenset[int]]) -> _Plan:
        """The plan for ``key`` (zone, language as given, terms present), made and memoised."""
        zone, lang, present = key
        # zone → (the rules looking there, the weight they take): the content read as the lead
        # weighs as a summary; the title and the lead read together take the `combine` rules.
        field_index, weight_index = {_CONTENT_AS_LEAD: (2, 1), _COMBINED: (3, 3)}.get(zone, (zone, zone))
        plan = self._plan(field_index, weight_index, _language(lang), present)
        if len(self._plans) >= _PLAN_CACHE_SIZE:
            # Bounded memory; a plan is cheap to rebuild.
            self._plans.clear()
            self._plan_copies.clear()
        self._plans[key] = plan
        return plan

    def _plan(self, field_index: int, weight_index: int, language: str, present: frozenset[int]) -> _Plan:
        """What to do in a field where exactly the terms ``present`` occur (memoised by the caller).

        Candidate rules in rule order. A rule whose outcome the set of terms
        decides (no `near` with both sides present, no `unless` context that
        can apply) is settled here with the terms whose occurrences explain
        it; the others are evaluated on the occurrences themselves, with only
        the contexts that can apply.
        """
        by_term = self._rules_by_term[field_index]
        candidates: set[int] = set()
        for tid in present:
            if tid in by_term:
                candidates.update(by_term[tid])
        rules = self._rules
        steps: list[_Step] = []
        for rule_index in sorted(candidates):
            rule = rules[rule_index]
            if rule.lang and language not in rule.lang:
                continue
            # Necessary conditions: each part of an `all`, each side of a `near`.
            if any(required.isdisjoint(present) for required in rule.required):
                continue
            contribution, rounded = rule.contributions[weight_index], rule.rounded[weight_index]
            # Contexts are kept in their written order; those that cannot
            # cancel anything here would add no span in _cancel.
            topic_contexts = tuple(c for c in rule.topic_unless if _may_cancel(c, present))
            rule_contexts = tuple(c for c in rule.unless if _may_cancel(c, present))
            if topic_contexts or rule_contexts or (rule.positional and _near_may_hold(rule.node, present)):
                steps.append((rule.topic, contribution, rule.name, rounded, (),
                              (rule.node, topic_contexts, rule_contexts)))
                continue
            tids = _holding(rule.node, present)
            if tids is not None:
                steps.append((rule.topic, contribution, rule.name, rounded, tuple(sorted(tids)), None))
        plan = tuple(steps)
        # Many term sets share a plan: keep one copy of each.
        return self._plan_copies.setdefault(plan, plan)

    def _result(self, item_id: str, texts: tuple[str, str, str], starts: tuple[int, ...],
                scores: dict[int, float], found: list[tuple[int, int, int, int, str, float]],
                dampings: list[_DampingRow] | None = None, spared: dict[int, set[int]] | None = None,
                teaser: int = 0) -> Classification:
        offsets = _field_origins(texts)
        if starts:  # joined folded offsets → field offsets in the original
            found = [(fi, start - offsets[fi], end - offsets[fi], topic, name, weight)
                     for fi, (start, end), topic, name, weight in
                     [(fi, original_span(starts, start, end), topic, name, weight)
                      for fi, start, end, topic, name, weight in found]]
        damped: tuple[Damping, ...] = ()
        if dampings:  # the markers' joined offsets → field offsets in the original
            rows = []
            for fi, start, end, damper, factor, scaled in dampings:
                start, end = original_span(starts, start, end) if starts else (start, end)
                start, end = start - offsets[fi], end - offsets[fi]
                kept = tuple(self._ids[t] for t in sorted(spared.get(damper, ()))) if spared else ()
                rows.append(Damping(self._dampers[damper].name, MATCH_SOURCE_FIELDS[fi], texts[fi][start:end], start,
                                    end, factor, tuple(MATCH_SOURCE_FIELDS[g] for g in scaled), kept))
            damped = tuple(rows)
        # Same order as joined offsets: within a field both differ by a constant.
        found.sort()
        ids = self._ids
        # The explanations stay rows until read (Matches builds each Match on access).
        matches = Matches(texts, ids, tuple(found))
        thresholds = self._thresholds
        if len(scores) == 1:  # the usual case: one topic, nothing to order
            for topic, score in scores.items():
                selected = (ids[topic],) if score > 0 and score + 1e-9 >= thresholds[topic] else ()
                return Classification(item_id, selected, {ids[topic]: round(score, 2)}, matches, damped, teaser)
        ordered = sorted(scores)
        return Classification(
            item_id,
            tuple([ids[i] for i in ordered if scores[i] > 0 and scores[i] + 1e-9 >= thresholds[i]]),
            {ids[i]: round(scores[i], 2) for i in ordered},
            matches,
            damped,
            teaser,
        )

    def _scan(self, text: str, starts: tuple[int, ...], encoded: bytes, cased_fold: str,
              texts: tuple[str, str, str]) -> tuple[_Occurrences, _Occurrences, _Occurrences]:
        """Occurrences of every term, by field index then term id, in joined-folded offsets."""
        padded = " " + text + " "
        # Folded offsets where the summary and the content start.
        origins = _field_origins(texts)
        second, third = _folded(starts, origins[1], len(text)), _folded(starts, origins[2], len(text))
        occurrences: tuple[_Occurrences, _Occurrences, _Occurrences] = ({}, {}, {})
        cased_text: str | None = None  # built on the first case-sensitive candidate
        # Occurrences come out by end offset, so the field only moves forward.
        # A keyword (words joined by single spaces) never spans the two
        # separator characters: its end is in the field its start is in.
        occ, limit = occurrences[0], second
        for end, (length, single, plain, special) in self._automaton.iter(padded):
            if end >= limit:
                occ, limit = (occurrences[1], third) if end < third else (occurrences[2], len(padded))
            # padded index i is folded index i - 1, so the keyword's leading
            # space (padded end - length + 1) is where the word starts in the
            # folded text.
            start = end - length + 1
            if single >= 0:
                spans = occ.get(single)
                if spans is None:
                    occ[single] = [(start, end - 1)]
                else:
                    spans.append((start, end - 1))
                continue
            if plain:
                span = (start, end - 1)
                for tid in plain:
                    spans = occ.get(tid)
                    if spans is None:
                        occ[tid] = [span]
                    else:
                        spans.append(span)
                if not special:
                    continue
            for tid, cased, prefix in special:
                if cased is not None:
                    if cased_text is None:
                        cased_text = cased_fold or case_fold_latin1(encoded)
                    if not cased_text.startswith(cased, start):
                        continue
                span = (start, padded.find(" ", end + 1) - 1 if prefix else end - 1)
                spans = occ.get(tid)
                if spans is None:
                    occ[tid] = [span]
                else:
                    spans.append(span)
        return occurrences


# A step of a plan that holds, with its spans.
_Held = tuple[int, float, str, float, tuple[int, ...], list[_Span]]


def _run(plan: _Plan, occ: _Occurrences, text: str) -> list[_Held]:
    """The steps of ``plan`` that hold on ``occ``, each with its spans (the slower paths' loop:
    a field's passing lines, the title and the lead read together)."""
    out: list[_Held] = []
    topic_occ: dict[int, _Occurrences] = {}
    for topic, contribution, name, rounded, tids, positional in plan:
        if positional is None:
            spans = [span for tid in tids for span in occ[tid]]
        else:
            evaluated = _positional(positional, topic, occ, topic_occ, text)
            if evaluated is None:
                continue
            spans = evaluated
        out.append((topic, contribution, name, rounded, tids, spans))
    return out


def _positional(positional: _Positional, topic: int, occ: _Occurrences, topic_occ: dict[int, _Occurrences],
                text: str) -> list[_Span] | None:
    """The spans of a step that depends on positions, or None when it does not hold.

    The topic's `unless` contexts are applied once per topic and field (``topic_occ`` keeps what
    they leave), the rule's own on top of them.
    """
    node, topic_contexts, rule_contexts = positional
    field_occ = occ
    if topic_contexts:
        if topic not in topic_occ:
            topic_occ[topic] = _cancel(topic_contexts, occ, text)
        field_occ = topic_occ[topic]
    if rule_contexts:
        field_occ = _cancel(rule_contexts, field_occ, text)
    return _evaluate(node, field_occ, text)


def _field_origins(texts: tuple[str, str, str]) -> tuple[int, int, int]:
    """Where each field starts in the joined text (original offsets)."""
    second = len(texts[0]) + len(_FIELD_SEPARATOR)
    return 0, second, second + len(texts[1]) + len(_FIELD_SEPARATOR)


def _folded(starts: tuple[int, ...], offset: int, length: int) -> int:
    """A joined original offset in joined-folded offsets (``starts`` empty: they are the same;
    past the last mapped character: the folded text's ``length``)."""
    if not starts:
        return offset
    return starts[offset] if offset < len(starts) else length


def _cut(text: str, depth: int) -> str:
    """The first ``depth`` characters of ``text`` (all of it for 0), ending on a word boundary."""
    if not depth or len(text) <= depth:
        return text
    space = text.rfind(" ", 0, depth + 1)
    return text[:space] if space > 0 else text[:depth]


def _language(lang: str) -> str:
    """The language code rules compare with: ``fr-FR`` and ``fr_FR`` are ``fr``."""
    return lang.split("-", 1)[0].split("_", 1)[0].lower() if lang else ""


def _required(node: _CNode) -> tuple[frozenset[int], ...]:
    """Term sets that must each be present for ``node`` to hold (a cheap pre-check)."""
    if isinstance(node, _TermSet):
        return (node.ids,)
    if isinstance(node, _AllOf):
        return tuple(r for part in node.parts for r in _required(part))
    if isinstance(node, _NearOf):
        return (node.left, node.right)
    if isinstance(node, _AnyOf):
        return (frozenset(_positive_ids(node)),)
    return ()


def _all_ids(node: _CNode) -> set[int]:
    """Every term under ``node``, negated ones included."""
    if isinstance(node, _TermSet):
        return set(node.ids)
    if isinstance(node, _AnyOf | _AllOf):
        return {tid for part in node.parts for tid in _all_ids(part)}
    if isinstance(node, _NotOf):
        return _all_ids(node.part)
    return set(node.left) | set(node.right)


def _positive_ids(node: _CNode) -> set[int]:
    if isinstance(node, _TermSet):
        return set(node.ids)
    if isinstance(node, _AnyOf | _AllOf):
        return {tid for part in node.parts for tid in _positive_ids(part)}
    if isinstance(node, _NotOf):
        return set()
    return set(node.left) | set(node.right)


def _may_cancel(context: _Context, present: frozenset[int]) -> bool:
    """Whether an `unless` context can drop anything where the terms ``present`` occur.

    The test :func:`_cancel` makes before it looks for spans: a term context
    needs one of its terms, a `near` context both of its sides.
    """
    if isinstance(context, _TermSet):
        return not context.ids.isdisjoint(present)
    return _sides_present(context, present)


def _sides_present(node: _NearOf, present: frozenset[int] | _Occurrences) -> bool:
    """Whether both sides of a `near` have a term among ``present`` (ids, or occurrences by id)."""
    return not node.left.isdisjoint(present) and not node.right.isdisjoint(present)


def _has_near(node: _CNode) -> bool:
    if isinstance(node, _NearOf):
        return True
    if isinstance(node, _AnyOf | _AllOf):
        return any(_has_near(part) for part in node.parts)
    if isinstance(node, _NotOf):
        return _has_near(node.part)
    return False


def _near_may_hold(node: _CNode, present: frozenset[int]) -> bool:
    """Whether a `near` under ``node`` has both sides among the terms ``present``.

    When none has, every `near` is false whatever the positions, and the
    node's outcome depends on the terms present alone.
    """
    if isinstance(node, _NearOf):
        return _sides_present(node, present)
    if isinstance(node, _AnyOf | _AllOf):
        return any(_near_may_hold(part, present) for part in node.parts)
    if isinstance(node, _NotOf):
        return _near_may_hold(node.part, present)
    return False


def _holding(node: _CNode, present: frozenset[int]) -> set[int] | None:
    """The terms whose occurrences make ``node`` true, or None when it is false.

    Only for a node whose every `near` misses a side (:func:`_near_may_hold`).

    The set counterpart of :func:`_evaluate` (same parts kept, same parts
    dropped), for when no occurrence is cancelled.
    """
    if isinstance(node, _TermSet):
        hit = node.ids & present
        return set(hit) if hit else None
    if isinstance(node, _AnyOf):
        out: set[int] | None = None
        for part in node.parts:
            tids = _holding(part, present)
            if tids is not None:
                out = tids if out is None else out | tids
        return out
    if isinstance(node, _AllOf):
        collected: set[int] = set()
        for part in node.parts:
            tids = _holding(part, present)
            if tids is None:
                return None
            collected |= tids
        return collected
    if isinstance(node, _NotOf):
        return None if _holding(node.part, present) is not None else set()
    # A `near` missing a side (the caller evaluates the others on positions).
    return None


def _words_between(text: str, start: int, end: int) -> int:
    """Words between two occurrences; elided particles (l', d', qu'…) do not count."""
    words = text[start:end].split()
    # map() keeps the count in C: this runs for every pair of a `near`.
    return len(words) - sum(map(ELISIONS.__contains__, words))


def _at_most_words_between(text: str, start: int, end: int, within: int) -> bool:
    """``_words_between(text, start, end) <= within``, without splitting a long gap whole.

    Two sides far apart are the common case: the first ``within + 1`` words
    of the gap, none of them elided, already settle it.
    """
    words = text[start:end].split(None, within + 1)
    if len(words) <= within:
        return True
    if len(words) == within + 2 and ELISIONS.isdisjoint(words[:within + 1]):
        return False  # within + 1 counted words, and more after them
    return _words_between(text, start, end) <= within


def _spans_of(ids: frozenset[int], occ: _Occurrences) -> list[_Span]:
    """The occurrences of the terms ``ids`` (walks the field's few terms, not the many ids)."""
    return [span for tid in occ if tid in ids for span in occ[tid]]


def _near_pairs(node: _NearOf, occ: _Occurrences, text: str) -> list[tuple[_Span, _Span]]:
    lefts = _spans_of(node.left, occ)
    if not lefts:
        return []
    rights = _spans_of(node.right, occ)
    within, ordered = node.within, node.ordered
    pairs: list[tuple[_Span, _Span]] = []
    for left in lefts:
        left_start, left_end = left
        for right in rights:
            right_start, right_end = right
            if left_start < right_end and right_start < left_end:
                continue  # the same words cannot be both sides
            if ordered and right_start < left_end:
                continue
            gap = (left_end, right_start) if left_start < right_start else (right_end, left_start)
            if _at_most_words_between(text, *gap, within):
                pairs.append((left, right))
    return pairs


def _cancel(contexts: tuple[_Context, ...], occ: _Occurrences, text: str) -> _Occurrences:
    """Drop the occurrences that overlap an ``unless`` context ("Meta" in "Meta Quest")."""
    spans: list[_Span] = []
    for node in contexts:
        if isinstance(node, _TermSet):
            spans.extend(_spans_of(node.ids, occ))
        elif not node.left.isdisjoint(occ) and not node.right.isdisjoint(occ):  # both sides of the `near`
            spans.extend((min(a[0], b[0]), max(a[1], b[1])) for a, b in _near_pairs(node, occ, text))
    if not spans:
        return occ
    kept: _Occurrences = {}
    for tid, found in occ.items():
        left: list[_Span] = []
        for span in found:
            start, end = span
            for context_start, context_end in spans:
                if start < context_end and context_start < end:
                    break
            else:
                left.append(span)
        if left:
            kept[tid] = left
    return kept


def _evaluate(node: _CNode, occ: _Occurrences, text: str) -> list[_Span] | None:
    """Spans that make ``node`` true in this field, or None when it is false."""
    if isinstance(node, _TermSet):
        # Every term present has at least one occurrence: no span, no term.
        return _spans_of(node.ids, occ) or None
    if isinstance(node, _AnyOf):
        out: list[_Span] | None = None
        for part in node.parts:
            spans = _evaluate(part, occ, text)
            if spans is not None:
                out = spans if out is None else out + spans
        return out
    if isinstance(node, _AllOf):
        collected: list[_Span] = []
        for part in node.parts:
            spans = _evaluate(part, occ, text)
            if spans is None:
                return None
            collected.extend(spans)
        return collected
    if isinstance(node, _NotOf):
        return None if _evaluate(node.part, occ, text) is not None else []
    pairs = _near_pairs(node, occ, text)
    if not pairs:
        return None
    return [span for pair in pairs for span in pair]
