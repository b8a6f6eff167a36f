"""The rule language of topics.yaml, as typed immutable values.

`pipeline.config.topics` parses and validates topics.yaml into these values;
`pipeline.classify.engine` compiles them. Keeping them here (and free of any
YAML) lets the engine be used with rules built in code, e.g. in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

FIELDS = ("title", "summary", "content")

# Used when topics.yaml sets no `field_weights`: a title mention is worth three
# summary mentions, a body mention half of one, so that one passing mention
# deep in a long body cannot reach a threshold a title mention reaches.
DEFAULT_FIELD_WEIGHTS: tuple[tuple[str, float], ...] = (("title", 3.0), ("summary", 1.0), ("content", 0.5))


@dataclass(frozen=True)
class Term:
    """A word, a phrase, or a prefix (``régul*``): matched as whole words.

    ``case=True`` compares letters with their case as written (for acronyms
    such as ``RIA`` that are ordinary words in lower case); accents are still
    folded and plurals are not added.
    """

    text: str
    words: tuple[str, ...]  # normalised words; a trailing "*" marks a prefix
    case: bool = False
    line: int = 0


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    part: Node


@dataclass(frozen=True)
class Near:
    """``left`` and ``right`` with at most ``within`` words between them.

    Each side is a term or an ``any`` of terms. With ``ordered`` the left side
    must come first.
    """

    left: Node
    right: Node
    within: int
    ordered: bool = False


Node = Term | AnyOf | AllOf | Not | Near


@dataclass(frozen=True)
class Rule:
    name: str
    condition: Node
    weight: float = 1.0
    fields: tuple[str, ...] = FIELDS  # where the rule looks
    lang: tuple[str, ...] = ()  # empty: every language
    unless: tuple[Node, ...] = ()  # contexts that cancel an occurrence of this rule's terms
    line: int = 0
    # Read the title and the lead together: the condition holds on both fields' words, and counts only
    # when the title does not hold it alone and adds words the lead lacks (the title names the entity,
    # the lead the angle).
    combine: bool = False


@dataclass(frozen=True)
class TopicRules:
    """One topic of topics.yaml: presentation, rules and scoring."""

    id: str
    heading: str
    theme: str
    description: str
    threshold: float
    field_weights: tuple[tuple[str, float], ...]  # effective weights (global merged with the topic's)
    rules: tuple[Rule, ...]
    unless: tuple[Node, ...] = ()  # contexts that cancel occurrences for every rule of the topic
    line: int = 0

    def field_weight(self, field: str) -> float:
        return dict(self.field_weights).get(field, 0.0)


@dataclass(frozen=True)
class Damper:
    """A kind of item whose mentions are not its subject: roundups, job offers, event listings.

    When one of ``markers`` occurs in one of the fields ``look_in`` (the
    title, by default), every rule's contribution in the fields ``scales`` is
    multiplied by ``factor`` (0 to 1), for every topic. Where several dampers
    apply to a field, the strongest (lowest factor) alone counts: an item is
    of one kind, and a newsletter that says so twice is no less its subject.

    With ``after_marker``, the damper marks a roundup's passing lines inside a
    field ("En bref : …"): a rule that holds in that field only thanks to words
    after the marker's first occurrence counts ``factor`` of its weight; one
    that holds on the words before it counts in full.
    """

    name: str
    markers: tuple[Term, ...]
    factor: float
    look_in: tuple[str, ...] = ("title",)
    scales: tuple[str, ...] = FIELDS
    line: int = 0
    after_marker: bool = False
    # A roundup keeps its stories: a topic told over two consecutive sentences of a scaled field,
    # which reach its threshold together weighed as a lead, is not damped and weighs as a lead.
    keeps_stories: bool = False


def terms_of(node: Node) -> tuple[Term, ...]:
    """Every term under ``node``, negated ones included, in writing order."""
    if isinstance(node, Term):
        return (node,)
    if isinstance(node, AnyOf | AllOf):
        return tuple(t for part in node.parts for t in terms_of(part))
    if isinstance(node, Not):
        return terms_of(node.part)
    return terms_of(node.left) + terms_of(node.right)

