"""Evaluation against labelled items: counts, scores, the report, and the dev set."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pipeline.classify import Classifier, evaluate, format_report
from pipeline.classify.evaluate import TopicScore, format_reports, total
from pipeline.config.topics import load_topics
from pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "labeled" / "dev.jsonl"

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
    heading: DU CÔTÉ DE BRUXELLES
    theme: Régulation de l'IA
    threshold: 3
    rules:
      - name: act
        term: AI Act
"""


@pytest.fixture
def classifier(tmp_path: Path) -> Classifier:
    path = tmp_path / "topics.yaml"
    path.write_text(textwrap.dedent(RULES), encoding="utf-8")
    return Classifier.compile(load_topics(path))


def line(id: str, title: str, labels: list[str], summary: str = "") -> str:
    return json.dumps({"id": id, "title": title, "summary": summary, "labels": labels, "lang": "fr"})


def test_topic_score_arithmetic() -> None:
    score = TopicScore("t", tp=3, fp=1, fn=2)
    assert score.precision == pytest.approx(0.75)
    assert score.recall == pytest.approx(0.6)
    assert score.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert score.support == 5
    # no prediction and no label: nothing was wrong
    assert TopicScore("t", 0, 0, 0).f1 == 1.0
    assert TopicScore("t", 0, 2, 0).f1 == 0.0


def test_evaluate_counts_and_lists_errors(classifier: Classifier) -> None:
    lines = [
        line("1", "La CNIL sanctionne", ["rgpd"]),  # TP rgpd
        line("2", "RGPD : la CNIL en ligne", []),  # FP rgpd
        line("3", "Données personnelles et vie privée", ["rgpd"]),  # FN rgpd
        line("4", "L'AI Act s'applique", ["ai_act"]),  # TP ai_act
        "",
        line("5", "Rien à voir", []),
    ]
    report = evaluate(classifier, lines, "set.jsonl")
    assert report.items == 5
    assert [(t.topic, t.tp, t.fp, t.fn) for t in report.topics] == [("rgpd", 1, 1, 1), ("ai_act", 1, 0, 0)]
    assert report.macro_f1 == pytest.approx((0.5 + 1.0) / 2)
    (fp,) = report.false_positives
    assert (fp.topic, fp.item_id, fp.score, fp.threshold, fp.lineno) == ("rgpd", "2", 3.0, 3, 2)
    assert [m.text for m in fp.matches] == ["RGPD", "CNIL"]
    (fn,) = report.false_negatives
    assert (fn.topic, fn.item_id, fn.matches) == ("rgpd", "3", ())


def test_format_report_shows_table_and_every_error(classifier: Classifier) -> None:
    lines = [line("ok", "La CNIL sanctionne", ["rgpd"]), line("fp-1", "RGPD : la CNIL", []),
             line("fn-1", "Vie privée", ["rgpd"])]
    text = format_report(evaluate(classifier, lines, "set.jsonl"))
    assert "set.jsonl: 3 items" in text
    rows = {row.split()[0]: row.split()[1:] for row in text.splitlines() if row.startswith(("rgpd", "ai_act"))}
    assert rows["rgpd"] == ["1", "1", "1", "0.500", "0.500", "0.500"]
    assert "macro-F1" in text
    assert "False positives (1):" in text and "[rgpd] fp-1: RGPD : la CNIL" in text
    assert "title:law:«RGPD»" in text and "title:law:«CNIL»" in text
    assert "False negatives (1):" in text and "[rgpd] fn-1: Vie privée" in text and "nothing matched" in text


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (json.dumps({"id": "x", "title": "t"}), "'labels' must be a list"),
        (json.dumps({"id": "x", "title": "t", "labels": ["sport"]}), "unknown topic 'sport'"),
        ("{oops", "not valid JSON"),
    ],
)
def test_bad_labelled_line(classifier: Classifier, bad: str, problem: str) -> None:
    with pytest.raises(PipelineError) as caught:
        evaluate(classifier, [line("1", "t", []), bad], "set.jsonl")
    assert str(caught.value).startswith("set.jsonl:2: ") and problem in str(caught.value)


def test_empty_set_is_an_error(classifier: Classifier) -> None:
    with pytest.raises(PipelineError, match="no labelled item"):
        evaluate(classifier, ["", "  "], "empty.jsonl")


def test_real_rules_on_the_dev_set() -> None:
    if not DEV.exists():
        pytest.skip(f"{DEV} is not available (the shared folder sits beside the repo)")
    classifier = Classifier.compile(load_topics(REPO / "topics.yaml"))
    with DEV.open(encoding="utf-8") as lines:
        report = evaluate(classifier, lines, str(DEV))
    assert report.items >= 50
    assert report.macro_f1 >= 0.90, format_report(report)


@pytest.mark.parametrize("name", ["set_a.jsonl", "set_b.jsonl"])
def test_real_rules_on_the_held_out_sets(name: str) -> None:
    # Two sets of 90 items written apart from the rules and the dev set, from the labelling guide
    # alone (tests/fixtures/heldout/README.md): other wordings, other traps, French and English.
    path = REPO / "tests" / "fixtures" / "heldout" / name
    classifier = Classifier.compile(load_topics(REPO / "topics.yaml"))
    with path.open(encoding="utf-8") as lines:
        report = evaluate(classifier, lines, str(path))
    assert report.items == 90
    assert report.macro_f1 >= 0.95, format_report(report)
    assert all(score.f1 >= 0.92 for score in report.topics), format_report(report)


def test_several_files_give_a_table_each_and_the_total(classifier: Classifier) -> None:
    first = evaluate(classifier, [line("1", "La CNIL sanctionne", ["rgpd"]), line("2", "Vie privée", ["rgpd"])],
                     "a.jsonl")
    second = evaluate(classifier, [line("3", "L'AI Act s'applique", ["ai_act"]), line("4", "RGPD", [])], "b.jsonl")
    combined = total([first, second])
    assert combined.items == 4
    assert [(t.topic, t.tp, t.fp, t.fn) for t in combined.topics] == [("rgpd", 1, 1, 1), ("ai_act", 1, 0, 0)]
    text = format_reports([first, second])
    assert text.index("a.jsonl: 2 items") < text.index("b.jsonl: 2 items") < text.index("total: 4 items")
    assert format_reports([first]) == format_report(first)


def test_evaluate_command_takes_several_files(tmp_path: Path, run_cli) -> None:
    rules = tmp_path / "topics.yaml"
    rules.write_text(textwrap.dedent(RULES), encoding="utf-8")
    for name, rows in (("a.jsonl", [line("1", "La CNIL", ["rgpd"])]), ("b.jsonl", [line("2", "AI Act", ["ai_act"])])):
        (tmp_path / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = run_cli("evaluate", tmp_path / "a.jsonl", tmp_path / "b.jsonl", "--topics", rules, cwd=tmp_path)
    assert result.code == 0, result.err
    assert "a.jsonl: 1 items" in result.out and "b.jsonl: 1 items" in result.out and "total: 2 items" in result.out


def test_real_rules_on_the_tune_set(shared: Path) -> None:
    # The second tuning set (three other writers): a regression guard; check.jsonl is never scored in tests.
    path = shared / "labeled" / "tune.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    classifier = Classifier.compile(load_topics(REPO / "topics.yaml"))
    with path.open(encoding="utf-8") as lines:
        report = evaluate(classifier, lines, str(path))
    assert report.macro_f1 >= 0.95, format_report(report)
