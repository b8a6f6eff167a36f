"""French-aware text normalisation, the same for rules and for texts.

What an editor can rely on (README.md, "Topic rules", has the examples):

* texts arrive as the text pass leaves them (:func:`pipeline.text.clean_text`:
  no markup, entities decoded, no invisible characters, no feed boilerplate),
  and offsets of matches index that text; the classifier never sees HTML;
* Unicode compatibility forms are folded (NFKC: ligatures, full-width letters,
  superscripts) and so are case and accents: ``reglement`` finds
  ``Règlement`` and vice versa; ``œ``/``æ`` match ``oe``/``ae``;
* every character that is not a letter or a digit is a word separator:
  typographic apostrophes and quotes (’ ‘ ʼ ′ '), hyphens and spaces are all
  equivalent, so ``AI-Act`` is ``AI Act`` and French elisions are split
  (``l’IA`` is the two words ``l ia``, so the word ``IA`` is found in it);
* words are whole words: ``IA`` never matches inside ``média`` or ``IAM``;
* light plural handling (:func:`word_forms`) is done on the rule side: a rule
  word also matches its regular French and English plural or singular.

How (for speed): a text is encoded to Latin-1, one byte per character (``œ``
and ``Œ`` are first swapped for two Latin-1 control codes, and characters
outside Latin-1 such as ’ – … € become ``?``), then mapped byte by byte
through a 256-entry table to lower-case unaccented letters, digits and
spaces. That is a few C-level passes, and it keeps one output character per
input character, so a match found in the folded text is at the same offsets
in the original. Texts with characters outside Latin-1 that carry letters
(other scripts, decomposed accents, ligatures such as ``ﬁ``) take a slower
per-character path that keeps an explicit offset map.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass

from pipeline.classify.morphology import inflections
from pipeline.text import COMBINING_MARKS, clean_text, strip_accents

__all__ = [
    "APOSTROPHES",
    "ELISIONS",
    "FoldedText",
    "case_fold_latin1",
    "fast_bytes",
    "fold_for_match",
    "fold_latin1",
    "fold_parts",
    "normalize",
    "original_span",
    "term_words",
    "word_forms",
]

APOSTROPHES = "'’‘ʼ′`´"
# French particles that lose their vowel before a vowel ("l'IA", "qu'il").
ELISIONS = frozenset({"jusqu", "lorsqu", "puisqu", "qu", "l", "d", "j", "n", "s", "c", "m", "t"})

# Special folded characters: ligatures that stand for two letters are kept as
# one character (to keep offsets) and rules are expanded to match them.
OE, AE, SZ = "\x9c", "\xe6", "\xdf"
_LIGATURES = (("oe", OE), ("ae", AE), ("ss", SZ))

def _base(char: str, keep_case: bool) -> str:
    """The folded form of one character (possibly empty or several letters)."""
    out = strip_accents(char)
    return out if keep_case else out.lower()


# Latin-1 stand-ins for the French ligatures, which Latin-1 lacks: two C1
# control codes that never occur in real text, so the swap keeps lengths.
_PRE = (("œ", "\x9c"), ("Œ", "\x8c"))


def _build_table(keep_case: bool) -> bytes:
    """Latin-1 byte → folded byte: letters/digits to their unaccented form, the rest to a space."""
    table = bytearray(b" " * 256)
    for byte in range(256):
        char = chr(byte)
        if byte in (0x9C, 0x8C):  # œ, Œ
            table[byte] = 0x8C if keep_case and byte == 0x8C else ord(OE)
        elif char in ("æ", "Æ"):
            table[byte] = ord(AE) if not keep_case or char == "æ" else 0xC6
        elif char == "ß":
            table[byte] = ord(SZ)
        elif (base := _base(char, keep_case)) and len(base) == 1 and base.isalnum() and ord(base) < 256:
            table[byte] = ord(base)
        elif char.isalnum():
            table[byte] = byte  # a letter with no simpler form (ð, þ, µ): itself
    return bytes(table)


_LOWER_TABLE = _build_table(keep_case=False)
_CASE_TABLE = _build_table(keep_case=True)
# Characters the fast path encodes as themselves (one byte each).
_FAST_CHARS = frozenset(chr(i) for i in range(256)) | {"œ", "Œ"}


def _outside_latin1_with_letters(char: str) -> bool:
    """Whether a character outside Latin-1 carries letters (or accents), so that a text holding it
    needs the slow path (see fast_bytes). Only the Basic Multilingual Plane counts.

    Other characters outside Latin-1 (’, –, …, €, narrow no-break space, emoji…) are separators
    either way, so a text holding only those stays on the fast path.
    """
    code = ord(char)
    if code < 0x100 or code > 0xFFFF or 0xD800 <= code <= 0xDFFF or char in _FAST_CHARS or char in APOSTROPHES:
        return False
    # Cheapest tests first: _unsafe runs this over 65,000 characters.
    return bool(char.isalnum() or COMBINING_MARKS.match(char)
                or any(c.isalnum() for c in unicodedata.normalize("NFKC", char)))


@functools.cache
def _unsafe() -> re.Pattern[str]:
    """The characters of _outside_latin1_with_letters, as one pattern: searching a text with it is a
    C loop (0.3 µs for a title). Building it tests every BMP character (0.1 s): done once, when a
    text first needs it, not at import nor for the rules' terms (see _letters_outside_latin1)."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x100, 0x10000):
        if not _outside_latin1_with_letters(chr(code)):
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    parts = [re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges]
    return re.compile("[" + "".join(parts) + "]")


_OUTSIDE = re.compile(r"[^\x00-\xff\u0152\u0153]")  # what fast_bytes cannot encode as itself (œ Œ can)


def _letters_outside_latin1(text: str) -> bool:
    """Whether `text` holds a character of _outside_latin1_with_letters, deciding its characters one
    by one: for the few short terms of topics.yaml, which every process loads (a run whose feeds
    all answer 304 too), where building _unsafe would cost more than all the rest of the loading."""
    return any(_outside_latin1_with_letters(char) for char in set(_OUTSIDE.findall(text)))


def _fast_char(char: str, table: bytes) -> str:
    for ligature, code in _PRE:
        char = char.replace(ligature, code)
    return char.encode("latin-1").translate(table).decode("latin-1")


def _slow_fold(text: str, keep_case: bool) -> tuple[str, tuple[int, ...]]:
    """Fold character by character, recording where each original character starts."""
    pieces: list[str] = []
    starts: list[int] = []
    pos = 0
    table = _CASE_TABLE if keep_case else _LOWER_TABLE
    for char in text:
        starts.append(pos)
        if char in _FAST_CHARS:
            piece = _fast_char(char, table)
        elif char in APOSTROPHES:  # "ʼ" is a letter for Unicode, an apostrophe for readers
            piece = " "
        else:
            piece = "".join(_fast_char(c, table) if c in _FAST_CHARS else (c if c.isalnum() else " ")
                            for c in _base(char, keep_case))
        pieces.append(piece)
        pos += len(piece)
    return "".join(pieces), tuple(starts)


@dataclass(frozen=True)
class FoldedText:
    """A text folded for matching, and the way back to the original's offsets.

    ``text`` is lower-case, unaccented, with every non-alphanumeric character
    replaced by a space. ``starts`` is empty when ``text`` is aligned
    character for character with the original (the usual case); otherwise
    ``starts[i]`` is the folded offset where original character ``i`` begins.
    """

    text: str
    starts: tuple[int, ...] = ()
    encoded: bytes = b""  # Latin-1 bytes of the original (fast path), for case-sensitive checks
    cased: str = ""  # case-preserving fold (slow path only)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Offsets in the original text of folded ``[start, end)``."""
        if not self.starts:
            return start, end
        return original_span(self.starts, start, end)

    def cased_text(self) -> str:
        """The whole text folded with its case kept, for ``case: true`` terms (same offsets)."""
        if self.starts:
            return self.cased
        return case_fold_latin1(self.encoded)


def original_span(starts: tuple[int, ...], start: int, end: int) -> tuple[int, int]:
    """Offsets in the original text of folded ``[start, end)``, given a slow-path fold's ``starts``."""
    first = bisect_right(starts, start) - 1
    last = bisect_right(starts, end - 1) - 1
    return max(first, 0), last + 1


def case_fold_latin1(encoded: bytes) -> str:
    """The case-kept fold of a fast-path text, from its Latin-1 bytes (``fold_parts``'s third part)."""
    return encoded.translate(_CASE_TABLE).decode("latin-1")


def fast_bytes(text: str, term: bool = False) -> bytes | None:
    """The Latin-1 bytes that the fast path folds (see the module docstring), or None for the slow path.

    Folding them through the lower-case table gives :func:`fold_parts`'s text. ``term``: the
    text is a rule's term (short; the same answer, found without building :func:`_unsafe`).
    """
    # ’ is the commonest character outside Latin-1 in French text: swapping it
    # first spares the encoder's error handler most of its work.
    swapped = text.replace("’", "'").replace("œ", "\x9c").replace("Œ", "\x8c")
    try:
        return swapped.encode("latin-1")
    except UnicodeEncodeError:  # characters outside Latin-1 besides ’ œ Œ (– … € or letters)
        encoded = swapped.encode("latin-1", errors="replace")
    if encoded.count(b"?") == text.count("?") or not (
            _letters_outside_latin1(text) if term else _unsafe().search(text) is not None):
        # Either every character was in Latin-1, or the ones that were not are
        # separators (they became "?", which the table maps to a space).
        return encoded
    return None


def fold_latin1(encoded: bytes) -> str:
    """The folded text of :func:`fast_bytes`'s bytes."""
    return encoded.translate(_LOWER_TABLE).decode("latin-1")


def fold_parts(text: str, term: bool = False) -> tuple[str, tuple[int, ...], bytes, str]:
    """The parts of :func:`fold_for_match`'s FoldedText as a plain tuple (the engine's hot path).

    ``(text, starts, encoded, cased)``: ``starts`` and ``cased`` are empty on
    the fast path, ``encoded`` is empty on the slow path.
    """
    encoded = fast_bytes(text, term)
    if encoded is not None:
        return fold_latin1(encoded), (), encoded, ""
    lower, starts = _slow_fold(text, keep_case=False)
    cased, cased_starts = _slow_fold(text, keep_case=True)
    if cased_starts != starts:  # a character whose case changes its length: compare lower-case
        cased = lower
    return lower, starts, b"", cased


def fold_for_match(text: str, term: bool = False) -> FoldedText:
    """Fold ``text`` for matching (see the module docstring); ``term``: a rule's term (see fast_bytes)."""
    return FoldedText(*fold_parts(text, term))


def term_words(text: str, case: bool = False) -> tuple[str, ...]:
    """The words of a rule term after normalisation.

    ``"Règlement sur l’IA"`` → ``("reglement", "sur", "l", "ia")``: elided
    particles are words of a phrase (the text has them too), but a leading one
    is dropped (``"l'IA"`` is the term ``ia``). A trailing ``*`` marks a prefix
    (``"régul*"`` → ``("regul*",)``). An empty tuple means the term
    normalises to nothing, which the rules loader rejects.
    """
    stripped = text.strip()
    prefix = stripped.endswith("*")
    folded = fold_for_match(stripped.rstrip("*"), term=True)
    words = (folded.cased_text() if case else folded.text).split()
    while words and words[0].lower() in ELISIONS and len(words) > 1:
        words.pop(0)
    if words and words[0].lower() in ELISIONS and len(words) == 1 and re.search(
            "[" + APOSTROPHES + "]", stripped):
        words = []  # "l'" alone
    if prefix and words:
        words[-1] += "*"
    return tuple(words)


def word_forms(word: str, in_phrase: bool = False) -> frozenset[str]:
    """The forms a normalised rule word stands for, with their ligature spellings.

    Number and gender, French and English, and the forms of French ``-er``
    verbs, as :func:`pipeline.classify.morphology.inflections` gives them:
    ``donnée`` finds ``données``, ``européen`` finds ``européennes``,
    ``publishers`` finds ``publisher``, ``entraîner`` finds ``entraîné``.
    Words of one or two letters are never inflected, and ``news`` never
    becomes ``new``. Ligature spellings (``œuvre``/``oeuvre``) are added too.
    """
    return frozenset(ligature_forms(set(inflections(word, in_phrase))))


def ligature_forms(forms: set[str]) -> set[str]:
    """Add the ligature spellings: ``oeuvre`` also as ``œuvre`` (and back)."""
    out = set(forms)
    for form in forms:
        for pair, single in _LIGATURES:
            if pair in form:
                out.add(form.replace(pair, single))
            if single in form:
                out.add(form.replace(single, pair))
    return out


def normalize(text: str) -> str:
    """The normalised words of a text, space-separated (for display, tests and docs).

    ``normalize("<p>L’AI-Act s’applique</p>")`` → ``"l ai act s applique"``:
    the text pass, then the fold. The engine matches rule words against exactly these words.
    """
    words = " ".join(fold_for_match(clean_text(text)).text.split())
    for pair, single in _LIGATURES:
        words = words.replace(single, pair)  # the one-character stand-ins, spelt out for reading
    return words
