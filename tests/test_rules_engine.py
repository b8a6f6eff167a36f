"""The rules engine: every rule feature, the trap words, explanation spans, the JSONL contract."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

from pipeline.classify import Classifier, classify_jsonl
from pipeline.config.topics import load_topics
from pipeline.errors import PipelineError
from pipeline.models import Item

REPO = Path(__file__).resolve().parents[1]


def compile_rules(tmp_path: Path, body: str, header: str = "") -> Classifier:
    """Compile a one-file topics.yaml made of ``header`` and the topics in ``body``."""
    path = tmp_path / "topics.yaml"
    path.write_text(textwrap.dedent(header) + "topics:\n" + textwrap.indent(textwrap.dedent(body), "  "),
                    encoding="utf-8")
    return Classifier.compile(load_topics(path))


def topic(rules: str, *, id: str = "t", threshold: float = 1, extra: str = "") -> str:
    return (f"- id: {id}\n  heading: T\n  theme: T\n  threshold: {threshold}\n" + extra +
            "  rules:\n" + textwrap.indent(textwrap.dedent(rules), "    "))


def one_term(tmp_path: Path, term: str, **options: object) -> Classifier:
    extra = "".join(f"\n  {k}: {json.dumps(v)}" for k, v in options.items())
    return compile_rules(tmp_path, topic(f"- name: r\n  term: {json.dumps(term)}{extra}\n"))


def finds(classifier: Classifier, text: str, field: str = "title") -> list[str]:
    """The texts matched for topic t when ``text`` is the given field."""
    fields = {"title": "", "summary": "", "content": ""}
    fields[field] = text
    result = classifier.classify_fields("x", fields["title"], fields["summary"], fields["content"])
    return [m.text for m in result.matches if m.topic == "t"]


# ---------------------------------------------------------------- normalisation through matching


@pytest.mark.parametrize(
    ("term", "text", "found"),
    [
        ("reglement", "Le règlement s'applique", ["règlement"]),
        ("règlement", "Le reglement s'applique", ["reglement"]),
        ("CNIL", "la cnil et la Cnil", ["cnil", "Cnil"]),
        ("AI Act", "l’AI-Act entre en vigueur", ["AI-Act"]),
        ("AI-Act", "the AI Act applies", ["AI Act"]),
        ("IA", "l’IA et d’IA", ["IA", "IA"]),
        ("droit d'opposition", "exercer son droit d’opposition", ["droit d’opposition"]),
        ("donnée personnelle", "des données personnelles", ["données personnelles"]),
        ("journaux", "un journal", ["journal"]),
        ("publisher", "news publishers", ["publishers"]),
        ("oeuvre", "la mise en œuvre", ["œuvre"]),
        ("œuvre", "la mise en oeuvre", ["oeuvre"]),
        ("RGPD", "<b>RGPD</b> &amp; CNIL", ["RGPD"]),
    ],
)
def test_terms_match_after_normalisation(tmp_path: Path, term: str, text: str, found: list[str]) -> None:
    assert finds(one_term(tmp_path, term), text) == found


@pytest.mark.parametrize(
    ("term", "text"),
    [
        ("IA", "les médias et la social-démocratie"),  # never inside a word
        ("IA", "IAM : gestion des identités"),
        ("Meta", "des métadonnées mal renseignées"),
        ("AI Act", "the AI Action Plan"),
        ("AI Act", "AI. Act two"),  # punctuation ends a phrase
        ("news", "new rules"),  # plural handling never turns news into new
        ("Data Act", "the Digital Services Act"),
    ],
)
def test_terms_do_not_match(tmp_path: Path, term: str, text: str) -> None:
    assert finds(one_term(tmp_path, term), text) == []


def test_a_plural_possessive_in_a_phrase_is_found_with_its_apostrophe(tmp_path: Path) -> None:
    """ "users' data": the apostrophe and the space after it fold to two separators (so, after
    that word only, any two do: the folded text no longer tells them apart); the phrase still
    finds the words without an apostrophe, and three separators end it."""
    classifier = one_term(tmp_path, "users' data")
    assert finds(classifier, "Meta trains its AI on users' data") == ["users' data"]
    assert finds(classifier, "Meta trains its AI on users’ data") == ["users’ data"]
    assert finds(classifier, "Meta trains its AI on users data") == ["users data"]
    assert finds(classifier, "new users: « data centres »") == []
    assert finds(one_term(tmp_path, "press publishers' right"),
                 "the press publishers’ right in France") == ["press publishers’ right"]


def test_prefix_terms(tmp_path: Path) -> None:
    classifier = one_term(tmp_path, "régul*")
    assert finds(classifier, "Régulation, régulateurs et regulier") == ["Régulation", "régulateurs", "regulier"]
    assert finds(classifier, "un contrôle irrégulier") == []


def test_case_sensitive_acronym(tmp_path: Path) -> None:
    classifier = one_term(tmp_path, "RIA", case=True)
    assert finds(classifier, "Le RIA s'applique") == ["RIA"]
    assert finds(classifier, "la ria de Vigo, Ria Formosa") == []


def test_case_sensitive_meta_skips_meta_analysis(tmp_path: Path) -> None:
    classifier = one_term(tmp_path, "Meta", case=True)
    assert finds(classifier, "Meta et Méta") == ["Meta", "Méta"]  # accents are still folded
    assert finds(classifier, "une méta-analyse") == []


# ---------------------------------------------------------------- combinations


def test_any_all_not(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, topic("""
        - name: r
          all:
            - any: [amende, sanction]
            - CNIL
            - not: cybersécurité
    """))
    assert finds(classifier, "Amende de la CNIL") == ["Amende", "CNIL"]
    assert finds(classifier, "La CNIL publie un guide") == []
    assert finds(classifier, "Sanction de la CNIL en cybersécurité") == []


def test_near_counts_words_and_skips_elisions(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, topic("""
        - name: r
          near: [amende, RGPD]
          within: 3
    """))
    assert finds(classifier, "une amende au titre du RGPD") == ["amende", "RGPD"]  # au titre du: 3 words
    assert finds(classifier, "une amende, selon elle, au titre du RGPD") == []
    assert finds(classifier, "le RGPD prévoit l’amende") == ["RGPD", "amende"]  # either order by default


def test_near_ordered(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, topic("""
        - name: r
          near: [droit, opposition]
          within: 2
          ordered: true
    """))
    assert finds(classifier, "le droit d'opposition") == ["droit", "opposition"]
    assert finds(classifier, "l'opposition de droit") == []


# ---------------------------------------------------------------- scoring


def test_title_mention_counts_more_than_a_passing_mention(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, topic("- name: cnil\n  term: CNIL\n  weight: 2\n", threshold=3),
                               header="field_weights: {title: 3, summary: 1, content: 0.5}\n")
    title = classifier.classify_fields("1", "La CNIL sanctionne", "")
    summary = classifier.classify_fields("2", "Budget", "la CNIL présente un bilan")
    content = classifier.classify_fields("3", "Budget", "Le budget de l'État est présenté",
                                         "... la CNIL ... la CNIL ...")
    assert (title.topics, title.scores) == (("t",), {"t": 6.0})
    assert (summary.topics, summary.scores) == ((), {"t": 2.0})
    # repeating the word in a long body does not add up
    assert (content.topics, content.scores) == ((), {"t": 1.0})
    assert len(content.matches) == 2


def test_field_scope(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, topic("- name: r\n  term: Llama\n  fields: [title]\n"))
    assert classifier.classify_fields("1", "Llama 4", "").topics == ("t",)
    assert classifier.classify_fields("2", "Modèles", "Llama 4").topics == ()


def test_topic_field_weights_override_global_ones(tmp_path: Path) -> None:
    body = topic("- name: r\n  term: CNIL\n", id="a", threshold=1) + topic(
        "- name: r\n  term: CNIL\n", id="b", threshold=1, extra="  field_weights: {summary: 2}\n")
    classifier = compile_rules(tmp_path, body, header="field_weights: {summary: 0.5}\n")
    result = classifier.classify_fields("1", "", "la CNIL")
    assert result.scores == {"a": 0.5, "b": 2.0}
    assert result.topics == ("b",)
    # the topic only overrides the fields it names: the title keeps the built-in 3
    assert classifier.classify_fields("2", "CNIL", "").scores == {"a": 3.0, "b": 3.0}


def test_unless_context_cancels_one_occurrence(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, topic("""
        - name: meta
          term: Meta
          case: true
          unless: ["Meta Quest"]
    """))
    assert finds(classifier, "Le Meta Quest 3 arrive") == []
    # only the occurrence inside the context is cancelled
    assert finds(classifier, "Meta lance le Meta Quest 3") == ["Meta"]


def test_topic_unless_with_near_context(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, topic("- name: llama\n  term: llama\n", extra="""\
  unless:
    - near: [llama, {any: [alpaga, éleveurs]}]
      within: 3
"""))
    assert finds(classifier, "Les éleveurs de llamas des Andes") == []
    assert finds(classifier, "Llama 4 est sorti") == ["Llama"]


def test_negative_weight_rule_lowers_the_score(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, topic("""
        - name: act
          term: Act
        - name: data_act
          term: Data Act
          weight: -1
    """))
    result = classifier.classify_fields("1", "", "the Data Act applies")
    assert result.topics == ()
    assert result.scores == {"t": 0.0}
    assert {(m.rule, m.weight) for m in result.matches} == {("act", 1.0), ("data_act", -1.0)}


def test_lang_restriction(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, topic("- name: fine\n  term: fine\n  lang: en\n"))
    assert classifier.classify_fields("1", "GDPR fine", "", lang="en").topics == ("t",)
    assert classifier.classify_fields("2", "une fine analyse", "", lang="fr").topics == ()
    assert classifier.classify_fields("3", "GDPR fine", "", lang="en-GB").topics == ("t",)


def test_result_order_and_determinism(tmp_path: Path) -> None:
    body = topic("- name: r\n  term: CNIL\n", id="b") + topic("- name: r\n  any: [RGPD, CNIL]\n", id="a")
    classifier = compile_rules(tmp_path, body)
    result = classifier.classify_fields("1", "RGPD", "CNIL et RGPD")
    assert result.topics == ("b", "a")  # topics.yaml order, not alphabetical
    assert list(result.scores) == ["b", "a"]
    keys = [({"title": 0, "summary": 1, "content": 2}[m.field], m.start) for m in result.matches]
    assert keys == sorted(keys)
    assert result == classifier.classify_fields("1", "RGPD", "CNIL et RGPD")


# ---------------------------------------------------------------- explanation spans


def test_spans_point_at_the_original_characters(tmp_path: Path) -> None:
    classifier = one_term(tmp_path, "règlement européen sur l'IA")
    title = "Le Règlement Européen sur l’IA, enfin"
    result = classifier.classify_fields("1", title, "")
    (match,) = result.matches
    assert (match.field, match.text, match.start, match.end) == ("title", "Règlement Européen sur l’IA", 3, 30)
    assert title[match.start:match.end] == match.text


def test_spans_index_the_summary_after_the_text_pass(tmp_path: Path) -> None:
    # `pipeline classify` puts each record through the text pass once; offsets index its output.
    classifier = one_term(tmp_path, "protection des données")
    summary = "<p>L&rsquo;autorit&eacute; de <b>protection des donn&eacute;es</b></p> Lire la suite"
    out = io.StringIO()
    classify_jsonl(classifier, [json.dumps({"id": "1", "title": "", "summary": summary})], out, "-")
    (match,) = json.loads(out.getvalue())["matches"]["t"]
    plain = "L’autorité de protection des données"
    assert match["text"] == "protection des données"
    assert plain[match["start"]:match["end"]] == match["text"]


def test_spans_survive_the_slow_normalisation_path(tmp_path: Path) -> None:
    classifier = one_term(tmp_path, "règlement")
    title = "ﬁn du re\u0301glement"  # a ligature before, decomposed accent inside
    (match,) = classifier.classify_fields("1", title, "").matches
    assert match.text == "re\u0301glement"
    assert (match.start, match.end) == (6, 16)


@pytest.mark.parametrize(
    ("term", "title", "summary", "content", "expected"),
    [
        # Empty fields: nothing found, nothing selected.
        ("Meta", "", "", "", []),
        # A keyword touching both ends of the text, and alone in the last field.
        ("Meta", "Meta", "", "", [("title", "Meta", 0, 4)]),
        ("Meta", "", "", "Meta", [("content", "Meta", 0, 4)]),
        # Spaces, hyphens and dashes between the words of a phrase.
        ("AI Act", "AI Act AI-Act AI–Act", "", "", [("title", "AI Act", 0, 6), ("title", "AI-Act", 7, 13),
                                          ("title", "AI–Act", 14, 20)]),
        # Control characters and separators outside Latin-1 are word separators.
        ("Meta", "\x00\x01 Meta\x7f", "Meta\u2028AI", "Meta\u00a0AI",
         [("title", "Meta", 3, 7), ("summary", "Meta", 0, 4), ("content", "Meta", 0, 4)]),
        # The same term in every field: one match per field.
        ("Meta", "Meta", "Meta", "Meta",
         [("title", "Meta", 0, 4), ("summary", "Meta", 0, 4), ("content", "Meta", 0, 4)]),
    ],
)
def test_texts_at_the_edges(tmp_path: Path, term: str, title: str, summary: str, content: str,
                            expected: list[tuple[str, str, int, int]]) -> None:
    result = one_term(tmp_path, term).classify_fields("1", title, summary, content)
    assert [(m.field, m.text, m.start, m.end) for m in result.matches] == expected
    assert result.topics == (("t",) if expected else ())  # threshold 1; no summary: the content weighs as one


def test_long_texts_are_classified_whole(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, topic("""\
        - name: assistant
          term: "Meta AI"
        - name: law
          term: RGPD
          fields: [content]
        """))
    result = classifier.classify_fields("1", "x" * 10_000, "Meta AI " * 500, "RGPD " * 2_000)
    assert sum(m.rule == "assistant" for m in result.matches) == 500
    assert sum(m.rule == "law" for m in result.matches) == 2_000
    assert result.matches[-1].start == 5 * 1_999
    assert result.scores == {"t": 1.5}  # once per field: summary 1, content 0.5


def test_a_classifier_gives_the_same_result_twice(tmp_path: Path) -> None:
    # The second time the plan of each field comes from the memo.
    classifier = compile_rules(tmp_path, topic("""\
        - name: near
          near: [Meta, {any: [IA, AI]}]
          within: 3
          unless: ["Meta Quest"]
        """))
    texts = ("Meta Quest et IA", "Meta présente son IA", "l'IA de Meta")
    first = [classifier.classify_fields(str(i), t, t, t) for i, t in enumerate(texts)]
    assert first == [classifier.classify_fields(str(i), t, t, t) for i, t in enumerate(texts)]
    assert [r.topics for r in first] == [(), ("t",), ("t",)]


def test_classify_item_uses_its_fields_as_they_are(tmp_path: Path) -> None:
    classifier = one_term(tmp_path, "CNIL")
    item = Item(id="i1", feed_id="f", source="S", title="La CNIL", url=None, summary="x & CNIL", language="fr")
    result = classifier.classify(item)
    assert result.item_id == "i1"
    assert [(m.field, m.start) for m in result.matches] == [("title", 3), ("summary", 4)]


# ---------------------------------------------------------------- the real rules and their traps


@pytest.fixture(scope="module")
def real() -> Classifier:
    return Classifier.compile(load_topics(REPO / "topics.yaml"))


@pytest.mark.parametrize(
    ("title", "summary", "lang"),
    [
        ("Streaming : des métadonnées mal renseignées", "Les métadonnées des morceaux sont incomplètes.", "fr"),
        ("Sommeil : une méta-analyse nuance l’alarme", "Méta-analyse de quarante études sur les écrans.", "fr"),
        ("Meta Quest 3S : un casque à 329 euros", "Le Meta Quest 3S reprend la puce du Quest 3.", "fr"),
        ("Audiences : les médias d’information en hausse", "Les médias en ligne portés par l’actualité.", "fr"),
        ("Data Act : ce qui change en septembre", "Le règlement sur les données devient applicable.", "fr"),
        ("DSA : Bruxelles épingle Temu", "Au titre du Digital Services Act, une amende est possible.", "fr"),
        ("Roland-Garros et IBM prolongent leur partenariat", "Statistiques de match générées par IA.", "fr"),
        ("Andean llama herders go online", "Llama and alpaca breeders sell wool abroad.", "en"),
        ("Viginum dévoile un réseau relayant RIA Novosti", "Des dépêches de RIA Novosti republiées.", "fr"),
        ("IAM : la gestion des identités", "Les solutions d’IAM grimpent en tête des budgets.", "fr"),
    ],
)
def test_trap_words_select_no_topic(real: Classifier, title: str, summary: str, lang: str) -> None:
    result = real.classify_fields("trap", title, summary, lang=lang)
    assert result.topics == (), [(m.topic, m.rule, m.text) for m in result.matches]


@pytest.mark.parametrize(
    ("title", "summary", "lang", "topics"),
    [
        ("La CNIL inflige une amende à un opérateur", "", "fr", ("rgpd",)),
        ("GDPR: Ireland fines a social network", "", "en", ("rgpd",)),
        ("Le RIA entre en application", "", "fr", ("ai_act",)),
        ("Meta AI arrive en Europe", "", "fr", ("meta_ai",)),
        ("Llama 4 : Meta publie deux modèles", "", "fr", ("meta_ai",)),
        ("Droits voisins : accord entre Google et la presse", "", "fr", ("media_partnership",)),
    ],
)
def test_real_rules_select_clear_cases(real: Classifier, title: str, summary: str, lang: str,
                                       topics: tuple[str, ...]) -> None:
    assert real.classify_fields("x", title, summary, lang=lang).topics == topics


# ---------------------------------------------------------------- the JSONL contract


def test_classify_jsonl_writes_one_object_per_line_in_order(tmp_path: Path) -> None:
    classifier = one_term(tmp_path, "RGPD")
    lines = [
        json.dumps({"id": "a", "title": "RGPD : bilan", "summary": "<p>é</p>"}),
        "",
        json.dumps({"id": "b", "title": "Rien", "summary": "", "lang": "en", "source": "S", "content": None}),
    ]
    out = io.StringIO()
    assert classify_jsonl(classifier, lines, out, "in.jsonl") == 2
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {"id": "a", "topics": ["t"], "scores": {"t": 3.0},
                     "matches": {"t": [{"rule": "r", "field": "title", "text": "RGPD", "start": 0, "end": 4}]}}
    assert second == {"id": "b", "topics": [], "scores": {}, "matches": {}}


def test_classify_jsonl_keeps_non_ascii_text(tmp_path: Path) -> None:
    classifier = one_term(tmp_path, "données")
    out = io.StringIO()
    classify_jsonl(classifier, [json.dumps({"id": "é", "title": "Données"})], out, "-")
    assert '"Données"' in out.getvalue() and '"é"' in out.getvalue()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"title": "x"}', "missing 'id'"),
        ('{"id": "a"}', "missing 'title'"),
        ('{"id": 3, "title": "x"}', "'id' must be a string"),
        ('{"id": "a", "title": "x", "summary": 4}', "'summary' must be a string"),
    ],
)
def test_classify_jsonl_bad_line_names_source_and_line(tmp_path: Path, line: str, problem: str) -> None:
    classifier = one_term(tmp_path, "x")
    good = json.dumps({"id": "ok", "title": "t"})
    with pytest.raises(PipelineError) as caught:
        classify_jsonl(classifier, [good, line], io.StringIO(), "items.jsonl")
    assert str(caught.value).startswith("items.jsonl:2: ")
    assert problem in str(caught.value)
