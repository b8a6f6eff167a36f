"""topics.yaml loading: the real file, the fingerprint, and every bad-rule error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.classify.rules import AllOf, AnyOf, Near, Not, Term
from pipeline.config.topics import load_topics
from pipeline.errors import ConfigError
from pipeline.models import TopicInfo

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
version: 1
field_weights: {title: 3, summary: 1}
threshold: 3
topics:
  - id: rgpd
    heading: "DONNÉES PERSONNELLES"
    theme: "Données personnelles"
    description: Le RGPD.
    rules:
      - name: law
        weight: 2
        any: [RGPD, CNIL]
      - name: fine
        near: [amende, RGPD]
        within: 4
  - id: ai_act
    heading: "DU CÔTÉ DE BRUXELLES"
    theme: "Régulation de l'IA"
    threshold: 2
    field_weights: {content: 1}
    unless: ["RIA Novosti"]
    rules:
      - name: ria
        term: RIA
        case: true
      - name: act
        all:
          - "AI Act"
          - not: "Data Act"
        fields: [title, summary]
        lang: [fr, en]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_good_file_loads_in_order(tmp_path: Path) -> None:
    config = load_topics(write(tmp_path, GOOD))
    assert [t.id for t in config.topics] == ["rgpd", "ai_act"]
    assert config.info() == (
        TopicInfo("rgpd", "DONNÉES PERSONNELLES", "Données personnelles", "Le RGPD."),
        TopicInfo("ai_act", "DU CÔTÉ DE BRUXELLES", "Régulation de l'IA", ""),
    )
    rgpd, ai_act = config.topics
    assert rgpd.threshold == 3 and ai_act.threshold == 2
    # global weights, the built-in content weight, then the topic's override
    assert dict(rgpd.field_weights) == {"title": 3, "summary": 1, "content": 0.5}
    assert dict(ai_act.field_weights) == {"title": 3, "summary": 1, "content": 1}
    law, fine = rgpd.rules
    assert law.weight == 2 and isinstance(law.condition, AnyOf)
    assert isinstance(fine.condition, Near) and fine.condition.within == 4
    ria, act = ai_act.rules
    assert isinstance(ria.condition, Term) and ria.condition.case
    assert isinstance(act.condition, AllOf) and isinstance(act.condition.parts[1], Not)
    assert act.fields == ("title", "summary") and act.lang == ("fr", "en")
    assert ai_act.unless == (Term("RIA Novosti", ("ria", "novosti"), line=21),)


def test_fingerprint_ignores_layout_and_follows_rules(tmp_path: Path) -> None:
    base = load_topics(write(tmp_path, GOOD)).fingerprint
    assert len(base) == 64 and int(base, 16) >= 0
    commented = GOOD.replace("rules:\n      - name: law", "rules:  # the law\n\n      - name: law")
    assert load_topics(write(tmp_path, commented)).fingerprint == base
    # same words, other spelling: the normalised rule is the same
    assert load_topics(write(tmp_path, GOOD.replace("[RGPD, CNIL]", "[rgpd, Cnil]"))).fingerprint == base
    assert load_topics(write(tmp_path, GOOD.replace("weight: 2", "weight: 2.5"))).fingerprint != base
    assert load_topics(write(tmp_path, GOOD.replace("within: 4", "within: 5"))).fingerprint != base


def test_real_topics_file() -> None:
    config = load_topics(REPO / "topics.yaml")
    assert [t.id for t in config.topics] == ["meta_ai", "rgpd", "ai_act", "media_partnership"]
    headings = {t.id: t.heading for t in config.info()}
    assert headings["ai_act"] == "DU CÔTÉ DE BRUXELLES" and headings["media_partnership"] == "MÉDIAS"
    assert all(t.theme and t.description for t in config.info())


def topic_with(rule: str) -> str:
    """A file whose topic `rgpd` has one rule, written at line 6."""
    return "topics:\n  - id: rgpd\n    heading: H\n    theme: T\n    rules:\n" + textwrap.indent(
        textwrap.dedent(rule), "      ")


@pytest.mark.parametrize(
    ("text", "line", "where", "problem"),
    [
        # unknown keys, at every level
        ("topicz: []\n", 1, "topicz", "unknown key"),
        ("topics:\n  - id: rgpd\n    heading: H\n    theme: T\n    colour: red\n    rules: [x]\n", 5,
         "topic rgpd.colour", "unknown key"),
        (topic_with("- name: law\n  any: [RGPD]\n  wieght: 2\n"), 8, "topic rgpd, rule law", "unknown key 'wieght'"),
        (topic_with("- name: law\n  any: [{term: RGPD, kase: true}]\n"), 7, "topic rgpd, rule law.any[0].kase",
         "unknown key"),
        # empty term and terms that normalise to nothing
        (topic_with("- name: law\n  any: [RGPD, '']\n"), 7, "topic rgpd, rule law.any[1]", "empty term"),
        (topic_with("- name: law\n  term: \"l'\"\n"), 7, "topic rgpd, rule law.term", "normalises to nothing"),
        (topic_with("- name: law\n  any: [RGPD, ' -- ']\n"), 7, "topic rgpd, rule law.any[1]",
         "normalises to nothing"),
        (topic_with("- name: law\n  term: 2024\n"), 7, "topic rgpd, rule law.term", "quoted string"),
        # unbalanced combinations
        (topic_with("- name: law\n  any: [RGPD]\n  all: [CNIL, noyb]\n"), 8, "topic rgpd, rule law",
         "unbalanced combination"),
        (topic_with("- name: law\n  all: [RGPD, {not: [a, b]}]\n"), 7, "topic rgpd, rule law.all[1].not",
         "unbalanced combination"),
        (topic_with("- name: law\n  near: [RGPD]\n"), 7, "topic rgpd, rule law.near", "exactly 2 operands"),
        (topic_with("- name: law\n  any: []\n"), 7, "topic rgpd, rule law.any", "empty `any`"),
        (topic_with("- name: law\n  all: [RGPD]\n"), 7, "topic rgpd, rule law.all", "at least 2 parts"),
        (topic_with("- name: law\n  any: [{not: RGPD}, {not: CNIL}]\n"), 7, "topic rgpd, rule law.any",
         "every part"),
        (topic_with("- name: law\n  not: RGPD\n"), 7, "topic rgpd, rule law", "only a `not`"),
        (topic_with("- name: law\n  any: [[RGPD, CNIL]]\n"), 7, "topic rgpd, rule law.any[0]", "bare list"),
        (topic_with("- name: law\n  weight: 2\n"), 6, "topic rgpd, rule law", "needs one of"),
        (topic_with("- name: law\n  near: [RGPD, {all: [a, b]}]\n"), 7, "topic rgpd, rule law.near[1]",
         "near operands"),
        # options with bad values
        (topic_with("- name: law\n  term: RGPD\n  weight: lourd\n"), 8, "topic rgpd, rule law.weight",
         "must be a number"),
        (topic_with("- name: law\n  term: RGPD\n  weight: 0\n"), 8, "topic rgpd, rule law.weight", "must not be 0"),
        (topic_with("- name: law\n  term: RGPD\n  fields: [titre]\n"), 8, "topic rgpd, rule law.fields",
         "unknown field"),
        (topic_with("- name: law\n  near: [a, b]\n  within: -1\n"), 8, "topic rgpd, rule law.within",
         "whole number"),
        (topic_with("- name: law\n  term: RGPD\n  case: oui\n"), 8, "topic rgpd, rule law.case",
         "true or false"),
        (topic_with("- name: law\n  term: 're*'\n"), 7, "topic rgpd, rule law.term", "too short"),
        (topic_with("- name: law\n  term: 'protect* données'\n"), 7, "topic rgpd, rule law.term",
         "only at the end"),
        (topic_with("- name: law\n  term: RGPD\n  unless: [{all: [a, b]}]\n"), 8,
         "topic rgpd, rule law.unless[0]", "must be a term, a `near`"),
        # rule names
        (topic_with("- term: RGPD\n"), 6, "topic rgpd, rules[0]", "missing `name`"),
        (topic_with("- name: law\n  term: RGPD\n- name: law\n  term: CNIL\n"), 8, "topic rgpd, rule law",
         "duplicate rule name"),
        (topic_with("- name: law\n  term: RGPD\n  weight: -1\n"), 5, "topic rgpd.rules", "never fire"),
        # thresholds and weights
        ("threshold: beaucoup\ntopics: []\n", 1, "threshold", "must be a number"),
        ("topics:\n  - id: rgpd\n    heading: H\n    theme: T\n    threshold: '3'\n    rules: [x]\n", 5,
         "topic rgpd.threshold", "must be a number"),
        ("topics:\n  - id: rgpd\n    heading: H\n    theme: T\n    threshold: 0\n    rules: [x]\n", 5,
         "topic rgpd.threshold", "greater than 0"),
        ("field_weights: {title: -1}\ntopics: []\n", 1, "field_weights.title", "must not be negative"),
        ("field_weights: {headline: 2}\ntopics: []\n", 1, "field_weights.headline", "unknown key"),
        # topics
        ("topics:\n  - id: rgpd\n    heading: H\n    theme: T\n    rules: [{name: a, term: x}]\n"
         "  - id: rgpd\n    heading: H\n    theme: T\n    rules: [{name: a, term: y}]\n", 6, "topic rgpd",
         "duplicate topic id"),
        ("topics:\n  - id: RGPD!\n    heading: H\n    theme: T\n    rules: [x]\n", 2, "topics[0].id",
         "lower-case"),
        ("topics:\n  - id: rgpd\n    theme: T\n    rules: [x]\n", 2, "topic rgpd", "missing `heading`"),
        ("topics:\n  - id: rgpd\n    heading: H\n    theme: T\n    rules: []\n", 5, "topic rgpd.rules",
         "at least one rule"),
        ("topics: []\n", 1, "topics", "no topic"),
        ("version: 2\ntopics: []\n", 1, "version", "unsupported version"),
    ],
)
def test_bad_rules_are_named(tmp_path: Path, text: str, line: int, where: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_topics(path)
    error = caught.value
    assert (error.path, error.line, error.key) == (path, line, where), str(error)
    assert problem in error.message
    assert str(error).startswith(f"{path}:{line}: {where}: ")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_topics(write(tmp_path, "topics:\n  - id: [unclosed\n"))
    assert caught.value.line is not None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_topics(tmp_path / "nope.yaml")
