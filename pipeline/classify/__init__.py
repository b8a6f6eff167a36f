"""Classify stage: the French-aware keyword rules engine (topics.yaml → topics of an item).

Public face: :class:`Classifier` (``Classifier.compile(load_topics(path))``,
then ``classify(item)`` or ``classify_fields(...)``), :func:`classify_jsonl`
for the ``pipeline classify`` command and :func:`evaluate` /
:func:`format_report` for ``pipeline evaluate``. The normalisation shared by
rules and texts lives in :mod:`pipeline.classify.normalize` (not re-exported
here, so that the module name stays the module).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.classify.engine import Classifier
    from pipeline.classify.evaluate import EvaluationReport, TopicScore, evaluate, format_report
    from pipeline.classify.jsonl import classification_to_json, classify_jsonl

# Imported on first use (PEP 562): loading topics.yaml reads pipeline.classify.rules and
# .normalize, and must not pay for the engine (a run with nothing new never classifies).
_MODULE_OF = {"Classifier": "engine", "EvaluationReport": "evaluate", "TopicScore": "evaluate",
              "evaluate": "evaluate", "format_report": "evaluate", "classification_to_json": "jsonl",
              "classify_jsonl": "jsonl"}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Classifier",
    "EvaluationReport",
    "TopicScore",
    "classification_to_json",
    "classify_jsonl",
    "evaluate",
    "format_report",
]
