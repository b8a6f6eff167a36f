"""The light stemmer and the inflected forms a rule word stands for (pipeline.classify.morphology)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.classify import Classifier
from pipeline.classify.morphology import inflections, stem
from pipeline.config.topics import load_topics


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        # elisions: the particle is not part of the word
        ("l'IA", "ia"),
        ("l’intelligence", "intelligenc"),
        ("d’entraînement", "entrainement"),
        ("qu'elle", "elle"),
        ("jusqu’au", "au"),
        ("L’Europe", "europ"),
        # plurals, French and English
        ("données", "donne"),
        ("donnée", "donne"),
        ("journaux", "journal"),
        ("journal", "journal"),
        ("bureaux", "bureau"),
        ("companies", "compani"),
        ("company", "compani"),
        ("publishers", "publisher"),
        # feminine
        ("européennes", "europeen"),
        ("éditrice", "editeur"),
        ("personnelles", "personnel"),
        # acronyms never stem (a plural s aside), short words neither
        ("RIA", "ria"),
        ("LLMs", "llm"),
        ("GPAI", "gpai"),
        ("CNIL", "cnil"),
        ("IA", "ia"),
        ("news", "news"),
    ],
)
def test_stem(word: str, expected: str) -> None:
    assert stem(word) == expected


def test_forms_of_a_word_share_its_stem() -> None:
    for word in ("donnee", "europeen", "journal", "authority", "editeur", "entrainer", "interdit"):
        for form in inflections(word):
            if not word.endswith("er"):  # a verb's forms stem to its radical
                assert stem(form) == stem(word), (word, form)


@pytest.mark.parametrize(
    ("word", "found", "not_found"),
    [
        ("donnee", {"donnees"}, {"donne", "donner"}),  # data, not "gives"
        ("europeen", {"europeenne", "europeennes", "europeens"}, set()),
        ("journal", {"journaux", "journals"}, set()),
        ("authority", {"authorities"}, set()),
        ("editeur", {"editeurs", "editrice", "editrices"}, set()),
        ("entrainer", {"entraine", "entrainent", "entrainee", "entraines", "entrainant", "entrainera"}, set()),
        ("interdit", {"interdite", "interdites", "interdits"}, set()),
        ("accord", {"accords"}, {"accorde", "according"}),  # a deal is not a grant
        ("news", {"news"}, {"new"}),
        ("ria", {"ria", "rias"}, {"ri"}),
        ("ia", {"ia"}, {"ias"}),
    ],
)
def test_inflections(word: str, found: set[str], not_found: set[str]) -> None:
    forms = inflections(word)
    assert found <= forms
    assert not (not_found & forms)


def test_a_word_of_a_phrase_keeps_its_gender() -> None:
    assert inflections("europeen", in_phrase=True) == {"europeen", "europeens"}


def test_rules_match_inflected_forms_and_keep_acronyms_whole(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text("""\
topics:
  - id: t
    heading: T
    theme: T
    threshold: 1
    rules:
      - name: training
        term: entraîner
      - name: law
        term: "donnée personnelle"
      - name: act
        term: RIA
        case: true
""", encoding="utf-8")
    classifier = Classifier.compile(load_topics(path))

    def found(text: str) -> list[str]:
        return [m.text for m in classifier.classify_fields("1", text, "").matches]

    assert found("Meta entraîne ses modèles") == ["entraîne"]
    assert found("des modèles entraînés sur vos données personnelles") == ["entraînés", "données personnelles"]
    assert found("le RIA s'applique") == ["RIA"]
    assert found("la ria de Betanzos, les RIAs") == []
