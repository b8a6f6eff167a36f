"""Render stage: an Issue → email-safe HTML and 72-column plain text, in French.

Templates live in templates/ and are rendered by jinja2 with autoescaping, so feed text is
always escaped; links pass through `safe_url`, which lets only absolute http(s) URLs out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import css_inline
import jinja2
from babel.dates import format_date

from pipeline.models import Issue, RenderedIssue, Story, TopicInfo

TEXT_WIDTH = 72
DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def french_date(date: dt.date, weekday: bool = True, year: bool = False) -> str:
    """'mardi 6 mai', '1er mai 2025': the French way, with Babel's month and day names."""
    day = "1er" if date.day == 1 else str(date.day)
    words = []
    if weekday:
        words.append(format_date(date, "EEEE", locale="fr_FR"))
    words += [day, format_date(date, "MMMM", locale="fr_FR")]
    if year:
        words.append(str(date.year))
    return " ".join(words)


def safe_url(url: str | None) -> str:
    """The URL if it is an absolute http(s) URL with a host, else an empty string."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return ""
    if any(ch <= " " or ch in "\"'<>`" for ch in url):
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
        if not safe_url(url):
            return ""
        number = len(self.links) + 1
        self.links.append((number, safe_url(url)))
        return f" [{number}]"


def _story_paragraph(story: Story, section: _TextSection, lead: bool) -> str:
    sources = f"{story.source}{section.cite(story.url)}"
    others = ", ".join(f"{ref.source}{section.cite(ref.url)}" for ref in story.also_on)
    text = f"{story.kicker} {story.title}. {story.text}" if story.text else f"{story.kicker} {story.title}."
    text = text.replace("..", ".").replace("?.", "?").replace("!.", "!")
    paragraph = f"{text} Source : {sources}."
    if others:
        paragraph += f" Également sur : {others}."
    return paragraph


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


class Renderer:
    """Loads the templates once; renders issues and archive pages."""

    def __init__(self, templates_dir: Path = DEFAULT_TEMPLATES):
        self.templates_dir = Path(templates_dir)
        if not self.templates_dir.is_dir():
            raise FileNotFoundError(f"templates folder not found: {self.templates_dir}")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.templates_dir)),
            # Escape everything but plain-text templates: feed text is untrusted.
            autoescape=lambda name: name is None or not name.endswith(".txt.j2"),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters["safe_url"] = safe_url
        self.env.filters["french_date"] = french_date
        self.env.filters["wrap"] = wrap
        self._inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)

    @property
    def fingerprint(self) -> str:
        """sha256 over every template file: a changed template means issues need rebuilding."""
        digest = hashlib.sha256()
        for path in sorted(self.templates_dir.rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(self.templates_dir).as_posix().encode())
                digest.update(b"\0")
                digest.update(path.read_bytes())
        return digest.hexdigest()

    def render_page(self, template: str, inline_css: bool = False, **context: object) -> str:
        html = self.env.get_template(template).render(**context)
        return self._inliner.inline(html) if inline_css else html

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
        if not issue.menu:
            return f"{issue.newsletter.name} du {french_date(issue.date, year=True)}"
        return " · ".join(teaser.text for teaser in issue.menu)[:180]

    def render_text(self, issue: Issue, links: IssueLinks) -> str:
        sections: list[_TextSection] = []
        if issue.lead:
            lead = _TextSection("LE FAIT DU JOUR |")
            lead.paragraphs.append(_story_paragraph(issue.lead, lead, lead=True))
            sections.append(lead)
        for section in issue.sections:
            block = _TextSection(f"{section.heading} |")
            block.paragraphs.extend(_story_paragraph(s, block, lead=False) for s in section.stories)
            sections.append(block)
        agenda = _TextSection("ORDRE DU JOUR |")
        for entry in issue.agenda:
            agenda.paragraphs.append(
                f"— {french_date(entry.date, year=True)} : {entry.context} ({entry.source}{agenda.cite(entry.url)})"
            )
        further = _TextSection("RESTEZ BRANCHÉS |")
        for story in issue.further_reading:
            further.paragraphs.append(f"— {story.title}, rapporte {story.source}{further.cite(story.url)}.")
        if not issue.further_reading:
            archive_ref = further.cite(links.archive_url)
            further.paragraphs.append(f"— Tous les numéros précédents sont dans les archives{archive_ref}.")
        return self.env.get_template("issue.txt.j2").render(
            issue=issue, links=links, date_text=french_date(issue.date), sections=sections, agenda=agenda,
            further=further, width=TEXT_WIDTH,
        )
