"""The compiled rules engine: one regular-expression scan per field for all topics.

How it works (see docs/rules.md for the editor's view):

1. ``Classifier.compile`` collects every distinct term of every topic (rule
   conditions and ``unless`` contexts), expands each into its literal forms
   (accent-folded, plural/singular forms, ``œ``/``oe``), and builds a
   character trie of them, one for case-insensitive terms and one for
   ``case: true`` terms. The tries become a single regular expression
   anchored at word starts, whose lookaheads capture the longest term that
   starts there: the whole text is scanned once, in C, for all topics.
2. Each captured string is mapped back to the terms it stands for (the
   longest one and every term that is a word-prefix of it: "AI Act" also
   reports "AI"); this mapping is memoised per classifier.
3. Only rules that use a term found in the field are evaluated; a rule that
   holds in a field adds ``weight × field weight`` to its topic's score, once
   per field. A topic is selected when its score reaches its threshold.

Offsets are those of the field text given to the classifier (after HTML
stripping in :meth:`Classifier.classify_fields`): the scan runs on a
length-preserving fold of that text, or maps offsets back when it cannot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import product
from typing import TYPE_CHECKING

from pipeline.classify.normalize import COUNTED_WORD, SEPARATOR, fold_for_match, word_forms
from pipeline.classify.rules import FIELDS, AllOf, AnyOf, Node, Not, Term, TopicRules, terms_of
from pipeline.models import Classification, Item, Match

if TYPE_CHECKING:
    from pipeline.config.topics import TopicsConfig

__all__ = ["Classifier"]

_FIELD_ORDER = {f: i for i, f in enumerate(FIELDS)}
_CACHE_LIMIT = 200_000  # memoised captures; cleared when full so memory stays bounded

# Compiled expression nodes: small tuples are cheaper to walk than objects.
#   ("t", term_id) | ("any", parts) | ("all", parts) | ("not", part)
#   | ("near", left_ids, right_ids, within, ordered)
_CNode = tuple  # type: ignore[type-arg]

_Span = tuple[int, int]


@dataclass(frozen=True)
class _CompiledRule:
    topic: int  # index into the topics tuple
    name: str
    weight: float
    fields: frozenset[str]
    lang: frozenset[str]
    node: _CNode
    unless: tuple[_CNode, ...]  # rule's and topic's contexts


class _Trie:
    """A character trie of literal term forms, emitted as a regular expression."""

    END = ""  # key of the terminal marker

    def __init__(self) -> None:
        self.root: dict[str, dict] = {}  # type: ignore[type-arg]

    def add(self, literal: str) -> None:
        node = self.root
        for char in literal:
            node = node.setdefault(char, {})
        node[self.END] = {}

    def __bool__(self) -> bool:
        return bool(self.root)

    def pattern(self) -> str:
        return self._emit(self.root)

    def _emit(self, node: dict) -> str:  # type: ignore[type-arg]
        # Longer continuations first, then prefix wildcards, then the end of a
        # word: the first success of the regex is then the longest term.
        keys = sorted(k for k in node if k not in ("*", self.END))
        branches = [self._atom(k) + self._emit(node[k]) for k in keys]
        if "*" in node:
            branches.append(r"\w*" + self._emit(node["*"]))
        if self.END in node:
            branches.append(r"(?!\w)")
        if len(branches) == 1:
            return branches[0]
        return "(?:" + "|".join(branches) + ")"

    @staticmethod
    def _atom(char: str) -> str:
        return SEPARATOR if char == " " else re.escape(char)


def _literals(term: Term) -> set[tuple[str, ...]]:
    """Every word sequence that ``term`` stands for (plural forms, œ spelt out or not)."""
    options: list[set[str]] = []
    for word in term.words:
        # Prefixes and case-sensitive acronyms are matched as written.
        forms = {word} if word.endswith("*") or term.case else set(word_forms(word))
        for form in list(forms):
            # fold_word() spells œ/æ out; texts may still carry the ligature.
            if "oe" in form:
                forms.add(form.replace("oe", "œ"))
            if "ae" in form:
                forms.add(form.replace("ae", "æ"))
        options.append(forms)
    return {tuple(p) for p in product(*options)}


class Classifier:
    """Keyword-rule classifier compiled from a TopicsConfig. Build it with :meth:`compile`."""

    def __init__(self, topics: tuple[TopicRules, ...], terms: tuple[Term, ...], scanner: re.Pattern[str],
                 exact: dict[tuple[bool, tuple[str, ...]], tuple[int, ...]],
                 prefixed: tuple[tuple[int, bool, tuple[str, ...]], ...],
                 rules: tuple[_CompiledRule, ...], rules_by_term: dict[int, tuple[int, ...]],
                 fingerprint: str = "") -> None:
        self.topics = topics
        self.terms = terms
        self.fingerprint = fingerprint
        self._scanner = scanner
        self._exact = exact
        self._prefixed = prefixed
        self._rules = rules
        self._rules_by_term = rules_by_term
        self._weights = tuple(dict(t.field_weights) for t in topics)
        self._captures: dict[tuple[bool, str], tuple[tuple[int, int], ...]] = {}

    # ---------------------------------------------------------------- building

    @classmethod
    def compile(cls, topics: TopicsConfig) -> Classifier:
        """Compile every rule of ``topics`` into one scanner (done once per run)."""
        return cls.from_topics(topics.topics, topics.fingerprint)

    @classmethod
    def from_topics(cls, topics: Iterable[TopicRules], fingerprint: str = "") -> Classifier:
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
                return ("t", term_id(node))
            if isinstance(node, AnyOf):
                return ("any", tuple(compile_node(p) for p in node.parts))
            if isinstance(node, AllOf):
                return ("all", tuple(compile_node(p) for p in node.parts))
            if isinstance(node, Not):
                return ("not", compile_node(node.part))
            left = tuple(sorted({term_id(t) for t in terms_of(node.left)}))
            right = tuple(sorted({term_id(t) for t in terms_of(node.right)}))
            return ("near", left, right, node.within, node.ordered)

        rules: list[_CompiledRule] = []
        triggers: dict[int, list[int]] = {}
        for topic_index, topic in enumerate(topic_list):
            topic_unless = tuple(compile_node(u) for u in topic.unless)
            for rule in topic.rules:
                node = compile_node(rule.condition)
                unless = tuple(compile_node(u) for u in rule.unless) + topic_unless
                rules.append(_CompiledRule(topic_index, rule.name, rule.weight, frozenset(rule.fields),
                                           frozenset(rule.lang), node, unless))
                for tid in sorted(_positive_ids(node)):
                    triggers.setdefault(tid, []).append(len(rules) - 1)

        tries = {False: _Trie(), True: _Trie()}
        exact: dict[tuple[bool, tuple[str, ...]], list[int]] = {}
        prefixed: list[tuple[int, bool, tuple[str, ...]]] = []
        for tid, term in enumerate(terms):
            for words in sorted(_literals(term)):
                tries[term.case].add(" ".join(words))
                if any(w.endswith("*") for w in words):
                    prefixed.append((tid, term.case, words))
                else:
                    exact.setdefault((term.case, words), []).append(tid)

        # At each word start: capture the longest case-insensitive term (group 1)
        # and the longest case-sensitive one (group 2, or 3 when no
        # case-insensitive term starts there).
        ci = f"(?i:{tries[False].pattern()})" if tries[False] else ""
        cs = tries[True].pattern() if tries[True] else ""
        if ci and cs:
            body = f"(?:(?=({ci}))(?=({cs}))?|(?=({cs})))"
        elif ci:
            body = f"(?=({ci}))()()"
        elif cs:
            body = f"()()(?=({cs}))"
        else:
            body = "(?!)()()()"
        scanner = re.compile(r"(?<!\w)" + body)
        return cls(topic_list, tuple(terms), scanner, {k: tuple(v) for k, v in exact.items()},
                   tuple(prefixed), tuple(rules), {k: tuple(v) for k, v in triggers.items()}, fingerprint)

    # ---------------------------------------------------------------- classifying

    def classify(self, item: Item) -> Classification:
        """Classify a parsed item (its fields are plain text: offsets index them as they are)."""
        return self._classify(item.id, (("title", item.title), ("summary", item.summary),
                                        ("content", item.content)), item.language)

    def classify_fields(self, item_id: str, title: str, summary: str, content: str = "",
                        lang: str = "fr") -> Classification:
        """Classify raw fields; HTML is stripped first and offsets index the stripped text."""
        from pipeline.classify.normalize import strip_html

        return self._classify(item_id, (("title", strip_html(title)), ("summary", strip_html(summary)),
                                        ("content", strip_html(content))), lang)

    def _classify(self, item_id: str, fields: tuple[tuple[str, str], ...], lang: str) -> Classification:
        language = lang.split("-", 1)[0].split("_", 1)[0].lower() if lang else ""
        scores: dict[int, float] = {}
        matches: list[tuple[int, int, int, int, str, Match]] = []
        for field, text in fields:
            if not text:
                continue
            folded = fold_for_match(text)
            occurrences = self._scan(folded.text)
            if not occurrences:
                continue
            candidates: set[int] = set()
            for tid in occurrences:
                candidates.update(self._rules_by_term.get(tid, ()))
            for rule_index in sorted(candidates):
                rule = self._rules[rule_index]
                if field not in rule.fields or (rule.lang and language not in rule.lang):
                    continue
                spans = self._fire(rule, occurrences, folded.text)
                if spans is None:
                    continue
                contribution = rule.weight * self._weights[rule.topic].get(field, 0.0)
                scores[rule.topic] = scores.get(rule.topic, 0.0) + contribution
                topic_id = self.topics[rule.topic].id
                for start, end in sorted(set(spans)):
                    o_start, o_end = folded.original_span(start, end)
                    match = Match(topic=topic_id, rule=rule.name, field=field, text=text[o_start:o_end],
                                  start=o_start, end=o_end, weight=round(contribution, 2))
                    matches.append((_FIELD_ORDER[field], o_start, o_end, rule.topic, rule.name, match))
        selected = tuple(t.id for i, t in enumerate(self.topics)
                         if i in scores and scores[i] > 0 and scores[i] + 1e-9 >= t.threshold)
        matches.sort(key=lambda m: m[:5])
        return Classification(
            item_id=item_id,
            topics=selected,
            scores={self.topics[i].id: round(scores[i], 2) for i in sorted(scores)},
            matches=tuple(m[5] for m in matches),
        )

    # ---------------------------------------------------------------- internals

    def _scan(self, text: str) -> dict[int, list[_Span]]:
        """Every occurrence of every term in ``text`` (folded), by term id."""
        found: dict[int, list[_Span]] = {}
        for match in self._scanner.finditer(text):
            start = match.start()
            ci, cs_after_ci, cs_alone = match.groups()
            if ci:
                for tid, length in self._identify(False, ci):
                    found.setdefault(tid, []).append((start, start + length))
            cs = cs_after_ci or cs_alone
            if cs:
                for tid, length in self._identify(True, cs):
                    found.setdefault(tid, []).append((start, start + length))
        return found

    def _identify(self, case: bool, captured: str) -> tuple[tuple[int, int], ...]:
        """Terms matching ``captured`` or a word-prefix of it, with their lengths."""
        key = (case, captured)
        hit = self._captures.get(key)
        if hit is not None:
            return hit
        words: list[str] = []
        ends: list[int] = []
        for word in COUNTED_WORD.finditer(captured):
            words.append(word.group() if case else word.group().lower())
            ends.append(word.end())
        out: list[tuple[int, int]] = []
        for count in range(1, len(words) + 1):
            prefix = tuple(words[:count])
            for tid in self._exact.get((case, prefix), ()):
                out.append((tid, ends[count - 1]))
            for tid, term_case, pattern in self._prefixed:
                if term_case == case and len(pattern) == count and _prefix_match(pattern, prefix):
                    out.append((tid, ends[count - 1]))
        result = tuple(dict.fromkeys(out))
        if len(self._captures) >= _CACHE_LIMIT:
            self._captures.clear()
        self._captures[key] = result
        return result

    def _fire(self, rule: _CompiledRule, occ: dict[int, list[_Span]], text: str) -> list[_Span] | None:
        if rule.unless:
            cancel = [span for ctx in rule.unless for span in (_context_spans(ctx, occ, text))]
            if cancel:
                occ = {tid: kept for tid, spans in occ.items()
                       if (kept := [s for s in spans if not _overlaps(s, cancel)])}
        return _evaluate(rule.node, occ, text)


def _prefix_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    for want, got in zip(pattern, words, strict=True):
        if want.endswith("*"):
            if not got.startswith(want[:-1]):
                return False
        elif want != got:
            return False
    return True


def _positive_ids(node: _CNode) -> set[int]:
    kind = node[0]
    if kind == "t":
        return {node[1]}
    if kind in ("any", "all"):
        return {tid for part in node[1] for tid in _positive_ids(part)}
    if kind == "not":
        return set()
    return set(node[1]) | set(node[2])


def _overlaps(span: _Span, others: list[_Span]) -> bool:
    return any(span[0] < o[1] and o[0] < span[1] for o in others)


def _near_pairs(node: _CNode, occ: dict[int, list[_Span]], text: str) -> list[tuple[_Span, _Span]]:
    _, left_ids, right_ids, within, ordered = node
    lefts = [s for tid in left_ids for s in occ.get(tid, ())]
    rights = [s for tid in right_ids for s in occ.get(tid, ())]
    pairs: list[tuple[_Span, _Span]] = []
    for left in lefts:
        for right in rights:
            if left[0] < right[1] and right[0] < left[1]:
                continue  # the same words cannot be both sides
            if ordered and right[0] < left[1]:
                continue
            first, second = (left, right) if left[0] < right[0] else (right, left)
            if len(COUNTED_WORD.findall(text, first[1], second[0])) <= within:
                pairs.append((left, right))
    return pairs


def _context_spans(node: _CNode, occ: dict[int, list[_Span]], text: str) -> list[_Span]:
    if node[0] == "t":
        return list(occ.get(node[1], ()))
    return [(min(a[0], b[0]), max(a[1], b[1])) for a, b in _near_pairs(node, occ, text)]


def _evaluate(node: _CNode, occ: dict[int, list[_Span]], text: str) -> list[_Span] | None:
    """Spans that make ``node`` true in this field, or None when it is false."""
    kind = node[0]
    if kind == "t":
        spans = occ.get(node[1])
        return list(spans) if spans else None
    if kind == "any":
        out: list[_Span] | None = None
        for part in node[1]:
            spans = _evaluate(part, occ, text)
            if spans is not None:
                out = (out or []) + spans
        return out
    if kind == "all":
        collected: list[_Span] = []
        for part in node[1]:
            spans = _evaluate(part, occ, text)
            if spans is None:
                return None
            collected.extend(spans)
        return collected
    if kind == "not":
        return None if _evaluate(node[1], occ, text) is not None else []
    pairs = _near_pairs(node, occ, text)
    if not pairs:
        return None
    return [span for pair in pairs for span in pair]
