"""Classify stage: the French-aware keyword rules engine (topics.yaml → topics of an item).

Public face: :class:`Classifier` (``Classifier.compile(load_topics(path))``,
then ``classify(item)`` or ``classify_fields(...)``), :func:`classify_jsonl`
for the ``pipeline classify`` command and :func:`evaluate` /
:func:`format_report` for ``pipeline evaluate``. The normalisation shared by
rules and texts lives in :mod:`pipeline.classify.normalize` (not re-exported
here, so that the module name stays the module).
"""

from pipeline.classify.engine import Classifier
from pipeline.classify.evaluate import EvaluationReport, TopicScore, evaluate, format_report
from pipeline.classify.jsonl import classification_to_json, classify_jsonl

__all__ = [
    "Classifier",
    "EvaluationReport",
    "TopicScore",
    "classification_to_json",
    "classify_jsonl",
    "evaluate",
    "format_report",
]
