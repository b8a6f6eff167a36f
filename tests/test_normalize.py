"""Normalisation: the same folding for rules and texts, with offsets kept."""

from __future__ import annotations

import unicodedata

import pytest

from pipeline.classify.normalize import (
    fold_for_match,
    normalize,
    term_words,
    word_forms,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # accents folded both ways
        ("Règlement européen", "reglement europeen"),
        ("REGLEMENT EUROPEEN", "reglement europeen"),
        # case folded
        ("CNIL et Cnil", "cnil et cnil"),
        # œ and æ fold like oe and ae
        ("Œuvre et cæcum", "oeuvre et caecum"),
        # typographic apostrophes all split the elision
        ("l’IA l'IA l‘IA lʼIA l′IA", "l ia l ia l ia l ia l ia"),
        # every French elision splits
        ("jusqu’au lorsqu’il puisqu’on qu’il d’IA s’oppose c’est n’a m’a t’a j’ai",
         "jusqu au lorsqu il puisqu on qu il d ia s oppose c est n a m a t a j ai"),
        # hyphens and spaces are equivalent
        ("AI-Act AI Act AI‑Act AI–Act", "ai act ai act ai act ai act"),
        # NFKC: ligature and full-width letters
        ("ﬁnancement ＲＧＰＤ", "financement rgpd"),
        # decomposed accents (NFD input)
        (unicodedata.normalize("NFD", "données"), "donnees"),
        # quotes and French spacing are separators
        ("« AI Act »\u202f: oui", "ai act oui"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_html_is_stripped_and_entities_decoded() -> None:
    assert normalize("<p>La CNIL</p><p>sanctionne&nbsp;l&rsquo;op&eacute;rateur</p>") == \
        "la cnil sanctionne l operateur"
    # the text pass does the HTML part (tests/test_text.py has its cases)
    assert normalize("<p>AI</p><p>Act</p>R<b>G</b>PD <script>alert('CNIL')</script>a < b") == "ai act rgpd a b"


def test_fold_keeps_offsets_on_the_fast_path() -> None:
    text = "Le règlement « AI Act » s’applique à l’œuvre"
    folded = fold_for_match(text)
    assert len(folded.text) == len(text)
    assert folded.starts == ()
    start = folded.text.index("reglement")
    assert text[start:start + len("reglement")] == "règlement"


def test_fold_maps_offsets_back_on_the_slow_path() -> None:
    # A ligature expands to two letters and decomposed accents shrink: the
    # folded text is not aligned, the offset map must bring spans back.
    text = "La ﬁn du re\u0301glement"
    folded = fold_for_match(text)
    assert folded.starts
    assert folded.text == "la fin du reglement"
    start = folded.text.index("reglement")
    o_start, o_end = folded.original_span(start, start + len("reglement"))
    assert text[o_start:o_end] == "re\u0301glement"
    f_start = folded.text.index("fin")
    assert folded.original_span(f_start, f_start + 3) == (3, 5)  # "ﬁn": two characters in the original


def test_case_kept_fold_for_acronyms() -> None:
    assert fold_for_match("Le RIA et la ria").cased_text() == "Le RIA et la ria"
    assert fold_for_match("Méta").cased_text() == "Meta"


def test_term_words() -> None:
    assert term_words("Règlement sur l’IA") == ("reglement", "sur", "l", "ia")
    assert term_words("l'IA") == ("ia",)  # a leading elision is dropped
    assert term_words("droit d'opposition") == ("droit", "d", "opposition")
    assert term_words("régul*") == ("regul*",)
    assert term_words("AI-Act") == ("ai", "act")
    assert term_words("RIA", case=True) == ("RIA",)
    # normalises to nothing
    assert term_words("l'") == ()
    assert term_words(" -- ") == ()


@pytest.mark.parametrize(
    ("word", "forms"),
    [
        ("donnee", {"donnee", "donnees"}),
        ("donnees", {"donnee", "donnees"}),
        ("journal", {"journal", "journaux"}),
        ("reseau", {"reseau", "reseaux"}),
        ("publisher", {"publisher", "publishers"}),
        ("authority", {"authority", "authorities"}),
        ("fines", {"fine", "fines"}),
    ],
)
def test_plural_forms(word: str, forms: set[str]) -> None:
    assert forms <= word_forms(word)


def test_plural_handling_stays_light() -> None:
    assert word_forms("ia") == {"ia"}  # short words never inflect
    assert "new" not in word_forms("news")
    assert "acces" in word_forms("acces")
