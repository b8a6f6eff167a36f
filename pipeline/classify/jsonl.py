"""JSONL in, JSONL out: the contract of ``pipeline classify`` (DESIGN.md).

Input lines are objects with ``id`` and ``title`` (strings, required),
``summary`` (HTML allowed), and optional ``content``, ``lang``, ``source``.
Each output line is::

    {"id": …, "topics": ["rgpd"], "scores": {"rgpd": 4.0},
     "matches": {"rgpd": [{"rule": "cnil", "field": "title", "text": "CNIL", "start": 0, "end": 4}]}}

Each record becomes an :class:`~pipeline.models.Item` whose fields went through the text
pass once (:func:`pipeline.text.clean_text`: HTML to text, entities, invisible characters,
feed boilerplate), as a feed's items do; ``start``/``end`` index that cleaned text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from pipeline.classify.engine import Classifier
from pipeline.errors import PipelineError
from pipeline.models import Classification, Item
from pipeline.text import clean_text

__all__ = ["InputRecord", "classification_to_json", "classify_jsonl", "read_records", "record_item",
           "record_labels"]

_OPTIONAL_TEXT = ("summary", "content", "lang", "source")


@dataclass(frozen=True)
class InputRecord:
    """One validated input line."""

    lineno: int
    id: str
    title: str
    summary: str
    content: str
    lang: str
    source: str
    raw: dict[str, Any]


def read_records(lines: Iterable[str], source_name: str) -> Iterator[InputRecord]:
    """Validate JSONL lines; blank lines are skipped, a bad line raises PipelineError."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PipelineError(f"{source_name}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") \
                from None
        if not isinstance(data, dict):
            raise PipelineError(f"{source_name}:{lineno}: expected a JSON object, got {type(data).__name__}")
        for key in ("id", "title"):
            if key not in data:
                raise PipelineError(f"{source_name}:{lineno}: missing {key!r}")
            if not isinstance(data[key], str):
                raise PipelineError(
                    f"{source_name}:{lineno}: {key!r} must be a string, got {type(data[key]).__name__}")
        if not data["id"].strip():
            raise PipelineError(f"{source_name}:{lineno}: 'id' must not be empty")
        for key in _OPTIONAL_TEXT:
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise PipelineError(
                    f"{source_name}:{lineno}: {key!r} must be a string, got {type(value).__name__}")
        yield InputRecord(
            lineno=lineno,
            id=data["id"],
            title=data["title"],
            summary=data.get("summary") or "",
            content=data.get("content") or "",
            lang=data.get("lang") or "fr",
            source=data.get("source") or "",
            raw=data,
        )


def record_item(record: InputRecord) -> Item:
    """The item of a record: its text fields through the text pass, once."""
    return Item(id=record.id, feed_id="jsonl", source=record.source, title=clean_text(record.title), url=None,
                summary=clean_text(record.summary), content=clean_text(record.content), language=record.lang)


def record_labels(record: InputRecord, known: Sequence[str], source_name: str) -> frozenset[str]:
    """The ``labels`` of a labelled line (a list of known topic ids); anything else raises PipelineError."""
    labels = record.raw.get("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise PipelineError(f"{source_name}:{record.lineno}: 'labels' must be a list of topic ids")
    unknown = sorted(set(labels) - set(known))
    if unknown:
        raise PipelineError(f"{source_name}:{record.lineno}: unknown topic {unknown[0]!r} in labels "
                            f"(known: {', '.join(known)})")
    return frozenset(labels)


def classification_to_json(result: Classification, topic_order: Iterable[str]) -> dict[str, Any]:
    """The output object of one item; matches grouped by topic in topics.yaml order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for topic in topic_order:
        found = [
            {"rule": m.rule, "field": m.field, "text": m.text, "start": m.start, "end": m.end}
            for m in result.matches
            if m.topic == topic
        ]
        if found:
            grouped[topic] = found
    out: dict[str, Any] = {"id": result.item_id, "topics": list(result.topics), "scores": dict(result.scores),
                           "matches": grouped}
    if result.dampers:  # which kind of item lowered the evidence (the matches' weights are the damped ones)
        out["damped"] = [{"damper": d.damper, "field": d.field, "text": d.text, "start": d.start, "end": d.end,
                          "factor": d.factor, "scales": list(d.scales),
                          **({"kept": list(d.spared)} if d.spared else {})}
                         for d in result.dampers]
    if result.lead_in_body:  # a teaser: its body's first sentences weighed as its lead
        out["lead_in_body"] = result.lead_in_body
    return out


def classify_jsonl(classifier: Classifier, lines: Iterable[str], out: TextIO, source_name: str) -> int:
    """Classify each JSON line of ``lines`` and write one JSON line per item to ``out``.

    Returns the number of items written. Lines are processed in order and
    written as they come, so a bad line stops the run after the good ones
    before it were written.
    """
    order = tuple(t.id for t in classifier.topics)
    count = 0
    for record in read_records(lines, source_name):
        result = classifier.classify(record_item(record))
        out.write(json.dumps(classification_to_json(result, order), ensure_ascii=False) + "\n")
        count += 1
    return count
