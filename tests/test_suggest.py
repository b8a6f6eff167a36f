"""`pipeline suggest-rules`: terms that separate the missed labelled items, with their gains and price."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from pipeline.classify.suggest import read_labelled, suggest_rules, weighted_log_odds
from pipeline.config.topics import load_topics
from pipeline.errors import PipelineError
from pipeline.models import Item

RULES = """\
topics:
  - id: rgpd
    heading: DONNÉES PERSONNELLES
    theme: Données personnelles
    threshold: 3
    rules:
      - name: law
        any: [RGPD, CNIL]
  - id: ai_act
    heading: BRUXELLES
    theme: IA
    rules:
      - name: act
        term: AI Act
"""

ITEMS = [
    ("1", "La CNIL sanctionne un hôpital", ["rgpd"]),
    ("2", "Le Datatilsynet norvégien sanctionne Grindr", ["rgpd"]),  # missed
    ("3", "Datatilsynet : amende record pour une banque", ["rgpd"]),  # missed
    ("4", "Le Datatilsynet danois met en garde les écoles", ["rgpd"]),  # missed
    ("5", "L'AI Act entre en vigueur", ["ai_act"]),
    ("6", "Une banque norvégienne rachète une fintech", []),
    ("7", "Grindr lance une nouvelle fonction", []),
    ("8", "Les écoles danoises passent au numérique", []),
    ("9", "Météo : une semaine de pluie", []),
]


def labelled_lines() -> list[str]:
    return [json.dumps({"id": i, "title": t, "summary": "", "labels": labels, "lang": "fr"}, ensure_ascii=False)
            for i, t, labels in ITEMS]


@pytest.fixture
def topics_path(tmp_path: Path) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(textwrap.dedent(RULES), encoding="utf-8")
    return path


def test_the_word_of_the_missed_items_comes_first_with_its_gains(topics_path: Path) -> None:
    config = load_topics(topics_path)
    items = read_labelled(labelled_lines(), "set.jsonl", config.ids)
    (result,) = suggest_rules(config, items, topic="rgpd")
    assert (result.topic, result.labelled, result.missed) == ("rgpd", 4, 3)
    best = result.suggestions[0]
    assert best.term == "datatilsynet"
    assert best.in_missed == 3 and best.z > 1.0
    assert best.gains == ("2", "3", "4") and best.false_tags == ()
    # A word shared with items outside the topic costs false tags, and ranks lower if it shows at all.
    for suggestion in result.suggestions:
        assert len(suggestion.gains) > len(suggestion.false_tags)
        if suggestion.term == "sanctionne":
            assert suggestion.z < best.z


def test_stored_items_that_would_newly_get_the_topic_are_listed(topics_path: Path) -> None:
    config = load_topics(topics_path)
    items = read_labelled(labelled_lines(), "set.jsonl", config.ids)
    stored = [Item(id="s1", feed_id="f", source="S", title="Le Datatilsynet publie son rapport", url=None,
                   summary="", language="fr"),
              Item(id="s2", feed_id="f", source="S", title="La CNIL publie son rapport", url=None, summary="",
                   language="fr")]
    (result,) = suggest_rules(config, items, stored, topic="rgpd")
    assert result.stored == 2
    best = result.suggestions[0]
    assert best.term == "datatilsynet"
    assert best.stored_tags == ("Le Datatilsynet publie son rapport",)  # s2 has the topic already


def test_nothing_missed_nothing_suggested(topics_path: Path) -> None:
    config = load_topics(topics_path)
    items = read_labelled(labelled_lines(), "set.jsonl", config.ids)
    (result,) = suggest_rules(config, items, topic="ai_act")
    assert (result.missed, result.suggestions) == (0, ())


def test_unknown_topic_and_bad_labels_are_refused(topics_path: Path) -> None:
    config = load_topics(topics_path)
    items = read_labelled(labelled_lines(), "set.jsonl", config.ids)
    with pytest.raises(PipelineError, match="unknown topic 'sport'"):
        suggest_rules(config, items, topic="sport")
    with pytest.raises(PipelineError, match=r"set.jsonl:1: unknown topic 'sport' in labels"):
        read_labelled(['{"id": "1", "title": "x", "labels": ["sport"]}'], "set.jsonl", config.ids)


def test_weighted_log_odds_favours_what_is_typical_of_the_target() -> None:
    target = [{"datatilsynet", "amende"}, {"datatilsynet"}]
    others = [{"amende"}, {"amende", "banque"}, {"banque"}]
    background = Counter(f for fs in target + others for f in fs)
    scores = weighted_log_odds(target, others, background)
    assert scores["datatilsynet"] > 0 > scores["amende"]


def test_the_command_prints_and_writes_nothing(tmp_path: Path, topics_path: Path, run_cli) -> None:
    labelled = tmp_path / "set.jsonl"
    labelled.write_text("\n".join(labelled_lines()) + "\n", encoding="utf-8")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("suggest-rules", labelled, "--topics", topics_path, "--topic", "rgpd", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "rgpd: the rules miss 3 of 4 labelled items" in result.out
    assert "'datatilsynet'" in result.out and "gains 3: 2, 3, 4" in result.out
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    bad = run_cli("suggest-rules", labelled, "--topics", topics_path, "--topic", "sport", cwd=tmp_path)
    assert bad.code == 2 and "unknown topic 'sport'" in bad.err and "Traceback" not in bad.err
