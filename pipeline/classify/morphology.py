"""Light French and English morphology for rule words: a stemmer and the forms it joins.

The engine matches surface forms (one automaton over the folded text, see
:mod:`pipeline.classify.engine`), so morphology is applied on the rule side:
a rule word stands for every inflected form that a *light stemmer* gives the
same stem. :func:`stem` is in the manner of Lucene's ``FrenchLightStemmer``
(Savoy's light stemmer: number and gender, not derivation), extended with
the English plural; :func:`inflections` lists the candidate forms of a word
(plural, feminine, the present and past forms of a French ``-er`` verb) and
keeps those that stem like it.

What a rule writer can rely on:

* number and gender, French and English: ``donnée`` finds ``données``,
  ``européen`` finds ``européenne(s)``, ``journal`` finds ``journaux``,
  ``éditeur`` finds ``éditrice(s)``, ``authority`` finds ``authorities``;
* French ``-er`` verbs: ``entraîner`` finds ``entraîne``, ``entraînent``,
  ``entraîné(e)(s)``, ``entraînant``, ``entraînera``;
* short words (three letters or fewer) and acronyms are never inflected
  but for an ``s`` after an acronym (``LLM``, ``LLMs``): ``RIA`` is not a
  stem of anything;
* derivation is left alone: ``régulation`` does not find ``régulateur``
  (write a prefix, ``régul*``, for that), nor ``accord`` ``according``.
"""

from __future__ import annotations

import unicodedata

__all__ = ["inflections", "stem"]

_ELISIONS = ("jusqu", "lorsqu", "puisqu", "qu", "l", "d", "j", "n", "s", "c", "m", "t")
_APOSTROPHES = "'’‘ʼ′`´"
_VOWELS = frozenset("aeiouy")

# Feminine endings and their masculine (longest first): européenne → européen.
_FEMININE = (("rices", "eur"), ("euses", "eur"), ("elles", "el"), ("ennes", "en"), ("onnes", "on"),
             ("ives", "if"), ("rice", "eur"), ("euse", "eur"), ("elle", "el"), ("enne", "en"),
             ("onne", "on"), ("ive", "if"))
# Forms of a French -er verb, from its radical: entraîn-er → entraîn-e, entraîn-ent…
_VERB_ENDINGS = ("er", "e", "es", "ent", "ee", "ees", "ez", "ons", "ant", "era", "eront", "erait", "ait",
                 "aient")


def _fold(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _strip_elision(word: str) -> str:
    for mark in _APOSTROPHES:
        head, sep, tail = word.partition(mark)
        if sep and tail and _fold(head) in _ELISIONS:
            return tail
    return word


def _is_acronym(word: str) -> bool:
    """``RIA``, ``LLMs``, ``GPAI``, ``EDPB``: capitals (a plural ``s`` allowed), or digits."""
    core = word[:-1] if len(word) > 2 and word.endswith("s") else word
    return (len(core) >= 2 and core.isupper()) or any(c.isdigit() for c in word)


def stem(word: str) -> str:
    """The light stem of one word (case, accents and a leading elision folded away).

    >>> stem("données"), stem("Donnée"), stem("l'IA"), stem("RIA"), stem("journaux")
    ('donne', 'donne', 'ia', 'ria', 'journal')
    """
    word = _strip_elision(word.strip())
    acronym = _is_acronym(word)
    folded = _fold(word)
    if acronym:
        return folded[:-1] if folded.endswith("s") and len(folded) > 3 else folded
    return _stem_folded(folded)


def _stem_folded(word: str) -> str:
    if len(word) <= 3 or not word.isalpha():
        return word
    # Number: journaux → journal, bureaux → bureau, données → donnée, companies → companie.
    if word.endswith("eaux"):
        word = word[:-1]
    elif word.endswith("aux") and len(word) >= 6:
        word = word[:-3] + "al"
    elif len(word) >= 5 and (word.endswith("eux") or (word.endswith("s") and not word.endswith(("ss", "us", "is")))):
        word = word[:-1]
    # Gender: européenne → européen, éditrice → éditeur, active → actif.
    for ending, masculine in _FEMININE:
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[: -len(ending)] + masculine
    # A final mute e (or the e of -ée): donnée → donne, entraîne → entrain, companie → compani.
    if word.endswith("e") and len(word) >= 5:
        word = word[:-1]
    if word.endswith("y") and len(word) >= 4 and word[-2] not in _VOWELS:
        word = word[:-1] + "i"  # company and companies meet at compani
    return word


# Endings after which a French masculine takes a feminine e: participles and
# adjectives (sanctionné, interdit, américain), not nouns such as accord.
_TAKES_E = ("e", "t", "i", "u", "in", "an", "ais", "ois")


def inflections(word: str, in_phrase: bool = False) -> frozenset[str]:
    """The forms a folded rule word stands for: itself and the inflections that stem like it.

    ``word`` is lower-case and unaccented (a rule word after normalisation);
    words of three letters or fewer stand for themselves only. A word of a
    phrase stands for its number forms only (the writer of a phrase gives its
    words their gender, and the forms of a phrase multiply).
    """
    if len(word) < 3 or not word.isalpha():
        return frozenset({word})
    if len(word) == 3:  # an acronym written in lower case: LLM, LLMs
        return frozenset({word, word + "s"}) if not word.endswith(("s", "x", "z")) else frozenset({word})
    target = _stem_folded(word)
    candidates = {word, word + "s", word + "x"}
    if word.endswith("s") and not word.endswith("ss") and len(word) >= 5:
        candidates.add(word[:-1])
    if word.endswith("al"):
        candidates.add(word[:-2] + "aux")
    if word.endswith("aux"):
        candidates.add(word[:-3] + "al")
    if word.endswith(("eau", "eu")):
        candidates.add(word + "x")
    if word.endswith("x"):
        candidates.add(word[:-1])
    if word.endswith("y") and len(word) >= 4 and word[-2] not in _VOWELS:
        candidates.update({word[:-1] + "ies", word[:-1] + "ie"})
    if word.endswith("ies"):
        candidates.add(word[:-3] + "y")
    if in_phrase:
        return frozenset(form for form in candidates if _stem_folded(form) == target)
    if word.endswith(_TAKES_E):
        candidates.update({word + "e", word + "es"})
    for ending, masculine in _FEMININE:
        if word.endswith(masculine):
            candidates.add(word[: -len(masculine)] + ending)
        if word.endswith(ending):
            candidates.add(word[: -len(ending)] + masculine)
    if word.endswith("ee"):
        candidates.update({word + "s", word[:-1]})
    if word.endswith("er") and len(word) >= 6:
        radical = word[:-2]
        candidates.update(radical + ending for ending in _VERB_ENDINGS)
    forms = {form for form in candidates if _stem_folded(form) == target}
    if word.endswith("er") and len(word) >= 6:
        # The verb's forms stem to its radical, not to the infinitive's stem: keep them by construction.
        forms.update(word[:-2] + ending for ending in _VERB_ENDINGS)
    return frozenset(forms)
