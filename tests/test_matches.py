"""The engine's explanations: rows until read, then Match objects equal to those one would build."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pipeline.classify import Classifier
from pipeline.config.topics import load_topics
from pipeline.models import Match, Matches, match_records

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real() -> Classifier:
    return Classifier.compile(load_topics(REPO / "topics.yaml"))


def test_matches_read_like_a_tuple_of_match(real: Classifier) -> None:
    title = "La CNIL sanctionne Meta"
    result = real.classify_fields("1", title, "L’IA de Meta entraînée sur vos posts : la CNIL s’en mêle.")
    matches = result.matches
    assert isinstance(matches, Matches)
    built = tuple(matches)
    assert all(isinstance(m, Match) for m in built) and len(built) == len(matches) >= 4
    assert matches == built and built == matches and hash(matches) == hash(built)
    assert matches[0] == built[0] and matches[-1] == built[-1] and matches[1:3] == built[1:3]
    # offsets index the field's text, and the text is what stands there
    for m in built:
        field = title if m.field == "title" else "L’IA de Meta entraînée sur vos posts : la CNIL s’en mêle."
        assert field[m.start:m.end] == m.text
    assert result.matches_for("rgpd") == tuple(m for m in built if m.topic == "rgpd")
    assert result.matches_for("ai_act") == ()
    assert match_records(matches) == [{name: getattr(m, name) for name in
                                       ("topic", "rule", "field", "text", "start", "end", "weight")} for m in built]
    assert match_records(matches) == match_records(built)


def test_matches_survive_pickling_as_workers_send_them(real: Classifier) -> None:
    result = real.classify_fields("1", "L'AI Act entre en vigueur", "Les obligations du RIA s'appliquent.")
    again = pickle.loads(pickle.dumps(result))
    assert again == result and tuple(again.matches) == tuple(result.matches)


def test_no_match_is_an_empty_sequence(real: Classifier) -> None:
    result = real.classify_fields("1", "Météo : du soleil sur la Bretagne", "")
    assert result.matches == () and list(result.matches) == []
