"""Text: the one pass that turns untrusted markup into plain text, and the accent fold.

Everything here works on strings and knows nothing about feeds, items or rules:

* :func:`clean_text` is the whole pass, run once per field (``parse`` calls it;
  ``classify`` and ``compose`` read its result): HTML to text, entities decoded
  (a second, escaped-twice layer too), invisible and control characters removed,
  whitespace collapsed, trailing boilerplate removed ("Lire la suite", "The post …
  appeared first on …", "[…]", share links), then cut to a length at a word.
* :func:`html_to_text` is its HTML part alone: lxml's HTML parser (libxml2, whose
  tokenizer follows HTML5) builds the tree; scripts, styles, embedded objects and
  share-link bars are dropped with their content; block elements keep the words on
  either side apart (``<p>AI</p><p>Act</p>`` is "AI Act", ``R<b>G</b>PD`` is "RGPD").
* :func:`fold` and :func:`strip_accents` are the accent fold the other stages share.
* :func:`escape_invisible` percent-encodes, in a URL, the characters that
  :func:`clean_text` removes from text (bidi overrides, zero-width and control
  characters, line and paragraph separators).

Every function runs in time linear in its input, whatever the input (``tests/test_linear_time.py``):
no regex here can backtrack over more than a bounded window or up to the next ``<``, and a
document nested deeper than libxml2 goes (256 levels: only a hostile one) is read flat.
"""

from __future__ import annotations

import html
import re
import unicodedata

import lxml.etree
import lxml.html

__all__ = [
    "BLOCK_ELEMENTS",
    "COMBINING_MARKS",
    "DROPPED_ELEMENTS",
    "SHARE_CLASSES",
    "SHARE_LINKS",
    "clean_text",
    "collapse_space",
    "cut",
    "escape_invisible",
    "fold",
    "html_to_text",
    "remove_boilerplate",
    "strip_accents",
    "tidy_text",
]

# Elements whose content is never shown to readers (code, styling, embedded objects, forms).
# <embed> is void in HTML but libxml2 lets it hold what follows, so it is not dropped here:
# it has no text of its own either way.
DROPPED_ELEMENTS = ("script", "style", "iframe", "object", "form", "svg", "noscript", "template", "head",
                    "title", "math", "button", "select", "textarea")
# Elements that separate words. Inline ones (<a>, <b>, <span>…) do not: "R<b>G</b>PD" is one word.
BLOCK_ELEMENTS = ("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
                  "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "img", "li", "main",
                  "nav", "ol", "p", "pre", "section", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul")

# A space before each block tag (opening or closing) in the markup keeps words apart; done on the
# string, before parsing, so the tree is never edited (lxml refuses some characters in edits).
_BLOCK_TAG_RE = re.compile(r"<(?=/?(?:" + "|".join(BLOCK_ELEMENTS) + r")[\s/>])", re.IGNORECASE)

# Any tag but those of dropped elements (for documents nested too deep, see html_to_text).
_NESTING_TAG_RE = re.compile(r"</?(?!(?:" + "|".join(DROPPED_ELEMENTS) + r")[\s/>])[A-Za-z][^<>]*>", re.IGNORECASE)

# Share-link bars and tracking links that feed generators append to an article's HTML: elements
# of these classes, and links to these addresses, are emptied.
SHARE_CLASSES = ("feedflare", "sharedaddy", "mf-viral", "addtoany", "share-buttons", "social-share")
SHARE_LINKS = ("feeds.feedburner.com/~ff/", "share.feedsportal.com/", "feedsportal.com/r/", "facebook.com/sharer",
               "twitter.com/share", "twitter.com/intent/", "linkedin.com/shareArticle", "addtoany.com/",
               "pinterest.com/pin/create")
_SHARE_MARKERS = SHARE_CLASSES + SHARE_LINKS
_SHARE_XPATH = lxml.etree.XPath(
    "//*[" + " or ".join(f"contains(@class, '{name}')" for name in SHARE_CLASSES) + "]"
    " | //a[" + " or ".join(f"contains(@href, '{link}')" for link in SHARE_LINKS) + "]"
)

# C0 controls but tab/newline/CR, and DEL: libxml2 refuses some of them, readers see none.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# Every invisible formatting character (Unicode category Cf; tests/test_text.py checks the list
# against unicodedata): bidi overrides and isolates, zero-width spaces and joiners, the soft
# hyphen, the byte order mark, tag characters. Written out so that no import scans Unicode.
_INVISIBLE_RE = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]+"
)
# What a URL must not carry raw: invisible characters, controls, spaces and line separators.
_URL_UNSAFE_RE = re.compile(
    _INVISIBLE_RE.pattern[:-2] + r"\s\x00-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
)

# An entity left after the HTML pass means the feed escaped its text twice ("&amp;eacute;").
# Only well-formed, semicolon-terminated references: "AT&T" and "R&D" stay as they are.
_ENTITY_RE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Tags that were escaped in the feed's HTML ("&lt;b&gt;") are markup too; bounded, so linear.
_STRAY_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9-]{0,30}(?:\s[^<>]{0,500})?/?>")
# A tag or an entity cut in half at the end of a truncated summary ("… fin <a href=", "… coupée
# &eac"), but not "prix < 5" nor the end of "R&D". Looked for in the last characters only.
_CUT_TAG_RE = re.compile(r"</?[A-Za-z!][^<>]*$")
_CUT_ENTITY_RE = re.compile(r"(?:(?<= )|^)&\w{0,10}$|&#[xX]?[0-9a-fA-F]{0,7}$")
_CUT_WINDOW = 600

# Boilerplate. "[…]" marks a cut anywhere; the rest are link labels and notices that close a
# summary, looked for in its last _TAIL characters only (so a long text costs nothing more).
_TAIL = 600
_ELLIPSIS_RE = re.compile(r"[\[(](?:…|\.\.\.)[\])]")
# Each with the words (lower case) one of which its match holds: the regex runs only where one is.
_TRAILING_RES = (
    (("appeared first on",), re.compile(r"\bThe post\b.{0,300}\bappeared first on\b.*$", re.S)),
    (("apparu en premier sur",), re.compile(r"\bL[’']article\b.{0,300}\best apparu en premier sur\b.*$", re.S)),
    # A link label closing a summary ("… fin de phrase. Lire la suite »"), only after a sentence:
    # "le Bureau pourra y voir plus clair." keeps its words.
    (("lire", "voir", "continuer", "en savoir", "continue", "read", "keep"),
     re.compile(r"(?:^|(?<=[.!?…»)])) ?(?:Lire la suite|Lire l[’']article|Voir l[’']article|Continuer (?:la|à) lire"
                r"|En savoir plus|Continue reading|Read more|Read the rest|Read full (?:article|story)|Keep reading)"
                r"\b[^.!?]{0,80}[.…»>→ ]*$")),
    (("partager", "share"),
     # Separators in one place only: a space that two parts could take would backtrack
     # exponentially over "Partager Facebook Facebook … !".
     re.compile(r"(?:^|(?<=[.!?…»)])) ?(?:Partager|Share)(?: (?:sur|on|this|cet article))?(?: ?:)?[ ,·|/-]*"
                r"(?:(?:Facebook|Twitter|X|LinkedIn|E-?mail|WhatsApp|Reddit|Tumblr|Pinterest|Mastodon|Bluesky"
                r"|Imprimer|Print)\b[ ,·|/-]*)*$", re.IGNORECASE)),
)

# Combining diacritical marks: what NFKD splits off "é" and "ç".
COMBINING_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def _parser() -> lxml.html.HTMLParser:
    # A parser per call: lxml parsers are not meant to be shared between threads, and making
    # one costs a few microseconds.
    return lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True,
                                default_doctype=False)


def _tree_text(data: bytes, share: bool) -> tuple[str, bool]:
    """The text of the parsed markup, and whether libxml2 stopped at its depth limit."""
    parser = _parser()
    try:
        root = lxml.etree.fromstring(data, parser)
    except lxml.etree.ParserError:  # nothing but whitespace, comments or dropped markup
        return "", False
    # libxml2 stops at the depth limit, so its error is the last one.
    last = parser.error_log.last_error
    too_deep = last is not None and last.type == lxml.etree.ErrorTypes.ERR_RESOURCE_LIMIT
    if root is None:
        return "", too_deep
    lxml.etree.strip_elements(root, *DROPPED_ELEMENTS, with_tail=False)
    if share:
        for element in _SHARE_XPATH(root):
            element.clear(keep_tail=True)
    return str(lxml.etree.tostring(root, method="text", encoding="unicode", with_tail=False)), too_deep


def html_to_text(markup: str) -> str:
    """The text of an HTML fragment or document: tags removed, entities decoded once.

    Whitespace is left as the markup has it (see :func:`collapse_space`). Text without
    ``<`` or ``&`` is returned as it is.
    """
    if "<" not in markup and "&" not in markup:
        return markup
    markup = _BLOCK_TAG_RE.sub(" <", _CONTROL_RE.sub(" ", markup))
    # An XPath search costs more than most fields' parsing: only where a share marker appears.
    share = any(marker in markup for marker in _SHARE_MARKERS)
    text, too_deep = _tree_text(markup.encode("utf-8", "replace"), share)
    if too_deep:
        # Nested deeper than libxml2 goes (256): only a hostile document does that. Its tags but
        # those of dropped elements are removed first (they carry no text), then it is parsed flat.
        text, _ = _tree_text(_NESTING_TAG_RE.sub("", markup).encode("utf-8", "replace"), share)
    return text


def collapse_space(text: str) -> str:
    """Invisible characters removed, every run of spaces, controls and separators one space, no
    space at either end."""
    text = " ".join(text.split())
    if text.isprintable():  # the usual case: one C-level check, no regex
        return text
    text = _INVISIBLE_RE.sub("", text)
    if not text.isprintable():  # controls, private-use or unassigned characters: rare
        text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())


def remove_boilerplate(text: str) -> str:
    """``text`` (with collapsed spaces) without feed boilerplate: "[…]" anywhere, and at the end
    link labels ("Lire la suite", "Continue reading"…), "The post … appeared first on …",
    "L'article … est apparu en premier sur …" and share links."""
    if "…" in text or "..." in text:
        without_marks, marks = _ELLIPSIS_RE.subn(" ", text)
        if marks:  # else the text is unchanged, and already collapsed
            text = " ".join(without_marks.split())
    start = max(0, len(text) - _TAIL)
    window = text[start:].lower()
    for words, pattern in _TRAILING_RES:
        if any(word in window for word in words):
            # Searched from `start` in the whole text: "^" is still only its real beginning, and a
            # look-behind sees the sentence before the window.
            found = pattern.search(text, start)
            if found:
                text = text[:found.start()].rstrip()
                start = min(start, len(text))
                window = text[start:].lower()
    return text


def cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters between words, ending with "…" when cut."""
    if len(text) <= limit:
        return text
    space = text.rfind(" ", 0, limit)
    return text[: space if space > limit // 2 else limit].rstrip() + "…"


def clean_text(value: str | None, limit: int | None = None) -> str:
    """The whole text pass: markup or plain text → one line of plain text fit to print and to
    classify (see the module docstring), cut to ``limit`` characters if given."""
    return tidy_text(html_to_text(value), limit) if value else ""


def tidy_text(text: str, limit: int | None = None) -> str:
    """What :func:`clean_text` does after :func:`html_to_text`: entities of a second, escaped-twice
    layer decoded and tags of it removed, invisible characters removed, spaces collapsed, trailing
    boilerplate removed, cut to ``limit``."""
    text = collapse_space(text)
    if "&" in text or "<" in text:  # else nothing below changes it, and it is already collapsed
        if "&" in text:
            text = _ENTITY_RE.sub(lambda m: html.unescape(m.group(0)), text)
        if "<" in text:
            text = _STRAY_TAG_RE.sub(" ", text)
        head, tail = text[:-_CUT_WINDOW], text[-_CUT_WINDOW:]
        if "<" in tail:
            tail = _CUT_TAG_RE.sub("", tail)
        if "&" in tail[-12:]:
            tail = _CUT_ENTITY_RE.sub("", tail)
        text = collapse_space(head + tail)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = remove_boilerplate(text)
    return cut(text, limit) if limit is not None else text


def strip_accents(text: str) -> str:
    """``text`` in compatibility form without combining marks, case kept: "Œuvre ﬁnale à" → "Œuvre finale a"."""
    return COMBINING_MARKS.sub("", unicodedata.normalize("NFKD", text))


def fold(text: str) -> str:
    """Lower case without accents, for comparing texts: "Règlement" → "reglement"."""
    return strip_accents(text.casefold())


def escape_invisible(url: str) -> str:
    """``url`` with its invisible, control and space characters percent-encoded (UTF-8), so that none
    reaches a reader raw: a bidi override cannot reverse how an address reads."""
    return _URL_UNSAFE_RE.sub(lambda m: "".join(f"%{byte:02X}" for byte in m.group(0).encode("utf-8")), url)

