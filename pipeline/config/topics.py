"""Load and validate topics.yaml (the editors' keyword rules) into typed values.

Every problem is a ConfigError naming the file, the line, the topic and the
rule, e.g. ``topics.yaml:42: topic rgpd, rule cnil, any[2]: term normalises
to nothing``. The format is documented in README.md, "Topic rules".
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.classify.normalize import term_words
from pipeline.classify.rules import (
    DEFAULT_FIELD_WEIGHTS,
    FIELDS,
    AllOf,
    AnyOf,
    Damper,
    Near,
    Node,
    Not,
    Rule,
    Term,
    TopicRules,
    terms_of,
)
from pipeline.config.yamlfile import YamlList, YamlMap, check_keys, expect_list, expect_map, load_yaml
from pipeline.errors import ConfigError
from pipeline.models import TopicInfo

__all__ = ["DEFAULT_NEAR_WITHIN", "TopicsConfig", "load_topics"]

TOP_KEYS = {"version", "field_weights", "threshold", "depth", "teaser_lead", "lexicons", "dampen", "topics"}
TOPIC_KEYS = {"id", "heading", "theme", "description", "threshold", "field_weights", "unless", "rules"}
RULE_KEYS = {"name", "weight", "fields", "lang", "unless", "note", "combine"}
OPERATORS = ("term", "any", "all", "not", "near", "lexicon")
DAMPEN_KEYS = {"name", "note", "factor", "fields", "scales", "after_marker", "keeps_stories", "term", "any", "lexicon",
               "case"}
OPERATOR_OPTIONS = {"term": {"case"}, "near": {"within", "ordered"}}
DEFAULT_THRESHOLD = 3.0
DEFAULT_NEAR_WITHIN = 5
_TOPIC_ID = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class TopicsConfig:
    path: Path
    topics: tuple[TopicRules, ...]  # in file order = section order of the digest
    fingerprint: str  # sha256 of the canonical rules: changes exactly when classification can
    field_weights: tuple[tuple[str, float], ...] = DEFAULT_FIELD_WEIGHTS  # global, before topic overrides
    threshold: float = DEFAULT_THRESHOLD  # global default
    lexicons: tuple[tuple[str, tuple[Term, ...]], ...] = ()  # named term lists, in file order
    dampen: tuple[Damper, ...] = ()  # item kinds whose mentions count less (roundups, job offers…)
    depth: tuple[int, int] = (0, 0)  # characters of the summary and the content read (0: all)
    # Sentences of the body weighed as the lead when the title and the summary hold no rule (0: never).
    teaser_lead: int = 0

    def lexicon(self, name: str) -> tuple[Term, ...]:
        """The terms of the lexicon ``name`` (lexicons it includes expanded)."""
        for key, terms in self.lexicons:
            if key == name:
                return terms
        raise KeyError(name)

    def info(self) -> tuple[TopicInfo, ...]:
        return tuple(TopicInfo(t.id, t.heading, t.theme, t.description) for t in self.topics)

    def topic(self, topic_id: str) -> TopicRules:
        for topic in self.topics:
            if topic.id == topic_id:
                return topic
        raise KeyError(topic_id)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(t.id for t in self.topics)


class _Loader:
    """Walks the YAML tree; `where` strings name the topic and rule of each error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw_lexicons: YamlMap | None = None
        self.lexicons: dict[str, tuple[Term, ...]] = {}
        self.resolving: list[str] = []  # lexicons being expanded, to report a cycle

    def fail(self, message: str, line: int | None, where: str) -> ConfigError:
        return ConfigError(self.path, message, line, where or None)

    # ---------------------------------------------------------------- scalars

    def number(self, value: Any, line: int, where: str, *, positive: bool = False,
               nonzero: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"must be a number, got {value!r}", line, where)
        number = float(value)
        if not math.isfinite(number):
            raise self.fail(f"must be a finite number, got {value!r}", line, where)
        if positive and number <= 0:
            raise self.fail(f"must be greater than 0, got {value!r}", line, where)
        if nonzero and number == 0:
            raise self.fail("must not be 0 (a rule of weight 0 does nothing)", line, where)
        return number

    def flag(self, value: Any, line: int, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(f"must be true or false, got {value!r}", line, where)
        return value

    def text(self, value: Any, line: int, where: str, *, required: bool = True) -> str:
        if not isinstance(value, str):
            raise self.fail(f"must be a string, got {type(value).__name__}", line, where)
        if required and not value.strip():
            raise self.fail("must not be empty", line, where)
        return value.strip()

    def strings(self, value: Any, line: int, where: str) -> tuple[str, ...]:
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail("must be a string or a non-empty list of strings", line, where)
        return tuple(value)

    def field_weights(self, value: Any, line: int, where: str,
                      base: tuple[tuple[str, float], ...]) -> tuple[tuple[str, float], ...]:
        mapping = expect_map(self.path, value, where, line)
        check_keys(self.path, mapping, set(FIELDS), where)
        merged = dict(base)
        for key in mapping:
            weight = self.number(mapping[key], mapping.line_of(key), f"{where}.{key}")
            if weight < 0:
                raise self.fail("must not be negative", mapping.line_of(key), f"{where}.{key}")
            merged[key] = weight
        return tuple((f, merged[f]) for f in FIELDS)

    # ---------------------------------------------------------------- rule expressions

    def term(self, value: Any, line: int, where: str, case: bool = False) -> Term:
        if isinstance(value, bool | int | float):
            raise self.fail(f"a term must be a quoted string, got {value!r}", line, where)
        if not isinstance(value, str):
            raise self.fail(f"a term must be a string, got {type(value).__name__}", line, where)
        if not value.strip():
            raise self.fail("empty term", line, where)
        if "*" in value.strip().rstrip("*"):
            raise self.fail(f"term {value!r}: `*` marks a prefix and only at the end of a term", line, where)
        words = term_words(value, case)
        if not words:
            raise self.fail(f"term {value!r} normalises to nothing (only punctuation or an elided "
                            "particle such as l')", line, where)
        for word in words:
            if word.endswith("*") and len(word) < 4:
                raise self.fail(f"prefix {word!r} is too short: a prefix needs at least 3 letters",
                                line, where)
        return Term(text=value, words=words, case=case, line=line)

    def node(self, value: Any, line: int, where: str) -> Node:
        if isinstance(value, YamlList | list):
            raise self.fail("a bare list is ambiguous here: write `any: [...]` or `all: [...]`", line, where)
        if not isinstance(value, YamlMap):
            return self.term(value, line, where)
        return self.operator(value, where, allowed_extra=set())

    def operator(self, mapping: YamlMap, where: str, allowed_extra: set[str]) -> Node:
        ops = [k for k in OPERATORS if k in mapping]
        if not ops:
            raise self.fail(f"needs one of: {', '.join(OPERATORS)}", mapping.line, where)
        if len(ops) > 1:
            raise self.fail(f"unbalanced combination: {' and '.join(ops)} in the same mapping; "
                            "nest one inside the other", mapping.line_of(ops[1]), where)
        op = ops[0]
        check_keys(self.path, mapping, {op} | OPERATOR_OPTIONS.get(op, set()) | allowed_extra, where)
        value = mapping[op]
        line = mapping.line_of(op)
        inner = f"{where}.{op}" if where else op
        if op == "term":
            case = mapping.get("case", False)
            if not isinstance(case, bool):
                raise self.fail("must be true or false", mapping.line_of("case"), f"{where}.case")
            return self.term(value, line, inner, case)
        if op == "lexicon":
            return AnyOf(self.lexicon(value, line, inner))
        if op == "not":
            if isinstance(value, YamlList | list):
                raise self.fail("unbalanced combination: `not` takes one term or mapping, not a list "
                                "(write `not: {any: [...]}`)", line, inner)
            return Not(self.node(value, line, inner))
        parts = expect_list(self.path, value, inner, line)
        nodes = tuple(self.node(v, parts.item_lines[i], f"{inner}[{i}]") for i, v in enumerate(parts))
        if op == "near":
            if len(nodes) != 2:
                raise self.fail(f"unbalanced combination: near takes exactly 2 operands, got {len(nodes)}",
                                line, inner)
            for i, operand in enumerate(nodes):
                if not _is_term_set(operand):
                    raise self.fail("near operands must be terms or `any` of terms",
                                    parts.item_lines[i], f"{inner}[{i}]")
            within = mapping.get("within", DEFAULT_NEAR_WITHIN)
            within_line = mapping.line_of("within")
            if isinstance(within, bool) or not isinstance(within, int) or within < 0:
                raise self.fail(f"must be a whole number of words >= 0, got {within!r}", within_line,
                                f"{where}.within")
            ordered = mapping.get("ordered", False)
            if not isinstance(ordered, bool):
                raise self.fail("must be true or false", mapping.line_of("ordered"), f"{where}.ordered")
            return Near(nodes[0], nodes[1], within, ordered)
        if not nodes:
            raise self.fail(f"unbalanced combination: empty `{op}`", line, inner)
        if op == "all" and len(nodes) < 2:
            raise self.fail("unbalanced combination: `all` needs at least 2 parts", line, inner)
        if all(isinstance(n, Not) for n in nodes):
            raise self.fail(f"unbalanced combination: every part of `{op}` is negated, so it can only "
                            "match by absence", line, inner)
        return AnyOf(nodes) if op == "any" else AllOf(nodes)

    def lexicon(self, value: Any, line: int, where: str) -> tuple[Term, ...]:
        """The terms of the lexicon named ``value``, its own references expanded."""
        name = self.text(value, line, where)
        if name in self.lexicons:
            return self.lexicons[name]
        raw = self.raw_lexicons
        if raw is None or name not in raw:
            known = ", ".join(raw) if raw else "none"
            raise self.fail(f"unknown lexicon {name!r} (defined: {known})", line, where)
        if name in self.resolving:
            cycle = " -> ".join([*self.resolving[self.resolving.index(name):], name])
            raise self.fail(f"lexicon {name!r} includes itself ({cycle})", line, where)
        self.resolving.append(name)
        entries = expect_list(self.path, raw[name], f"lexicons.{name}", raw.line_of(name))
        if not entries:
            raise self.fail("a lexicon needs at least one term", raw.line_of(name), f"lexicons.{name}")
        terms: list[Term] = []
        for i, entry in enumerate(entries):
            entry_where = f"lexicons.{name}[{i}]"
            node = self.node(entry, entries.item_lines[i], entry_where)
            if not _is_term_set(node):
                raise self.fail("a lexicon entry is a term, {term: …, case: true}, {lexicon: NAME} or an `any` "
                                "of those", entries.item_lines[i], entry_where)
            terms.extend(terms_of(node))
        self.resolving.pop()
        self.lexicons[name] = tuple(terms)
        return self.lexicons[name]

    def dampers(self, value: Any, line: int) -> tuple[Damper, ...]:
        entries = expect_list(self.path, value, "dampen", line)
        out: list[Damper] = []
        for i, raw in enumerate(entries):
            mapping = expect_map(self.path, raw, f"dampen[{i}]", entries.item_lines[i])
            if "name" not in mapping:
                raise self.fail("missing `name`", mapping.line, f"dampen[{i}]")
            name = self.text(mapping["name"], mapping.line_of("name"), f"dampen[{i}].name")
            where = f"dampen {name}"
            check_keys(self.path, mapping, DAMPEN_KEYS, where)
            if "factor" not in mapping:
                raise self.fail("missing `factor` (0 to 1: what the contributions are multiplied by)",
                                mapping.line, where)
            factor = self.number(mapping["factor"], mapping.line_of("factor"), f"{where}.factor")
            if not 0 <= factor < 1:
                raise self.fail(f"must be at least 0 and below 1, got {factor:g}", mapping.line_of("factor"),
                                f"{where}.factor")
            ops = [k for k in ("term", "any", "lexicon") if k in mapping]
            if len(ops) != 1:
                raise self.fail("needs exactly one of: term, any, lexicon (the markers)", mapping.line, where)
            markers = self.operator(mapping, where, allowed_extra=DAMPEN_KEYS - {"term", "any", "lexicon", "case"})
            if not _is_term_set(markers):
                raise self.fail("markers must be terms (`term`, `any` of terms or `lexicon`)",
                                mapping.line_of(ops[0]), f"{where}.{ops[0]}")
            look_in = self.field_names(mapping, "fields", where, ("title",))
            scales = self.field_names(mapping, "scales", where, FIELDS)
            after_marker = False
            if "after_marker" in mapping:
                after_marker = self.flag(mapping["after_marker"], mapping.line_of("after_marker"),
                                         f"{where}.after_marker")
                if after_marker and "scales" in mapping:
                    # What it scales is the rest of the field its marker is in.
                    raise self.fail("`scales` does not go with `after_marker` (it scales what follows its "
                                    "marker in the same field)", mapping.line_of("scales"), f"{where}.scales")
                if after_marker:
                    scales = look_in
            keeps_stories = False
            if "keeps_stories" in mapping:
                keeps_stories = self.flag(mapping["keeps_stories"], mapping.line_of("keeps_stories"),
                                          f"{where}.keeps_stories")
                if keeps_stories and after_marker:
                    # The engine keeps stories from an item kind's damping only: it would do nothing.
                    raise self.fail("`keeps_stories` does not go with `after_marker` (passing lines tell no story)",
                                    mapping.line_of("keeps_stories"), f"{where}.keeps_stories")
            out.append(Damper(name=name, markers=terms_of(markers), factor=factor, look_in=look_in, scales=scales,
                              line=mapping.line, after_marker=after_marker, keeps_stories=keeps_stories))
        return tuple(out)

    def field_names(self, mapping: YamlMap, key: str, where: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if key not in mapping:
            return default
        names = self.strings(mapping[key], mapping.line_of(key), f"{where}.{key}")
        for field in names:
            if field not in FIELDS:
                raise self.fail(f"unknown field {field!r} (expected: {', '.join(FIELDS)})", mapping.line_of(key),
                                f"{where}.{key}")
        return tuple(f for f in FIELDS if f in names)

    def contexts(self, value: Any, line: int, where: str) -> tuple[Node, ...]:
        items = value if isinstance(value, YamlList) else None
        if items is None:
            if isinstance(value, list):
                items_list = list(value)
                lines = [line] * len(items_list)
            else:
                items_list, lines = [value], [line]
        else:
            items_list, lines = list(items), items.item_lines
        if not items_list:
            raise self.fail("must not be empty", line, where)
        out: list[Node] = []
        for i, item in enumerate(items_list):
            node = self.node(item, lines[i], f"{where}[{i}]")
            if isinstance(node, AnyOf) and _is_term_set(node):
                out.extend(terms_of(node))  # a lexicon or an `any` of terms: each term is a context
                continue
            if not isinstance(node, Term | Near):
                raise self.fail("an `unless` context must be a term, a `near`, an `any` of terms or a lexicon",
                                lines[i], f"{where}[{i}]")
            out.append(node)
        return tuple(out)

    # ---------------------------------------------------------------- rules and topics

    def rule(self, raw: Any, line: int, topic_where: str, index: int) -> Rule:
        mapping = expect_map(self.path, raw, f"{topic_where}, rules[{index}]", line)
        if "name" not in mapping:
            raise self.fail("missing `name`", mapping.line, f"{topic_where}, rules[{index}]")
        name = self.text(mapping["name"], mapping.line_of("name"), f"{topic_where}, rules[{index}].name")
        where = f"{topic_where}, rule {name}"
        ops = [k for k in OPERATORS if k in mapping]
        extra = RULE_KEYS | (OPERATOR_OPTIONS.get(ops[0], set()) if len(ops) == 1 else set())
        unknown = [k for k in mapping if k not in extra and k not in OPERATORS]
        if unknown:
            allowed = ", ".join(sorted(RULE_KEYS | set(OPERATORS) | {"case", "within", "ordered"}))
            raise self.fail(f"unknown key {unknown[0]!r} (expected one of: {allowed})",
                            mapping.line_of(unknown[0]), where)
        condition = self.operator(mapping, where, allowed_extra=RULE_KEYS)
        if isinstance(condition, Not):
            raise self.fail("unbalanced combination: a rule cannot be only a `not` (nothing to match); "
                            "use `all: [term, {not: …}]` or a negative weight", mapping.line_of("not"), where)
        weight = 1.0
        if "weight" in mapping:
            weight = self.number(mapping["weight"], mapping.line_of("weight"), f"{where}.weight",
                                 nonzero=True)
        fields = self.field_names(mapping, "fields", where, FIELDS)
        combine = False
        if "combine" in mapping:
            combine = self.flag(mapping["combine"], mapping.line_of("combine"), f"{where}.combine")
            if combine and "fields" in mapping:
                raise self.fail("`fields` does not go with `combine` (it reads the title and the lead together)",
                                mapping.line_of("fields"), f"{where}.fields")
            if combine:
                fields = ("title", "summary")
        lang: tuple[str, ...] = ()
        if "lang" in mapping:
            lang = tuple(x.lower() for x in self.strings(mapping["lang"], mapping.line_of("lang"),
                                                           f"{where}.lang"))
        unless: tuple[Node, ...] = ()
        if "unless" in mapping:
            unless = self.contexts(mapping["unless"], mapping.line_of("unless"), f"{where}.unless")
        if "note" in mapping:
            self.text(mapping["note"], mapping.line_of("note"), f"{where}.note", required=False)
        return Rule(name=name, condition=condition, weight=weight, fields=fields, lang=lang, unless=unless,
                    line=mapping.line, combine=combine)

    def topic(self, raw: Any, line: int, index: int, weights: tuple[tuple[str, float], ...],
              threshold: float) -> TopicRules:
        mapping = expect_map(self.path, raw, f"topics[{index}]", line)
        if "id" not in mapping:
            raise self.fail("missing `id`", mapping.line, f"topics[{index}]")
        topic_id = self.text(mapping["id"], mapping.line_of("id"), f"topics[{index}].id")
        if not _TOPIC_ID.match(topic_id):
            raise self.fail(f"topic id {topic_id!r} must be lower-case letters, digits and _",
                            mapping.line_of("id"), f"topics[{index}].id")
        where = f"topic {topic_id}"
        check_keys(self.path, mapping, TOPIC_KEYS, where)
        for key in ("heading", "theme", "rules"):
            if key not in mapping:
                raise self.fail(f"missing `{key}`", mapping.line, where)
        heading = self.text(mapping["heading"], mapping.line_of("heading"), f"{where}.heading")
        theme = self.text(mapping["theme"], mapping.line_of("theme"), f"{where}.theme")
        description = ""
        if "description" in mapping:
            description = " ".join(self.text(mapping["description"], mapping.line_of("description"),
                                             f"{where}.description", required=False).split())
        if "threshold" in mapping:
            threshold = self.number(mapping["threshold"], mapping.line_of("threshold"), f"{where}.threshold",
                                    positive=True)
        if "field_weights" in mapping:
            weights = self.field_weights(mapping["field_weights"], mapping.line_of("field_weights"),
                                         f"{where}.field_weights", weights)
        unless: tuple[Node, ...] = ()
        if "unless" in mapping:
            unless = self.contexts(mapping["unless"], mapping.line_of("unless"), f"{where}.unless")
        raw_rules = expect_list(self.path, mapping["rules"], f"{where}.rules", mapping.line_of("rules"))
        if not raw_rules:
            raise self.fail("a topic needs at least one rule", mapping.line_of("rules"), f"{where}.rules")
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        for i, raw_rule in enumerate(raw_rules):
            rule = self.rule(raw_rule, raw_rules.item_lines[i], where, i)
            if rule.name in seen:
                raise self.fail(f"duplicate rule name (first at line {seen[rule.name]})", rule.line,
                                f"{where}, rule {rule.name}")
            seen[rule.name] = rule.line
            rules.append(rule)
        if not any(r.weight > 0 for r in rules):
            raise self.fail("every rule has a negative weight: the topic can never fire",
                            mapping.line_of("rules"), f"{where}.rules")
        return TopicRules(id=topic_id, heading=heading, theme=theme, description=description,
                          threshold=threshold, field_weights=weights, rules=tuple(rules), unless=unless,
                          line=mapping.line)

    def load(self) -> TopicsConfig:
        root = load_yaml(self.path)
        top = expect_map(self.path, root, "", 1)
        check_keys(self.path, top, TOP_KEYS, "")
        if "version" in top and top["version"] != 1:
            raise self.fail(f"unsupported version {top['version']!r} (expected 1)", top.line_of("version"),
                            "version")
        weights = DEFAULT_FIELD_WEIGHTS
        if "field_weights" in top:
            weights = self.field_weights(top["field_weights"], top.line_of("field_weights"), "field_weights",
                                         weights)
        threshold = DEFAULT_THRESHOLD
        if "threshold" in top:
            threshold = self.number(top["threshold"], top.line_of("threshold"), "threshold", positive=True)
        if "lexicons" in top:
            self.raw_lexicons = expect_map(self.path, top["lexicons"], "lexicons", top.line_of("lexicons"))
            for name in self.raw_lexicons:
                self.lexicon(name, self.raw_lexicons.line_of(name), f"lexicons.{name}")
        depth = (0, 0)
        if "depth" in top:
            mapping = expect_map(self.path, top["depth"], "depth", top.line_of("depth"))
            check_keys(self.path, mapping, {"summary", "content"}, "depth")
            for key in mapping:
                value = mapping[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise self.fail(f"must be a whole number of characters >= 0 (0: all), got {value!r}",
                                    mapping.line_of(key), f"depth.{key}")
            depth = (mapping.get("summary", 0), mapping.get("content", 0))
        teaser_lead = top.get("teaser_lead", 0)
        if isinstance(teaser_lead, bool) or not isinstance(teaser_lead, int) or teaser_lead < 0:
            raise self.fail(f"must be a whole number of sentences >= 0 (0: never), got {teaser_lead!r}",
                            top.line_of("teaser_lead"), "teaser_lead")
        dampen: tuple[Damper, ...] = ()
        if "dampen" in top:
            dampen = self.dampers(top["dampen"], top.line_of("dampen"))
        if "topics" not in top:
            raise self.fail("missing `topics`", top.line, "")
        raw_topics = expect_list(self.path, top["topics"], "topics", top.line_of("topics"))
        if not raw_topics:
            raise self.fail("no topic defined", top.line_of("topics"), "topics")
        topics: list[TopicRules] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(raw_topics):
            topic = self.topic(raw, raw_topics.item_lines[i], i, weights, threshold)
            if topic.id in seen:
                raise self.fail(f"duplicate topic id (first defined at line {seen[topic.id]})", topic.line,
                                f"topic {topic.id}")
            seen[topic.id] = topic.line
            topics.append(topic)
        return TopicsConfig(path=self.path, topics=tuple(topics),
                            fingerprint=fingerprint(tuple(topics), dampen, depth, teaser_lead),
                            field_weights=weights, threshold=threshold, lexicons=tuple(self.lexicons.items()),
                            dampen=dampen, depth=depth, teaser_lead=teaser_lead)


def _is_term_set(node: Node) -> bool:
    return isinstance(node, Term) or (isinstance(node, AnyOf) and all(_is_term_set(p) for p in node.parts))


def _canonical(node: Node) -> Any:
    if isinstance(node, Term):
        return {"term": list(node.words), "case": node.case}
    if isinstance(node, AnyOf):
        return {"any": [_canonical(p) for p in node.parts]}
    if isinstance(node, AllOf):
        return {"all": [_canonical(p) for p in node.parts]}
    if isinstance(node, Not):
        return {"not": _canonical(node.part)}
    return {"near": [_canonical(node.left), _canonical(node.right)], "within": node.within,
            "ordered": node.ordered}


def fingerprint(topics: tuple[TopicRules, ...], dampen: tuple[Damper, ...] = (),
                depth: tuple[int, int] = (0, 0), teaser_lead: int = 0) -> str:
    """sha256 of what decides classification (not comments, notes, line numbers or layout).

    Terms enter in normalised form, so rewriting ``Règlement`` as
    ``reglement`` keeps the fingerprint; headings and themes enter too because
    rebuilt issues show them.
    """
    canonical = [
        {
            "id": t.id, "heading": t.heading, "theme": t.theme, "description": t.description,
            "threshold": t.threshold, "field_weights": [list(fw) for fw in t.field_weights],
            "unless": [_canonical(u) for u in t.unless],
            "rules": [
                {"name": r.name, "condition": _canonical(r.condition), "weight": r.weight,
                 "fields": list(r.fields), "lang": list(r.lang), "unless": [_canonical(u) for u in r.unless],
                 **({"combine": True} if r.combine else {})}  # (absent from older fingerprints)
                for r in t.rules
            ],
        }
        for t in topics
    ]
    if dampen or depth != (0, 0):  # (absent from older fingerprints, which stay valid)
        canonical.append({"dampen": [
            {"name": d.name, "markers": [_canonical(t) for t in d.markers], "factor": d.factor,
             "look_in": list(d.look_in), "scales": list(d.scales), **({"after_marker": True} if d.after_marker else {}),
             **({"keeps_stories": True} if d.keeps_stories else {})}
            for d in dampen], "depth": list(depth)})
    if teaser_lead:  # (absent from older fingerprints)
        canonical.append({"teaser_lead": teaser_lead})
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def load_topics(path: Path) -> TopicsConfig:
    """Parse and validate topics.yaml; raise ConfigError naming file, line, topic and rule."""
    return _Loader(Path(path)).load()
