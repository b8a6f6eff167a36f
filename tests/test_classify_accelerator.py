"""The C accelerator of the rules engine (pipeline/classify/_scan.c) against the Python engine.

The accelerator must change nothing but speed: every Classification (topics, scores, every match
with its offsets) equals the pure-Python engine's, on texts of every kind: the real feed corpus
and labelled sets, generated news, random mixes of rule words in odd spellings, other scripts,
HTML, empty fields.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
from pathlib import Path

import pytest

from pipeline.classify import Classifier
from pipeline.classify import engine as engine_module
from pipeline.classify.rules import terms_of
from pipeline.config.topics import load_topics

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

pytestmark = pytest.mark.skipif(
    os.environ.get("TECH_MATIN_PURE_PYTHON", "") not in ("", "0"),
    reason="TECH_MATIN_PURE_PYTHON is set: the accelerator is not built",
)


def test_accelerator_is_built() -> None:
    # A silent fallback would hide a broken build: `pip install -e .` compiles it (gcc and the
    # Python headers), and TECH_MATIN_PURE_PYTHON=1 is the documented way to go without.
    assert engine_module._accelerator is not None, "pipeline/classify/_scan.c was not compiled"
    classifier = Classifier.compile(load_topics(REPO / "topics.yaml"))
    assert classifier._scanner is not None and classifier._classify_fast is not None


@pytest.fixture(scope="module")
def engines() -> tuple[Classifier, Classifier]:
    config = load_topics(REPO / "topics.yaml")
    fast = Classifier.from_topics(config.topics, config.fingerprint)
    pure = Classifier.from_topics(config.topics, config.fingerprint, use_accelerator=False)
    assert fast._scanner is not None and pure._scanner is None
    return fast, pure


def _generated(count: int) -> list[tuple[str, str]]:
    spec = importlib.util.spec_from_file_location("bench_classify", REPO / "benchmarks" / "classify.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_classify", module)
    spec.loader.exec_module(module)
    return module.generate(count, seed=4242)


def _mixes(count: int) -> list[tuple[str, str, str, str]]:
    """Random (title, summary, content, lang) built from every rule word, in odd spellings."""
    rng = random.Random(11)
    config = load_topics(REPO / "topics.yaml")
    words = sorted({t.text.rstrip("*") + ("ation" if t.text.endswith("*") else "")
                    for topic in config.topics for rule in topic.rules
                    for node in (rule.condition, *rule.unless) for t in terms_of(node)}
                   | {t.text for topic in config.topics for u in topic.unless for t in terms_of(u)})
    filler = ("le la les de des du l' d' qu' jusqu' un une et sur pour avec selon dans , . ; - – ’ ' : ( ) "
              "œuvre Œuvre ﬁnancement Ωμέγα données réglement Règlement IA ia Ia META Meta meta métadonnées "
              "média 日本 naïve Straße µ ½ ÆON &amp; &lt;b&gt; €").split()

    def spell(word: str) -> str:
        roll = rng.random()
        if roll < 0.15:
            return word.upper()
        if roll < 0.3:
            return word.lower()
        if roll < 0.4:
            return word.replace(" ", "-")
        if roll < 0.5:
            return word.replace("'", "’")
        if roll < 0.55:
            return word + "s"
        if roll < 0.6:
            return "<b>" + word + "</b>"
        return word

    def field(size: int) -> str:
        return " ".join(spell(rng.choice(words)) if rng.random() < 0.45 else rng.choice(filler)
                        for _ in range(size))

    return [(field(rng.randint(0, 12)), field(rng.randint(0, 40)), field(rng.choice([0, 0, 5, 80])),
             rng.choice(["fr", "en", "fr-FR", "", "de", "EN_us"])) for _ in range(count)]


def _jsonl(path: Path) -> list[tuple[str, str, str, str]]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            data = json.loads(line)
            items.append((data.get("title", ""), data.get("summary", ""), data.get("content", ""),
                          data.get("lang", "fr")))
    return items


def _assert_same(engines: tuple[Classifier, Classifier], items: list[tuple[str, str, str, str]]) -> int:
    fast, pure = engines
    fired = 0
    for index, (title, summary, content, lang) in enumerate(items):
        expected = pure.classify_fields(f"i{index}", title, summary, content, lang)
        got = fast.classify_fields(f"i{index}", title, summary, content, lang)
        assert got == expected, (title, summary, content, lang)
        # Same path twice (the plan memo is warm the second time).
        assert fast.classify_fields(f"i{index}", title, summary, content, lang) == expected
        fired += bool(expected.matches)
    return fired


def test_same_results_on_generated_news(engines: tuple[Classifier, Classifier]) -> None:
    items = [(title, summary, "", "fr") for title, summary in _generated(3000)]
    assert _assert_same(engines, items) > 1000  # rules fire on many of them: the comparison means something


def test_same_results_on_random_mixes_of_rule_words(engines: tuple[Classifier, Classifier]) -> None:
    # Case-sensitive and prefix terms, `near` and `unless`, elisions, ligatures, other scripts
    # (the Python fold's slow path), HTML and entities, empty fields, several languages.
    assert _assert_same(engines, _mixes(3000)) > 1000


def test_same_results_on_labelled_sets(engines: tuple[Classifier, Classifier]) -> None:
    items = []
    for path in sorted((REPO / "tests" / "fixtures" / "heldout").glob("*.jsonl")):
        items += _jsonl(path)
    labels = json.loads((REPO / "tests" / "fixtures" / "demo_labels.json").read_text(encoding="utf-8"))
    assert items and labels
    assert _assert_same(engines, items) > 50


def test_same_results_on_the_shared_dev_set_and_feed_corpus(engines: tuple[Classifier, Classifier]) -> None:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present on this machine")
    import feedparser

    items = _jsonl(SHARED / "labeled" / "dev.jsonl")
    for path in sorted((SHARED / "feeds").rglob("*")):
        if path.is_file() and path.suffix in (".xml", ".rss", ".atom", ".rdf", ".feed"):
            parsed = feedparser.parse(path.read_bytes())
            for entry in parsed.entries[:50]:
                content = " ".join(part.get("value", "") for part in entry.get("content", []))
                items.append((entry.get("title", ""), entry.get("summary", ""), content, "fr"))
    assert len(items) > 500
    _assert_same(engines, items)


def test_texts_at_the_edges(engines: tuple[Classifier, Classifier]) -> None:
    items = [
        ("", "", "", "fr"),
        ("Meta", "", "", "fr"),  # a keyword touching both ends of the text
        ("", "", "RGPD", "fr"),
        ("CNIL", "CNIL", "CNIL", "fr"),
        ("meta analyse", "Meta Quest", "Llama", "fr"),
        ("AI Act AI-Act AI–Act", "l’AI Act s’applique", "jusqu’au 2 août", "fr"),
        ("\x00\x01 Meta\x7f", "Meta\u2028AI", "Meta\u00a0AI", "fr"),
        ("x" * 10_000, "Meta AI " * 500, "RGPD " * 2_000, "fr"),
    ]
    _assert_same(engines, items)


def test_accelerator_refuses_bad_arguments_without_crashing(engines: tuple[Classifier, Classifier]) -> None:
    fast, _ = engines
    accelerator = engine_module._accelerator
    with pytest.raises(TypeError):
        fast._scanner.scan("not bytes", 1, 2)
    with pytest.raises(TypeError):
        fast._scanner.scan(b"x", 1)
    tables = (engine_module._LOWER_TABLE, engine_module._CASE_TABLE)
    with pytest.raises(TypeError):
        accelerator.Scanner(*tables, [("not bytes", (), ())])
    with pytest.raises(ValueError):
        accelerator.Scanner(b"short", tables[1], [])
    with pytest.raises(ValueError):
        accelerator.Scanner(bytes(256), tables[1], [])  # a table that never makes a space
    with pytest.raises(TypeError):
        accelerator.evaluate(("set",), {}, 3)
    with pytest.raises(ValueError):
        accelerator.evaluate(("nonsense", frozenset()), {}, "text")
    with pytest.raises(TypeError):
        accelerator.cancel((("set", frozenset({1})),), {1: [("not", "a span")]}, "text")
    with pytest.raises(IndexError):
        accelerator.build_matches([(0, 5, 99, 0, "rule", 1.0)], ("short", "", ""), ("t",), ("title", "summary",
                                  "content"), engine_module.Match)
    with pytest.raises(RuntimeError):
        accelerator.Scanner.__new__(accelerator.Scanner).scan(b"x", 1, 2)
    # __init__ failing half-way (a repeated keyword) leaves a scanner that refuses to scan.
    broken = accelerator.Scanner.__new__(accelerator.Scanner)
    with pytest.raises(ValueError, match="repeats"):
        broken.__init__(*tables, [(b" a ", (), ()), (b" a ", (), ())])
    with pytest.raises(RuntimeError):
        broken.scan(b"a", 1, 2)
    with pytest.raises(RuntimeError):
        broken.classify("id", ("a", "", ""), "fr", b"a", lambda *key: ())


def test_pure_python_switch_gives_the_same_cli_output(tmp_path: Path) -> None:
    # TECH_MATIN_PURE_PYTHON=1 at run time leaves the built accelerator unused: the command's
    # output is the same, byte for byte, on the held-out items (HTML, English, traps).
    import subprocess

    source = REPO / "tests" / "fixtures" / "heldout" / "set_b.jsonl"
    outputs = []
    for pure in ("", "1"):
        env = {**os.environ, "TECH_MATIN_PURE_PYTHON": pure}
        probe = subprocess.run([sys.executable, "-c", "from pipeline.classify import Classifier; "
                                "from pipeline.config.topics import load_topics; "
                                f"print(Classifier.compile(load_topics({str(REPO / 'topics.yaml')!r})).accelerated)"],
                               env=env, capture_output=True, text=True, check=True)
        assert probe.stdout.strip() == ("False" if pure else "True")
        done = subprocess.run([sys.executable, "-m", "pipeline", "classify", str(source),
                               "--topics", str(REPO / "topics.yaml")],
                              env=env, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0].count("\n") == 90
