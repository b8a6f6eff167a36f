"""French-aware text normalisation shared by rules and texts.

The same folding is applied to the words of a rule and to the text it is
matched against, so that an editor never has to think about accents, case,
typographic apostrophes or hyphens:

* HTML is stripped and entities decoded (:func:`strip_html`, used on feed
  summaries; offsets of matches are offsets into the *stripped* text);
* Unicode NFKC (ligatures, full-width letters, superscripts become plain
  letters);
* case folding (except for rule terms marked ``case: true``);
* accent folding: ``règlement`` and ``reglement`` are the same word;
  ``œ``/``æ`` are ``oe``/``ae``;
* apostrophes ’ ‘ ʼ ′ ' and hyphens ‐ ‑ – — - are word separators, and French
  elided particles (l', d', qu', jusqu'…) are skipped, so ``l'IA`` contains
  the word ``ia`` and ``AI-Act`` is ``AI Act``;
* light plural handling (:func:`word_forms`): a rule word also matches its
  usual French and English plural or singular forms;
* whole words only: ``IA`` never matches inside ``média`` or ``IAM``.

Texts are *not* rewritten into a new string with different offsets: the
engine matches a length-preserving fold of the text (:func:`fold_for_match`),
so every match span is directly a span of the original text. Only texts that
contain rare compatibility characters take a slower path that keeps an
explicit offset map.
"""

from __future__ import annotations

import html
import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass

__all__ = [
    "APOSTROPHES",
    "ELISIONS",
    "FoldedText",
    "fold_for_match",
    "fold_word",
    "normalize",
    "strip_html",
    "term_words",
    "word_forms",
]

APOSTROPHES = "'’‘ʼ′`´"
HYPHENS = "-‐‑‒–—―−"
# French particles that lose their vowel before another word ("l'IA", "qu'il").
ELISIONS = ("jusqu", "lorsqu", "puisqu", "qu", "l", "d", "j", "n", "s", "c", "m", "t")

_APOS_CLASS = "[" + re.escape(APOSTROPHES) + "]"
_ELISION_RE = "(?:" + "|".join(ELISIONS) + ")" + _APOS_CLASS

# Between two words of a phrase: spaces (NBSP included), hyphens or
# apostrophes, then optionally an elided particle ("droit d'opposition" is the
# phrase "droit opposition"). Punctuation such as "." or "," ends a phrase.
SEPARATOR = r"(?:[\s" + re.escape(HYPHENS + APOSTROPHES) + r"/]+(?i:" + _ELISION_RE + r")?)"

# Words counted for proximity (`near`): elided particles do not count.
COUNTED_WORD = re.compile(r"(?<!\w)(?!(?i:" + _ELISION_RE + r"))\w+")

_MARKS = re.compile(r"[\u0300-\u036f]")
_TAG_BLOCK = re.compile(
    r"<(script|style|template|noscript)\b[^>]*>.*?</\1\s*>|<!--.*?-->|<!\[CDATA\[.*?\]\]>",
    re.IGNORECASE | re.DOTALL,
)
# A tag that starts a new block must keep the words on either side apart;
# inline tags (<a>, <b>, <i>…) must not split "R<b>G</b>PD".
_BLOCK_TAGS = (
    "address|article|aside|blockquote|br|dd|div|dl|dt|figcaption|figure|footer|h[1-6]|header|hr|li|"
    "main|nav|ol|p|pre|section|table|tbody|td|tfoot|th|thead|tr|ul|img"
)
_TAG_SPLIT = re.compile(r"</?(?:" + _BLOCK_TAGS + r")\b[^>]*>", re.IGNORECASE)
_TAG_ANY = re.compile(r"</?[A-Za-z][^>]*>")


def strip_html(text: str) -> str:
    """Plain text of an HTML fragment: tags removed, entities decoded.

    Text without ``<`` or ``&`` is returned unchanged (so its offsets stay
    valid). Block tags become a space so that words never glue together.
    """
    if "<" not in text and "&" not in text:
        return text
    out = _TAG_BLOCK.sub(" ", text)
    out = _TAG_SPLIT.sub(" ", out)
    out = _TAG_ANY.sub("", out)
    return html.unescape(out)


def _slow_fold_char(char: str) -> str:
    """Full fold of one character, case preserved (case is left to the regex)."""
    out = unicodedata.normalize("NFKC", char)
    out = _MARKS.sub("", unicodedata.normalize("NFD", out))
    if any(len(c.casefold()) > 1 for c in out):
        # ß → ss, ligatures: no single-character case-insensitive equivalent.
        out = out.casefold()
    return out


def _build_slow_chars() -> re.Pattern[str]:
    """Characters whose fold is not one character that the regex can compare.

    Computed once at import (an immutable table): word-forming characters of
    the BMP whose NFKC or case folding changes them beyond what
    NFD-and-strip-marks plus case-insensitive regex matching does.
    """
    ranges: list[tuple[int, int]] = []
    for code in range(0xA0, 0x10000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        fast = _MARKS.sub("", unicodedata.normalize("NFD", char))
        full = _slow_fold_char(char)
        if full == fast and len(fast) == 1:
            continue
        if not any(c.isalnum() for c in full) and not any(c.isalnum() for c in fast):
            continue  # NBSP, "…", typographic spaces: separators either way
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    parts = [
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges
    ]
    return re.compile("[" + "".join(parts) + "]")


_SLOW_CHARS = _build_slow_chars()


@dataclass(frozen=True)
class FoldedText:
    """A text folded for matching, and the way back to original offsets.

    ``text`` keeps the case of the original (case-insensitive terms are
    matched with a case-insensitive regex, ``case: true`` terms are not).
    ``starts`` is empty when ``text`` is aligned character for character with
    the original; otherwise ``starts[i]`` is the folded offset where original
    character ``i`` begins.
    """

    text: str
    starts: tuple[int, ...] = ()

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        if not self.starts:
            return start, end
        # The original character that produced folded offset `start`, and the
        # first original character that starts at or after folded `end`.
        first = bisect_right(self.starts, start) - 1
        last = bisect_right(self.starts, end - 1) - 1
        return max(first, 0), last + 1


def fold_for_match(text: str) -> FoldedText:
    """Accent- and compatibility-fold ``text`` keeping offsets recoverable."""
    if text.isascii():
        return FoldedText(text)
    if _MARKS.search(text) is None and _SLOW_CHARS.search(text) is None:
        folded = _MARKS.sub("", unicodedata.normalize("NFD", text))
        if len(folded) == len(text):
            return FoldedText(folded)
    # Rare path: decomposed input, ligatures, full-width letters, ß…
    pieces: list[str] = []
    starts: list[int] = []
    pos = 0
    for char in text:
        starts.append(pos)
        piece = _slow_fold_char(char)
        pieces.append(piece)
        pos += len(piece)
    return FoldedText("".join(pieces), tuple(starts))


def fold_word(text: str, case: bool = False) -> str:
    """Fold a rule fragment fully: NFKC, accents, œ/æ, and case unless ``case``."""
    out = "".join(_slow_fold_char(c) for c in unicodedata.normalize("NFKC", text))
    out = out.replace("œ", "oe").replace("Œ", "OE").replace("æ", "ae").replace("Æ", "AE")
    return out if case else out.casefold()


_RULE_SPLIT = re.compile(r"[^\w*]+")
_ELISION_WORDS = frozenset(ELISIONS)


def term_words(text: str, case: bool = False) -> tuple[str, ...]:
    """The words of a rule term after normalisation (elided particles dropped).

    ``"Règlement sur l’IA"`` → ``("reglement", "sur", "ia")``; a trailing
    ``*`` marks a prefix word (``"régul*"`` → ``("regul*",)``). An empty
    tuple means the term normalises to nothing (only punctuation, or only an
    elided particle), which the rules loader rejects.
    """
    folded = fold_word(text, case)
    for apostrophe in APOSTROPHES:
        folded = folded.replace(apostrophe, "'")
    words: list[str] = []
    for chunk in re.split(r"[\s" + re.escape(HYPHENS) + r"/]+", folded):
        parts = chunk.split("'")
        for index, part in enumerate(parts):
            # "l'" before another part of the same chunk is an elision.
            if index < len(parts) - 1 and part.casefold() in _ELISION_WORDS:
                continue
            for word in _RULE_SPLIT.split(part):
                stripped = word.strip("*")
                if not stripped:
                    continue
                words.append(stripped + ("*" if word.endswith("*") else ""))
    return tuple(words)


_VOWELS = frozenset("aeiouy")


def word_forms(word: str) -> frozenset[str]:
    """Light plural handling: the singular and plural forms a rule word stands for.

    Not a linguistic stemmer: it covers the regular French and English
    plurals (``-s``, ``-x`` after ``eau``/``eu``, ``-al``/``-aux``,
    English ``-y``/``-ies``) so that ``donnée`` finds ``données`` and
    ``publishers`` finds ``publisher``. Words shorter than three letters are
    never inflected (``IA`` must not match ``IAs`` written as another word),
    and a word must keep at least four letters once its ``s`` is removed, so
    that ``news`` never becomes ``new``.
    """
    bases = {word}
    lower = word.casefold()
    if len(lower) >= 5 and lower.endswith("s") and not lower.endswith("ss"):
        bases.add(word[:-1])
    if len(lower) >= 5 and lower.endswith("ies"):
        bases.add(word[:-3] + "y")
    if len(lower) >= 6 and lower.endswith("aux") and not lower.endswith("eaux"):
        bases.add(word[:-3] + "al")
    if len(lower) >= 5 and lower.endswith(("eaux", "eux")):
        bases.add(word[:-1])
    forms = set(bases)
    for base in bases:
        low = base.casefold()
        if len(low) < 3:
            continue
        if not low.endswith(("s", "x", "z")):
            forms.add(base + "s")
        if len(low) >= 5 and low.endswith("al"):
            forms.add(base[:-2] + "aux")
        if low.endswith(("eau", "eu")):
            forms.add(base + "x")
        if len(low) >= 4 and low.endswith("y") and low[-2] not in _VOWELS:
            forms.add(base[:-1] + "ies")
    return frozenset(forms)


def normalize(text: str) -> str:
    """The normalised word sequence of a text, for display and tests.

    ``normalize("<p>L’AI-Act s’applique</p>")`` → ``"ai act applique"``. The
    engine does not build this string (it matches a length-preserving fold
    to keep offsets), but it compares exactly these words.
    """
    plain = strip_html(text)
    folded = fold_word(plain)
    words: list[str] = []
    for match in COUNTED_WORD.finditer(folded):
        words.append(match.group())
    return " ".join(words)

