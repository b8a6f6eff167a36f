"""Measure rules against hand-labelled items: precision, recall, F1 per topic.

Input: JSONL lines in the format of ``labeled/README.md`` (the
``pipeline classify`` input plus a ``labels`` list). ``pipeline evaluate``
prints :func:`format_report`, which lists every false positive with the words
that caused it and every false negative with what little matched, so an
editor can see why a rule change helps or hurts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.classify.engine import Classifier
from pipeline.classify.jsonl import read_records, record_item, record_labels
from pipeline.errors import PipelineError
from pipeline.models import Damping, Match

__all__ = ["EvaluationReport", "Misclassification", "TopicScore", "evaluate", "format_report", "format_reports",
           "total"]


@dataclass(frozen=True)
class TopicScore:
    topic: str
    tp: int
    fp: int
    fn: int

    @property
    def support(self) -> int:
        """Items labelled with the topic."""
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        # No prediction at all: nothing was wrong, precision is perfect.
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass(frozen=True)
class Misclassification:
    """One wrong decision: a false positive or a false negative for ``topic``."""

    kind: str  # "FP" | "FN"
    topic: str
    item_id: str
    title: str
    score: float
    threshold: float
    matches: tuple[Match, ...]  # what matched for the topic (empty for most FNs)
    lineno: int = 0
    dampers: tuple[Damping, ...] = ()  # the kinds of item that lowered its evidence (roundup, job offer…)
    lead_in_body: int = 0  # a teaser: the sentences of its body that weighed as its lead


@dataclass(frozen=True)
class EvaluationReport:
    source: str
    items: int
    topics: tuple[TopicScore, ...]  # in topics.yaml order
    errors: tuple[Misclassification, ...] = field(default=())

    @property
    def macro_f1(self) -> float:
        return sum(t.f1 for t in self.topics) / len(self.topics) if self.topics else 0.0

    @property
    def false_positives(self) -> tuple[Misclassification, ...]:
        return tuple(e for e in self.errors if e.kind == "FP")

    @property
    def false_negatives(self) -> tuple[Misclassification, ...]:
        return tuple(e for e in self.errors if e.kind == "FN")

    def score(self, topic: str) -> TopicScore:
        for entry in self.topics:
            if entry.topic == topic:
                return entry
        raise KeyError(topic)


def evaluate(classifier: Classifier, lines: Iterable[str], source_name: str) -> EvaluationReport:
    """Classify labelled JSONL lines and compare with their ``labels``."""
    known = [t.id for t in classifier.topics]
    thresholds = {t.id: t.threshold for t in classifier.topics}
    counts = {t: [0, 0, 0] for t in known}  # tp, fp, fn
    errors: list[Misclassification] = []
    items = 0
    for record in read_records(lines, source_name):
        labels = record_labels(record, known, source_name)
        items += 1
        result = classifier.classify(record_item(record))
        predicted = set(result.topics)
        for topic in known:
            want, got = topic in labels, topic in predicted
            if want and got:
                counts[topic][0] += 1
            elif got or want:
                counts[topic][1 if got else 2] += 1
                errors.append(Misclassification("FP" if got else "FN", topic, record.id, record.title,
                                    result.scores.get(topic, 0.0), thresholds[topic],
                                    result.matches_for(topic), record.lineno, result.dampers,
                                    result.lead_in_body))
    if not items:
        raise PipelineError(f"{source_name}: no labelled item to evaluate")
    scores = tuple(TopicScore(t, *counts[t]) for t in known)
    return EvaluationReport(source=source_name, items=items, topics=scores, errors=tuple(errors))


def total(reports: Sequence[EvaluationReport]) -> EvaluationReport:
    """The reports of several files as one: items and counts added up, topic by topic."""
    if not reports:
        raise PipelineError("no report to add up")
    topics = [t.topic for t in reports[0].topics]
    counts = {t: [0, 0, 0] for t in topics}
    for report in reports:
        for score in report.topics:
            entry = counts[score.topic]
            entry[0] += score.tp
            entry[1] += score.fp
            entry[2] += score.fn
    return EvaluationReport(source="total", items=sum(r.items for r in reports),
                            topics=tuple(TopicScore(t, *counts[t]) for t in topics),
                            errors=tuple(e for r in reports for e in r.errors))


def _matched_words(matches: tuple[Match, ...]) -> str:
    if not matches:
        return "nothing matched"
    parts: list[str] = []
    for m in matches:
        part = f"{m.field}:{m.rule}:«{m.text}»"
        if part not in parts:
            parts.append(part)
    return ", ".join(parts)


def damping_text(dampers: Sequence[Damping]) -> str:
    """``damped ×0.35 by roundup «En bref» (title; summary, content)``: which damper, its marker, what it
    scaled, and the topics whose story it kept (``; kept the story of meta_ai``)."""
    return "; ".join(f"damped ×{d.factor:g} by {d.damper} «{d.text}» ({d.field}; {', '.join(d.scales)}"
                     + (f"; kept the story of {', '.join(d.spared)})" if d.spared else ")")
                     for d in dampers)


def teaser_text(sentences: int) -> str:
    """What a teaser's explanation says: its title and summary held no rule, its body's opening weighed as its lead."""
    return f"a teaser: title and summary hold no rule, the body's first {sentences} sentences weighed as the lead"


def _table(report: EvaluationReport) -> list[str]:
    width = max([len("topic")] + [len(t.topic) for t in report.topics])
    lines = [
        f"{report.source}: {report.items} items",
        "",
        f"{'topic':<{width}}  {'TP':>3} {'FP':>3} {'FN':>3}  {'precision':>9} {'recall':>6} {'F1':>5}",
    ]
    for t in report.topics:
        lines.append(f"{t.topic:<{width}}  {t.tp:>3} {t.fp:>3} {t.fn:>3}  {t.precision:>9.3f} "
                     f"{t.recall:>6.3f} {t.f1:>5.3f}")
    lines.append(f"{'macro-F1':<{width}}  {'':>3} {'':>3} {'':>3}  {'':>9} {'':>6} {report.macro_f1:>5.3f}")
    return lines


def format_reports(reports: Sequence[EvaluationReport]) -> str:
    """One :func:`format_report` per file, then, for several files, the table of their total."""
    parts = [format_report(report) for report in reports]
    if len(reports) > 1:
        parts.append("\n".join(_table(total(reports))) + "\n")
    return "\n".join(parts)


def format_report(report: EvaluationReport) -> str:
    """A text table of P/R/F1 per topic, macro-F1, then every FP and FN with its matched words."""
    lines = _table(report)
    for kind, title in (("FP", "False positives"), ("FN", "False negatives")):
        errors = [e for e in report.errors if e.kind == kind]
        lines.append("")
        lines.append(f"{title} ({len(errors)}):" if errors else f"{title}: none")
        for e in errors:
            lines.append(f"  [{e.topic}] {e.item_id}: {e.title}")
            lines.append(f"      score {e.score:g} / threshold {e.threshold:g}; {_matched_words(e.matches)}")
            if e.dampers and e.matches:
                lines.append(f"      {damping_text(e.dampers)}")
            if e.lead_in_body and e.matches:
                lines.append(f"      {teaser_text(e.lead_in_body)}")
    return "\n".join(lines) + "\n"
