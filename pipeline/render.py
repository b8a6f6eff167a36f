"""Render stage: an Issue → email-safe HTML and 72-column plain text, in French.

Templates live in templates/ and are rendered by jinja2 with autoescaping, so feed text is
always escaped; links pass through `safe_url`, which lets only absolute http(s) URLs out.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from pipeline.compose import french_characters
from pipeline.models import Issue, RenderedIssue, Story, TopicInfo
from pipeline.text import escape_invisible

# jinja2, css_inline and babel are imported when first used: a run with nothing to render needs
# only the templates' fingerprint, and those imports were a good part of its start-up.
if TYPE_CHECKING:
    import css_inline
    import jinja2

TEXT_WIDTH = 72
DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
NBSP = "\u00a0"

# Every colour of the issue's CSS (templates/_style.css.j2 reads them from here), so that the
# contrast of each text/background pair below can be checked (WCAG AA: ratio >= 4.5).
PALETTE: dict[str, str] = {
    "page_bg": "#f3f1ec", "card_bg": "#ffffff", "text": "#1f1f1f", "muted": "#4a4a4a",
    "accent": "#14213d", "link": "#0b5394", "rule": "#d9d9d9",
    "dark_page_bg": "#161616", "dark_card_bg": "#222222", "dark_text": "#e6e6e6", "dark_muted": "#c8c8c8",
    "dark_accent": "#a9c4ff", "dark_link": "#8ab4f8", "dark_rule": "#444444",
}
# (foreground, background) pairs where text is drawn, in light and in dark mode.
CONTRAST_PAIRS: tuple[tuple[str, str], ...] = (
    ("text", "card_bg"), ("muted", "card_bg"), ("accent", "card_bg"), ("link", "card_bg"),
    ("muted", "page_bg"), ("link", "page_bg"),
    ("dark_text", "dark_card_bg"), ("dark_muted", "dark_card_bg"), ("dark_accent", "dark_card_bg"),
    ("dark_link", "dark_card_bg"), ("dark_muted", "dark_page_bg"), ("dark_link", "dark_page_bg"),
)


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours (1 to 21)."""

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


_SPACE_BEFORE_RE = re.compile(r"(?<=\S)[ \u00a0\u202f]?([;:!?»])(?=\s|$|[.,)])")
_SPACE_AFTER_RE = re.compile(r"«[ \u00a0\u202f]?(?=\S)")
_PERCENT_RE = re.compile(r"(?<=\d)[ \u00a0\u202f]?(%|€)")


def french_spacing(text: str) -> str:
    """French typography, one rule everywhere: the characters of `compose.french_characters`
    (’, …, « »), then a non-breaking space before : ; ! ? » % € and after «, so no line of the
    text or of a narrow screen starts with a colon or a lone quote. A colon not followed by a
    space (URLs, "16:30") is left alone."""
    text = french_characters(text)
    text = _SPACE_BEFORE_RE.sub(lambda m: NBSP + m.group(1), text)
    text = _SPACE_AFTER_RE.sub("«" + NBSP, text)
    return _PERCENT_RE.sub(lambda m: NBSP + m.group(1), text)


# "de" + "Le Veilleur" is "du Veilleur": the article of a name merges with the preposition.
_CONTRACTIONS = {("de", "le"): "du", ("de", "les"): "des", ("à", "le"): "au", ("à", "les"): "aux"}
_VOWELS = frozenset("aeiouyàâäéèêëîïôöùûüœæAEIOUYÀÂÄÉÈÊËÎÏÔÖÙÛÜŒÆ")


def preposition(word: str, name: str) -> str:
    """"de" or "à" before a name, as French says it: "du Veilleur Numérique", "des Échos",
    "au Monde", "aux Échos", "d’Octet Hebdo", "de La Lettre", "à Régul’Info"."""
    first, _, rest = name.strip().partition(" ")
    contracted = _CONTRACTIONS.get((word, first.casefold()))
    if contracted and rest:
        return f"{contracted} {rest}"
    if word == "de" and name[:1] in _VOWELS:
        return f"d’{name.strip()}"
    return f"{word} {name.strip()}"


SUBJECT_CHARS = 120  # what mail clients show of a subject, about


def email_subject(issue: Issue) -> str:
    """The email's subject: "Tech Matin du mardi 6 mai — IA de Meta : l’intérêt légitime à
    l’épreuve…", the lead's AU MENU line in sentence case (never the kicker in capitals), with
    no final full stop, cut between words past SUBJECT_CHARS."""
    subject = f"{issue.newsletter.name} du {french_date(issue.date)}"
    if issue.menu:
        teaser = issue.menu[0]
        subject += f" — {teaser.theme} : {teaser.text}".rstrip(" .")
    else:
        subject += " — rien de neuf ce matin"
    if len(subject) > SUBJECT_CHARS:
        subject = subject[: subject.rfind(" ", 0, SUBJECT_CHARS - 1)].rstrip(" ,;:—") + "…"
    return french_spacing(subject)


def agenda_date(date: dt.date, issue_date: dt.date) -> str:
    """"Jeudi 22 mai" for this year's dates, "Dimanche 2 août 2026" for later years."""
    text = french_date(date, year=date.year != issue_date.year)
    return text[:1].upper() + text[1:]


def later_date(date: dt.date, issue_date: dt.date) -> str:
    """"2 août" this year, "2 août 2026" later, the dates of the "Plus loin" line, never cut by a
    line break."""
    return french_date(date, weekday=False, year=date.year != issue_date.year).replace(" ", NBSP)


@functools.lru_cache(maxsize=4096)  # Babel's formatting is slow and archive pages repeat dates
def french_date(date: dt.date, weekday: bool = True, year: bool = False) -> str:
    """'mardi 6 mai', '1er mai 2025': the French way, with Babel's month and day names."""
    from babel.dates import format_date

    day = "1er" if date.day == 1 else str(date.day)
    words = []
    if weekday:
        words.append(format_date(date, "EEEE", locale="fr_FR"))
    words += [day, format_date(date, "MMMM", locale="fr_FR")]
    if year:
        words.append(str(date.year))
    return " ".join(words)


_URL_REFUSED_RE = re.compile("[\x00-\x20\"'<>`]")


def safe_url(url: str | None) -> str:
    """The URL if it is an absolute http(s) URL with a host, else an empty string.

    Invisible characters (bidi overrides, zero-width, U+2028/U+2029…) are percent-encoded, so a
    link can never read reversed in `digest.txt` or an `href`; a host holding one is refused, and
    so are ASCII spaces, controls and quotes (an attribute break-out).
    """
    return _safe_url(url) if url else ""


@functools.lru_cache(maxsize=16384)  # a story's link is checked by its page, its text, the topic pages, the feed…
def _safe_url(url: str) -> str:
    if _URL_REFUSED_RE.search(url):
        return ""
    url = escape_invisible(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or "%" in parts.hostname:
        return ""
    return url


def wrap(text: str, width: int = TEXT_WIDTH, indent: str = "", first: str | None = None) -> str:
    """Wrap to `width` columns without breaking words or URLs (an overlong URL stands alone)."""
    return textwrap.fill(
        text, width=width, initial_indent=indent if first is None else first, subsequent_indent=indent,
        break_long_words=False, break_on_hyphens=False,
    )


@dataclass
class _TextSection:
    """A section of the plain-text digest: paragraphs citing [n], then the list of links."""

    heading: str
    paragraphs: list[str] = field(default_factory=list)
    links: list[tuple[int, str]] = field(default_factory=list)

    def cite(self, url: str | None) -> str:
        """" [n]" for `url`, numbered in the order of first citation; one number per URL."""
        url = safe_url(url)
        if not url:
            return ""
        for number, known in self.links:
            if known == url:
                return f" [{number}]"
        number = len(self.links) + 1
        self.links.append((number, url))
        return f" [{number}]"


def _story_paragraphs(story: Story, section: _TextSection) -> list[str]:
    """A story as text paragraphs: the kicker opens the first, the sources close the last."""
    sources = f"{story.source}{section.cite(story.url)}"
    others = ", ".join(f"{ref.source}{section.cite(ref.url)}" for ref in story.also_on)
    paragraphs = story_paragraphs(story)
    paragraphs[0] = f"{story.kicker} {paragraphs[0]}".strip()
    paragraphs[-1] += f" Source : {sources}."
    if others:
        paragraphs[-1] += f" Également sur : {others}."
    return [french_spacing(p) for p in paragraphs]


def story_paragraphs(story: Story) -> list[str]:
    """The paragraphs of a story's text (compose separates them with a blank line)."""
    return [p.strip() for p in story.text.split("\n\n") if p.strip()] or [""]


@dataclass(frozen=True)
class IssueLinks:
    """Where the archive puts an issue and its neighbours (relative to the issue page)."""

    web_url: str  # absolute URL of the issue page ("voir dans votre navigateur")
    archive_url: str  # absolute URL of the archive home
    text_href: str | None = "digest.txt"
    previous_href: str | None = None
    previous_label: str | None = None
    next_href: str | None = None
    next_label: str | None = None
    home_href: str | None = "../index.html"


def templates_fingerprint(templates_dir: Path) -> str:
    """sha256 over every template file: a changed template means issues need rebuilding."""
    digest = hashlib.sha256()
    for path in sorted(Path(templates_dir).rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(templates_dir).as_posix().encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=2)
def load_renderer(templates_dir: Path, fingerprint: str) -> Renderer:
    """A Renderer of `templates_dir` with the issue templates compiled and the CSS inliner made,
    kept per folder and fingerprint (an edited template is another key): what a render process
    uses (see render_issue_with). Made before the processes are forked, they start with it."""
    renderer = Renderer(templates_dir)
    for name in ("issue.html.j2", "issue.txt.j2"):
        renderer.env.get_template(name)
    renderer.inline_css("")
    return renderer


def render_issue_with(templates_dir: Path, fingerprint: str, issue: Issue, topics: Sequence[TopicInfo],
                      links: IssueLinks) -> RenderedIssue:
    """Renderer.render_issue, in a render process (see load_renderer)."""
    return load_renderer(templates_dir, fingerprint).render_issue(issue, topics, links)


def render_page_with(templates_dir: Path, fingerprint: str, template: str, context: dict[str, object]) -> str:
    """Renderer.render_page, in a render process (see load_renderer)."""
    return load_renderer(templates_dir, fingerprint).render_page(template, **cast(dict[str, Any], context))


class Renderer:
    """Loads the templates once; renders issues and archive pages."""

    def __init__(self, templates_dir: Path = DEFAULT_TEMPLATES):
        self.templates_dir = Path(templates_dir)
        if not self.templates_dir.is_dir():
            raise FileNotFoundError(f"templates folder not found: {self.templates_dir}")

    @functools.cached_property
    def env(self) -> jinja2.Environment:
        """The jinja2 environment, made on the first render (a build with nothing to render needs none)."""
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.templates_dir)),
            # Escape everything but plain-text templates: feed text is untrusted.
            autoescape=lambda name: name is None or not name.endswith(".txt.j2"),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,  # a Renderer serves one build: no stat of every template at every page
        )
        env.filters["safe_url"] = safe_url
        env.filters["french_date"] = french_date
        env.filters["wrap"] = wrap
        env.filters["fr"] = french_spacing
        env.filters["de"] = lambda name: preposition("de", name)
        env.filters["further_parts"] = further_parts
        env.filters["agenda_date"] = agenda_date
        env.filters["later_date"] = later_date
        env.filters["paragraphs"] = story_paragraphs
        # A global, so that every page including _style.css.j2 gets the palette.
        env.globals["palette"] = PALETTE
        return env

    @functools.cached_property
    def _inliner(self) -> css_inline.CSSInliner:
        import css_inline

        return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)

    @functools.cached_property
    def fingerprint(self) -> str:
        """See templates_fingerprint. Computed once per Renderer (one per run), not once per issue built."""
        return templates_fingerprint(self.templates_dir)

    def preload(self) -> None:
        """What the first renders would do first, done now: every template compiled, the CSS inliner
        made, Babel's French names loaded (a run does it while it waits for its feeds' answers)."""
        for name in self.env.list_templates(extensions=["j2"]):
            self.env.get_template(name)
        self._inliner  # noqa: B018  # made and kept
        french_date(dt.date(2000, 1, 1))

    def render_page(self, template: str, inline_css: bool = False, **context: object) -> str:
        html = self.env.get_template(template).render(**context)
        return self.inline_css(html) if inline_css else html

    def inline_css(self, html: str) -> str:
        """The page with its <style> rules copied into style attributes (email clients drop <style>)."""
        return self._inliner.inline(html)

    def render_issue(self, issue: Issue, topics: Sequence[TopicInfo], links: IssueLinks) -> RenderedIssue:
        themes = {t.id: t.theme for t in topics}
        headings = {t.id: t.heading for t in topics}
        html = self.render_page(
            "issue.html.j2", inline_css=True, issue=issue, links=links, themes=themes, headings=headings,
            date_text=french_date(issue.date), date_long=french_date(issue.date, year=True),
            preheader=self._preheader(issue),
        )
        text = self.render_text(issue, links)
        return RenderedIssue(date=issue.date, html=html, text=text)

    @staticmethod
    def _preheader(issue: Issue) -> str:
        """The line mail clients show after the subject: the menu, else the date."""
        if not issue.menu:
            return french_spacing(f"Rien de neuf ce matin sur nos sujets de veille · {french_date(issue.date)}")
        text = " · ".join(teaser.text.rstrip(".") for teaser in issue.menu)
        if len(text) > 180:
            # Cut between words: a half word in a preview looks like a bug.
            text = text[: text.rfind(" ", 0, 179)].rstrip(" ·,;:") + "…"
        return french_spacing(text)

    def render_text(self, issue: Issue, links: IssueLinks) -> str:
        sections: list[_TextSection] = []
        if issue.lead:
            lead = _TextSection("LE FAIT DU JOUR |")
            lead.paragraphs.extend(_story_paragraphs(issue.lead, lead))
            sections.append(lead)
        for section in issue.sections:
            # A heading is printed as configured in topics.yaml (readers' filters may match it).
            block = _TextSection(french_spacing(f"{section.heading} |"))
            for story in section.stories:
                block.paragraphs.extend(_story_paragraphs(story, block))
            sections.append(block)
        agenda = _TextSection("ORDRE DU JOUR |")
        for entry in issue.agenda:
            if not entry.later:
                context = entry.context.rstrip(" .")
                agenda.paragraphs.append(french_spacing(
                    f"— {agenda_date(entry.date, issue.date)}. {context} ({entry.source}{agenda.cite(entry.url)})."
                ))
        later = [f"{later_date(e.date, issue.date)}, {e.context.rstrip(' .')} ({e.source}{agenda.cite(e.url)})"
                 for e in issue.agenda if e.later]
        if later:
            agenda.paragraphs.append(french_spacing(f"— Plus loin : {' ; '.join(later)}."))
        further = _TextSection("RESTEZ BRANCHÉS |")
        for story in issue.further_reading:
            further.paragraphs.append(french_spacing(further_line(story, further.cite(story.url))))
        if not issue.further_reading:
            archive_ref = further.cite(links.archive_url)
            further.paragraphs.append(f"— Tous les numéros précédents sont dans les archives{archive_ref}.")
        return self.env.get_template("issue.txt.j2").render(
            issue=issue, links=links, date_text=french_date(issue.date), sections=sections, agenda=agenda,
            further=further, width=TEXT_WIDTH,
        )


def further_parts(story: Story) -> tuple[str, str]:
    """A RESTEZ BRANCHÉS line in two parts, the title (the link in HTML) and what follows it:
    "Titre" + ", rapporte Source." ("Titre ?" + " À lire chez Source." after a question or an
    exclamation, which a comma cannot follow)."""
    title = story.title.strip().rstrip(" .…")
    if title[-1:] in "?!":
        return title, f" À lire chez {story.source}"
    return title, f", rapporte {story.source}"


def further_line(story: Story, citation: str = "") -> str:
    """"— Titre, rapporte Source [n]." for the plain text."""
    title, tail = further_parts(story)
    return f"— {title}{tail}{citation}."
