"""How evidence adds up across fields and how item kinds lower it (issue 15, fifth and sixth rounds).

Five mechanisms, on small rule files and small items written here:

- one damper per field, the strongest: a newsletter that says so in its title and in its lead
  is damped once, not twice;
- passing lines (`after_marker`): a roundup's "En bref : …" inside a lead makes no topic, while
  what comes before the marker counts in full;
- a roundup's story (`keeps_stories`): a topic it tells over two sentences is not damped;
- `combine` rules: the title names the entity, the lead gives the angle, and the rule holds on
  the two fields read together, only when the title does not hold it alone and adds words the
  lead lacks;
- a teaser (`teaser_lead`, sixth round): a title and a lead that hold no rule leave the subject to
  the body, whose first sentences then weigh as the lead.

Every tag stays explained: the matches show the (damped) weights and the fields of the
evidence, and the classification names the damper, its marker and what it scaled.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pipeline.classify import Classifier, classify_jsonl, evaluate, format_report
from pipeline.config.topics import load_topics
from pipeline.errors import ConfigError
from pipeline.models import Damping

RULES = """\
dampen:
  - name: roundup
    any: [newsletter, "en bref"]
    scales: [summary, content]
    factor: 0.5
    keeps_stories: true
  - name: roundup_lead
    fields: [summary]
    scales: [summary, content]
    factor: 0.4
    any: ["au sommaire"]
  - name: passing_lines
    fields: [summary, content]
    after_marker: true
    factor: 0.25
    any: ["en bref", "à lire aussi"]
topics:
  - id: meta
    heading: M
    theme: M
    threshold: 3
    rules:
      - name: meta_and_ai
        weight: 3
        all: [Meta, IA]
      - name: meta_named
        weight: 0.5
        term: Meta
      - name: assistant_named
        weight: 1.5
        term: assistant
      - name: service_with_ai_across
        combine: true
        weight: 2
        all:
          - any: [Instagram, Meta]
          - any: [IA, "intelligence artificielle"]
  - id: press
    heading: P
    theme: P
    threshold: 3
    rules:
      - name: deal
        weight: 3
        all: [accord, presse]
"""


def compile_rules(tmp_path: Path, text: str = RULES) -> Classifier:
    path = tmp_path / "topics.yaml"
    path.write_text(text, encoding="utf-8")
    return Classifier.compile(load_topics(path))


# ---------------------------------------------------------------- one damper, the strongest


def test_two_dampers_on_one_item_do_not_multiply(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    lead = "Au sommaire : Meta ouvre son IA aux développeurs."
    one = classifier.classify_fields("1", "La lettre du lundi", lead)
    both = classifier.classify_fields("2", "Newsletter du lundi", lead)
    # roundup_lead alone (0.4); with the title's roundup (0.5) too, the strongest counts, not 0.4 × 0.5.
    assert one.scores == {"meta": pytest.approx(1.4)}
    assert both.scores == one.scores
    assert {m.weight for m in both.matches} == {1.2, 0.2}
    assert both.dampers == (Damping("roundup_lead", "summary", "Au sommaire", 0, 11, 0.4, ("summary", "content")),)


def test_an_undamped_item_names_no_damper(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    result = classifier.classify_fields("1", "Meta et l'IA", "")
    assert result.topics == ("meta",) and result.dampers == ()
    # A damper whose marker is there but that lowered nothing is not named either.
    assert classifier.classify_fields("2", "Newsletter : Meta et l'IA", "").dampers == ()


# ---------------------------------------------------------------- passing lines


def test_a_passing_line_after_en_bref_makes_no_topic(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    lead = "La diffusion des quotidiens recule de 3 %. En bref : un accord pour la presse régionale."
    result = classifier.classify_fields("1", "La lettre médias du jeudi", lead)
    assert result.topics == () and result.scores == {"press": 0.75}
    assert result.dampers == (Damping("passing_lines", "summary", "En bref", 43, 50, 0.25, ("summary",)),)
    # The same line as the lead's subject is the topic.
    assert classifier.classify_fields("2", "La lettre médias du jeudi",
                                      "Un accord pour la presse régionale.").topics == ("press",)


def test_what_comes_before_the_marker_counts_in_full(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    lead = "Un accord est signé avec la presse régionale. En bref : la presse nationale attend."
    result = classifier.classify_fields("1", "La lettre médias", lead)
    assert result.topics == ("press",) and result.scores == {"press": 3.0} and result.dampers == ()
    # A rule that needs a word after the marker is damped: "accord" before it, "presse" only after.
    half = classifier.classify_fields("2", "La lettre médias", "Un accord est signé. À lire aussi : la presse.")
    assert half.topics == () and half.scores == {"press": 0.75}
    assert [d.damper for d in half.dampers] == ["passing_lines"]


def test_passing_lines_and_an_item_kind_give_the_strongest_factor(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    # The title's roundup (0.5) scales the whole lead; the passing line's 0.25 is stronger for the rule
    # that needs it, and the explanation names both dampers.
    result = classifier.classify_fields("1", "Newsletter", "Meta et son IA. En bref : un accord pour la presse.")
    assert result.scores == {"meta": pytest.approx(1.75), "press": 0.75}
    assert {d.damper for d in result.dampers} == {"roundup", "passing_lines"}


def test_passing_lines_in_the_lead_and_the_body_are_named_for_both(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    result = classifier.classify_fields("1", "La lettre", "Le marché recule. En bref : Meta et son IA.",
                                        "Le marché recule encore. En bref : un accord pour la presse régionale.")
    # Both fields' passing lines damped (meta 3.5 × 0.25 in the lead, press 3 × 0.5 × 0.25 in the body),
    # and the explanation says so.
    assert result.scores == {"meta": 0.88, "press": 0.38}
    assert result.dampers == (Damping("passing_lines", "summary", "En bref", 18, 25, 0.25, ("summary", "content")),)


# ---------------------------------------------------------------- a roundup's stories


def test_a_roundup_keeps_the_story_it_tells_over_two_sentences(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    story = classifier.classify_fields("1", "Newsletter du lundi",
                                       "Meta ouvre son IA aux chercheurs. Meta publie aussi ses poids.")
    assert story.topics == ("meta",) and story.scores == {"meta": 3.5}
    assert story.dampers == (Damping("roundup", "title", "Newsletter", 0, 10, 0.5, ("summary", "content"),
                                     ("meta",)),)
    # The same words as one line among others: damped.
    line = classifier.classify_fields("2", "Newsletter du lundi", "Le budget recule. Meta ouvre son IA aux chercheurs.")
    assert line.topics == () and line.scores == {"meta": 1.75}
    assert line.dampers[0].spared == ()


def test_a_roundup_story_in_the_body_weighs_as_a_lead(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    result = classifier.classify_fields("1", "Newsletter", "Au programme cette semaine, beaucoup de sujets variés.",
                                        "Meta ouvre son IA aux chercheurs. Meta publie aussi ses poids.")
    assert result.scores == {"meta": 3.5}  # 3 + 0.5 at the lead's weight, not the body's 1.75
    assert {m.weight for m in result.matches} == {3.0, 0.5}


def test_a_story_in_the_body_is_told_by_the_rules_that_read_the_body(tmp_path: Path) -> None:
    # meta_and_ai reads the title and the lead only: in the body, Meta named twice is no story.
    rule = "        all: [Meta, IA]\n"
    lead_only = RULES.replace(rule, rule + "        fields: [title, summary]\n", 1)
    assert lead_only != RULES
    classifier = compile_rules(tmp_path, lead_only)
    result = classifier.classify_fields("1", "Newsletter", "Au programme cette semaine, beaucoup de sujets variés.",
                                        "Meta ouvre son IA aux chercheurs. Meta publie aussi ses poids.")
    assert result.topics == () and result.scores == {"meta": 0.12}  # meta_named 0.5 × 0.5 (body) × 0.5 (roundup)
    assert [(d.damper, d.spared) for d in result.dampers] == [("roundup", ())]


def test_passing_lines_tell_no_story(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    result = classifier.classify_fields("1", "Newsletter", "Le budget recule. En bref : Meta ouvre son IA. "
                                                           "Meta publie aussi ses poids.")
    assert result.topics == () and result.scores == {"meta": 0.88}  # 3.5 × the passing lines' 0.25
    assert all(d.spared == () for d in result.dampers)


# ---------------------------------------------------------------- title and lead read together


def test_the_title_names_the_entity_and_the_lead_gives_the_angle(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    result = classifier.classify_fields("1", "Ce qui change sur Instagram",
                                        "Le réseau social va nourrir son intelligence artificielle avec vos photos.")
    # Neither field alone says Meta's AI; together they do, weighed as the lead (2 × 1), and with the
    # title's evidence and the lead's both shown.
    assert result.scores == {"meta": 2.0}
    assert [(m.field, m.text, m.weight) for m in result.matches] == [
        ("title", "Instagram", 2.0), ("summary", "intelligence artificielle", 2.0)]
    # The other way round: the angle in the title, the entity in the lead.
    reverse = classifier.classify_fields("2", "Vos photos nourrissent une IA", "Instagram change ses conditions.")
    assert reverse.scores == {"meta": 2.0}
    assert {m.field for m in reverse.matches} == {"title", "summary"}


def test_a_combined_rule_needs_the_title_to_add_to_the_lead(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    # Both parts in the lead, nothing in the title: the lead's own rules say what it shows.
    lead_only = classifier.classify_fields("1", "Réseaux sociaux", "Instagram mise sur l'IA.")
    assert lead_only.matches == ()
    # The lead holds it, and the title adds a word the lead lacks: that counts.
    added = classifier.classify_fields("6", "Meta", "Instagram mise sur l'IA.")
    assert added.scores == {"meta": 3.5}  # meta_named 0.5 × 3 in the title, the combined rule 2
    # Both parts in the title: the title's own rules.
    title_only = classifier.classify_fields("2", "Instagram mise sur l'IA", "Des nouveautés.")
    assert title_only.matches == ()
    # One part only.
    assert classifier.classify_fields("3", "Instagram", "Des nouveautés pour les créateurs.").matches == ()
    # The lead holds it alone; the title naming Instagram again adds nothing.
    repeated = classifier.classify_fields("4", "Instagram", "Instagram annonce une IA pour les créateurs.")
    assert repeated.matches == ()
    # Nor does a title that holds it alone gain from the lead repeating a part.
    assert classifier.classify_fields("5", "Instagram mise sur l'IA", "Une IA pour tous.").matches == ()


def test_combined_evidence_adds_to_the_fields_own(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    result = classifier.classify_fields("1", "Instagram", "Son assistant et son IA pour les créateurs.")
    # The combined rule (2 × 1) and the lead's own assistant_named (1.5).
    assert result.scores == {"meta": 3.5} and result.topics == ("meta",)
    assert {m.rule for m in result.matches} == {"assistant_named", "service_with_ai_across"}


def test_without_a_summary_the_content_is_the_lead_read_with_the_title(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    result = classifier.classify_fields("1", "Instagram", "", "Le réseau entraîne son IA sur vos photos.")
    assert result.scores == {"meta": 2.0}
    assert {m.field for m in result.matches} == {"title", "content"}
    # With a real summary, the content is not the lead: nothing combines with the title.
    assert classifier.classify_fields("2", "Instagram", "Un long résumé sans rapport avec le sujet ici.",
                                      "Le réseau entraîne son IA.").matches == ()


def test_a_combined_rule_in_a_damped_item_is_damped_as_the_lead(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    result = classifier.classify_fields("1", "Newsletter : Instagram", "Le réseau et son IA.")
    assert result.scores == {"meta": 1.0}
    assert [d.damper for d in result.dampers] == ["roundup"]


def test_combined_spans_survive_the_slow_normalisation_path(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    title = "Ｉｎｓｔａｇｒａｍ ﬁnit"  # full-width letters and a ligature: the per-character path
    result = classifier.classify_fields("1", title, "Son IA arrive.")
    assert [(m.field, m.text) for m in result.matches] == [("title", "Ｉｎｓｔａｇｒａｍ"), ("summary", "IA")]


# ---------------------------------------------------------------- a teaser's lead in its body

TEASER = "teaser_lead: 2\n" + RULES
TEASER_LEAD = "Le récit d'une locataire qui voulait comprendre son dossier."


def test_a_teasers_body_opening_weighs_as_its_lead(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, TEASER)
    body = "Sonia cherchait un logement. Meta ouvre son IA aux chercheurs. La suite est connue."
    result = classifier.classify_fields("1", "Six mois de patience", TEASER_LEAD, body)
    # Title and lead hold no rule: the body's first two sentences weigh as the lead (3 × 1, not 3 × 0.5).
    assert result.topics == ("meta",) and result.scores == {"meta": 3.5}
    assert {(m.rule, m.field, m.weight) for m in result.matches} == {("meta_and_ai", "content", 3.0),
                                                                     ("meta_named", "content", 0.5)}
    assert result.lead_in_body == 2
    # Without teaser_lead, the body weighs as a body.
    plain = compile_rules(tmp_path, RULES).classify_fields("2", "Six mois de patience", TEASER_LEAD, body)
    assert plain.topics == () and plain.scores == {"meta": 1.75} and plain.lead_in_body == 0


def test_a_teasers_lead_is_its_bodys_first_sentences_only(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, TEASER)
    late = classifier.classify_fields("1", "Six mois de patience", TEASER_LEAD,
                                      "Sonia cherchait. Elle a écrit. Meta ouvre son IA aux chercheurs.")
    assert late.topics == () and late.scores == {"meta": 1.75} and late.lead_in_body == 0
    # What follows a passing-line marker is no part of the lead.
    after = classifier.classify_fields("2", "Six mois de patience", TEASER_LEAD,
                                       "Meta publie un rapport. À lire aussi : son IA.")
    # (Meta named before the marker weighs as the lead, 0.5; Meta's AI, which needs "IA", stays damped.)
    assert after.topics == () and after.scores == {"meta": 0.88}
    assert {(m.rule, m.weight) for m in after.matches} == {("meta_named", 0.5), ("meta_and_ai", 0.38)}


def test_an_item_whose_title_or_lead_holds_a_rule_is_no_teaser(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, TEASER)
    body = "Meta ouvre son IA aux chercheurs. La suite est connue."
    # The lead names an assistant: its own evidence, and the body weighs as a body.
    told = classifier.classify_fields("1", "Six mois de patience",
                                      "Un assistant pour les locataires et leurs dossiers.", body)
    assert told.scores == {"meta": pytest.approx(1.5 + 1.75)} and told.lead_in_body == 0
    # A damped body (a newsletter's) is its list of subjects, not a lead.
    damped = classifier.classify_fields("2", "Newsletter du lundi", TEASER_LEAD, body)
    assert damped.topics == () and damped.lead_in_body == 0


def test_classify_and_evaluate_say_a_teaser_was_read(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, TEASER)
    line = json.dumps({"id": "t", "title": "Six mois de patience", "summary": TEASER_LEAD,
                       "content": "Meta ouvre son IA. La suite.", "labels": []}, ensure_ascii=False)
    out = io.StringIO()
    classify_jsonl(classifier, [line], out, "t.jsonl")
    assert json.loads(out.getvalue())["lead_in_body"] == 2
    report = format_report(evaluate(classifier, [line], "t.jsonl"))
    assert "a teaser: title and summary hold no rule, the body's first 2 sentences weighed as the lead" in report


def test_teaser_lead_enters_the_fingerprint_and_is_checked(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(RULES, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(TEASER, encoding="utf-8")
    assert load_topics(tmp_path / "a.yaml").fingerprint != load_topics(tmp_path / "b.yaml").fingerprint
    with pytest.raises(ConfigError) as caught:
        compile_rules(tmp_path, "teaser_lead: -1\n" + RULES)
    assert caught.value.key == "teaser_lead" and "whole number of sentences" in caught.value.message


# ---------------------------------------------------------------- the explanations shown


def test_classify_and_evaluate_show_the_damper(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    line = json.dumps({"id": "x", "title": "La lettre", "summary": "Le marché. En bref : un accord pour la presse.",
                       "labels": ["press"]}, ensure_ascii=False)
    out = io.StringIO()
    classify_jsonl(classifier, [line], out, "t.jsonl")
    written = json.loads(out.getvalue())
    assert written["damped"] == [{"damper": "passing_lines", "field": "summary", "text": "En bref", "start": 11,
                                  "end": 18, "factor": 0.25, "scales": ["summary"]}]
    report = format_report(evaluate(classifier, [line], "t.jsonl"))
    assert "damped ×0.25 by passing_lines «En bref» (summary; summary)" in report
    story = json.dumps({"id": "y", "title": "Newsletter", "summary": "Meta et son IA. Meta encore.", "labels": []})
    assert "kept the story of meta)" in format_report(evaluate(classifier, [story], "t.jsonl"))


@pytest.mark.parametrize(
    ("change", "where", "problem"),
    [
        (("        combine: true\n", "        combine: true\n        fields: [title]\n"),
         "topic meta, rule service_with_ai_across.fields", "does not go with `combine`"),
        (("        combine: true\n", "        combine: yes please\n"),
         "topic meta, rule service_with_ai_across.combine", "true or false"),
        (("    after_marker: true\n", "    after_marker: true\n    scales: [content]\n"),
         "dampen passing_lines.scales", "does not go with `after_marker`"),
        (("    after_marker: true\n", "    after_marker: true\n    keeps_stories: true\n"),
         "dampen passing_lines.keeps_stories", "does not go with `after_marker`"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, change: tuple[str, str], where: str, problem: str) -> None:
    assert change[0] in RULES
    with pytest.raises(ConfigError) as caught:
        compile_rules(tmp_path, RULES.replace(change[0], change[1], 1))
    assert caught.value.key == where, str(caught.value)
    assert problem in caught.value.message
