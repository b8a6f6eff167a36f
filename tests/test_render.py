"""Render: French parts in order, escaping of feed text, safe links, 72-column text, determinism."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from html.parser import HTMLParser

import pytest

from pipeline.models import (
    AgendaEntry,
    Issue,
    MenuTeaser,
    NewsletterSettings,
    Section,
    SourceRef,
    Story,
    TopicInfo,
)
from pipeline.render import (
    CONTRAST_PAIRS,
    PALETTE,
    IssueLinks,
    Renderer,
    contrast_ratio,
    email_subject,
    french_date,
    french_spacing,
    preposition,
    safe_url,
)

TOPICS = (TopicInfo("meta_ai", "META ET L'IA", "Intelligence artificielle"),
          TopicInfo("rgpd", "DONNÉES PERSONNELLES", "Données personnelles"))
SETTINGS = NewsletterSettings(byline=("Camille Roux",), byline_with=("Idriss Benali", "Jeanne Morel"),
                              base_url="https://techmatin.example.org/")
LINKS = IssueLinks(web_url="https://techmatin.example.org/2025-05-06/", archive_url="https://techmatin.example.org/")


def story(identifier: str, title: str, text: str = "Un texte de résumé.", url: str | None = "https://a.example/x",
          topic: str = "rgpd", also_on: tuple[SourceRef, ...] = ()) -> Story:
    return Story(id=identifier, kicker=title.upper() + ".", title=title, text=text, url=url, source="Source A",
                 topics=(topic,), primary_topic=topic, score=1.0, item_ids=(identifier,), also_on=also_on)


def make_issue(**overrides: object) -> Issue:
    lead = story("l", "Meta entraîne son IA", topic="meta_ai",
                 also_on=(SourceRef("Source B", "https://b.example/y"), SourceRef("Source C", None)))
    base = dict(
        date=dt.date(2025, 5, 6), newsletter=SETTINGS,
        menu=(MenuTeaser("Intelligence artificielle", "Meta entraîne son IA", "l"),),
        lead=lead,
        sections=(Section("rgpd", "DONNÉES PERSONNELLES", (story("s1", "La CNIL sanctionne"),)),),
        agenda=(AgendaEntry(dt.date(2025, 5, 27), "Fin du délai d'opposition.", "Source A", "https://a.example/x"),),
        further_reading=(story("f1", "Une autre lecture"),),
    )
    base.update(overrides)
    return Issue(**base)  # type: ignore[arg-type]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Collect:
    collector = _Collect()
    collector.feed(html)
    return collector


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_french_dates() -> None:
    assert french_date(dt.date(2025, 5, 6)) == "mardi 6 mai"
    assert french_date(dt.date(2025, 5, 1), year=True) == "jeudi 1er mai 2025"
    assert french_date(dt.date(2024, 11, 18)) == "lundi 18 novembre"


def test_parts_are_in_order_in_html_and_text(renderer: Renderer) -> None:
    rendered = renderer.render_issue(make_issue(), TOPICS, LINKS)
    markers = ["Par CAMILLE ROUX", "Voir dans votre navigateur", "AU MENU |",
               "nous sommes le mardi 6 mai et vous lisez Tech Matin.", "LE FAIT DU JOUR |",
               "DONNÉES PERSONNELLES |", "ORDRE DU JOUR |", "RESTEZ BRANCHÉS |"]
    html_text = re.sub(r"\s+", " ", "".join(parse(rendered.html).text).replace("\u00a0", " "))
    for version in (html_text, re.sub(r"\s+", " ", rendered.text.replace("\u00a0", " "))):
        position = 0
        for marker in markers:
            found = version.upper().find(marker.upper(), position)
            assert found >= 0, f"{marker!r} missing or out of order"
            position = found
    assert 'lang="fr"' in rendered.html
    assert "Également sur : Source B, Source C" in html_text
    assert "Mardi 27 mai. Fin du délai d’opposition (Source A)." in html_text
    assert "— Une autre lecture, rapporte Source A." in html_text
    assert "MÉTA ENTRAÎNE SON IA. Un texte de résumé." not in html_text
    assert "META ENTRAÎNE SON IA. Un texte de résumé." in html_text


def test_text_is_72_columns_with_numbered_links(renderer: Renderer) -> None:
    long_text = "Une phrase de résumé assez longue pour devoir être coupée en plusieurs lignes. " * 6
    issue = make_issue(lead=story("l", "Meta entraîne son IA", text=long_text, topic="meta_ai"))
    text = renderer.render_issue(issue, TOPICS, LINKS).text
    too_wide = [line for line in text.splitlines() if len(line) > 72 and "http" not in line]
    assert not too_wide
    assert "[1] https://a.example/x" in text
    assert re.search(r"Source A \[1\]", text)


def test_feed_text_is_escaped_and_unsafe_links_dropped(renderer: Renderer) -> None:
    evil = story("e", '<script>alert(1)</script><img src=x onerror="alert(2)">', url="javascript:alert(3)",
                 text='"><iframe src="https://evil.example"></iframe>')
    issue = make_issue(lead=evil, sections=(), further_reading=(story("d", "x", url="data:text/html,boom"),))
    html = renderer.render_issue(issue, TOPICS, LINKS).html
    tags = parse(html).tags
    assert not [t for t, _ in tags if t in ("script", "iframe", "img", "object", "embed")]
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    hrefs = [attrs.get("href") or "" for tag, attrs in tags if tag == "a"]
    assert all(h.startswith(("https://", "http://", "../", "digest.txt", "index.html")) for h in hrefs), hrefs
    assert "&lt;SCRIPT&gt;" in html


def test_empty_issue_says_so(renderer: Renderer) -> None:
    issue = make_issue(menu=(), lead=None, sections=(), agenda=(), further_reading=())
    rendered = renderer.render_issue(issue, TOPICS, LINKS)
    assert "Aucun article" in rendered.text and "Aucun article" in rendered.html
    assert "RESTEZ BRANCHÉS |" in rendered.text


def test_rendering_is_deterministic(renderer: Renderer) -> None:
    first = renderer.render_issue(make_issue(), TOPICS, LINKS)
    second = Renderer().render_issue(make_issue(), TOPICS, LINKS)
    assert first == second


def test_email_html_is_one_600px_column_with_inlined_css(renderer: Renderer) -> None:
    html = renderer.render_issue(make_issue(), TOPICS, LINKS).html
    assert 'width="600"' in html and "max-width: 600px" in html
    assert 'style="' in html  # CSS inlined for mail clients
    assert "prefers-color-scheme: dark" in html  # dark mode kept in <style>
    assert 'class="preheader"' in html


@pytest.mark.parametrize(
    ("url", "ok"),
    [("https://a.example/x", True), ("http://a.example", True), ("javascript:alert(1)", False),
     ("//a.example", False), ("/relative", False), ("https://a.example/\"onmouseover=x", False), ("", False),
     ("http://[::1]:8000/49", True), ("https://pay\u202elapyap.example/", False)],
)
def test_safe_url(url: str, ok: bool) -> None:
    assert bool(safe_url(url)) is ok


def test_safe_url_percent_encodes_invisible_characters() -> None:
    assert safe_url("https://a.example/\u202elapyap\u200b\u2028\u2029\x85") == \
        "https://a.example/%E2%80%AElapyap%E2%80%8B%E2%80%A8%E2%80%A9%C2%85"
    assert safe_url("http://[::1]:8000/49") == "http://[::1]:8000/49"


def test_french_spacing_is_one_rule_everywhere() -> None:
    assert french_spacing("Source : X ; vraiment ? Oui ! « Bien » 7 % l'IA") == (
        "Source\u00a0: X\u00a0; vraiment\u00a0? Oui\u00a0! «\u00a0Bien\u00a0» 7\u00a0% l’IA")
    assert french_spacing("Data Act: la date") == "Data Act\u00a0: la date"
    assert french_spacing("https://a.example/x?y=1 à 16:30") == "https://a.example/x?y=1 à 16:30"


def test_text_lines_never_start_with_french_punctuation(renderer: Renderer) -> None:
    text = "Le mot : la définition ; une question ? « Une citation » et 20 % " * 12
    issue = make_issue(lead=story("l", "Meta entraîne son IA", text=text, topic="meta_ai"))
    rendered = renderer.render_issue(issue, TOPICS, LINKS).text
    starts = [line for line in rendered.splitlines() if line and line[0] in ":;?!»%"]
    assert not starts


def test_each_url_has_one_number_per_section(renderer: Renderer) -> None:
    lead = story("l", "Bureau de l’IA", url="https://a.example/same",
                 also_on=(SourceRef("Source B", "https://a.example/same"), SourceRef("Source C", "https://c.example/")))
    text = renderer.render_issue(make_issue(lead=lead), TOPICS, LINKS).text
    block = text[text.index("LE FAIT DU JOUR |"):text.index("DONNÉES PERSONNELLES |")]
    assert "Source A [1]. Également sur\u00a0: Source B [1], Source C [2]." in re.sub(r"[ \n]+", " ", block)
    assert re.findall(r"^\[\d\] .*$", block, re.M) == ["[1] https://a.example/same", "[2] https://c.example/"]


def test_further_reading_line_after_a_question(renderer: Renderer) -> None:
    issue = make_issue(further_reading=(story("q", "Faut-il craindre le RIA ?"),))
    rendered = renderer.render_issue(issue, TOPICS, LINKS)
    assert "— Faut-il craindre le RIA\u00a0? À lire chez Source A [1]." in rendered.text
    assert "?, rapporte" not in rendered.text and "?, rapporte" not in rendered.html


def test_agenda_dates_carry_a_year_only_when_it_is_not_the_issue_year(renderer: Renderer) -> None:
    agenda = (AgendaEntry(dt.date(2025, 8, 2), "Les obligations s’appliquent.", "Source A", None),
              AgendaEntry(dt.date(2026, 8, 2), "Le haut risque suit.", "Source B", None))
    text = renderer.render_issue(make_issue(agenda=agenda), TOPICS, LINKS).text
    assert "— Samedi 2 août. Les obligations s’appliquent (Source A)." in text
    assert "— Dimanche 2 août 2026. Le haut risque suit (Source B)." in text


@pytest.mark.parametrize(("foreground", "background"), CONTRAST_PAIRS)
def test_colour_pairs_meet_wcag_aa(foreground: str, background: str) -> None:
    ratio = contrast_ratio(PALETTE[foreground], PALETTE[background])
    assert ratio >= 4.5, f"{foreground} on {background}: {ratio:.2f}"


def test_contrast_ratio_matches_wcag_reference_values() -> None:
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the classic "just fails"


def test_every_colour_of_the_issue_css_comes_from_the_checked_palette(renderer: Renderer) -> None:
    html = renderer.render_issue(make_issue(), TOPICS, LINKS).html
    colours = set(re.findall(r"#[0-9a-fA-F]{6}\b", html))
    assert colours and colours <= set(PALETTE.values()), colours - set(PALETTE.values())
    checked = {c for pair in CONTRAST_PAIRS for c in pair}
    text_colours = {"text", "muted", "accent", "link", "dark_text", "dark_muted", "dark_accent", "dark_link"}
    assert text_colours <= checked


def test_email_html_keeps_a_style_block_for_dark_mode_and_narrow_screens(renderer: Renderer) -> None:
    html = renderer.render_issue(make_issue(), TOPICS, LINKS).html
    style = html[html.index("<style>"):html.index("</style>")]
    assert "prefers-color-scheme: dark" in style and "max-width: 620px" in style
    # Nothing external: no stylesheet, font or image to fetch (the icon is an empty data: URL, so
    # that a browser does not ask the archive's server for /favicon.ico either).
    assert re.findall(r"<link [^>]*>", html) == ['<link rel="icon" href="data:,">']
    assert "@import" not in html and "<img" not in html and "url(" not in html
    assert '<meta charset="utf-8">' in html
    assert re.search(r'<a href="https://techmatin.example.org/2025-05-06/"[^>]*>Voir dans votre navigateur</a>', html)
    anchors = re.findall(r"<a [^>]*>(.*?)</a>", html)
    assert all(a.strip() for a in anchors)  # every link has text
    assert not [a for a in anchors if a.strip().lower() in ("ici", "lien", "cliquez ici", "lire")]


@pytest.mark.parametrize(("word", "name", "said"), [
    ("de", "Le Veilleur Numérique", "du Veilleur Numérique"),
    ("de", "Les Échos", "des Échos"),
    ("à", "Le Monde", "au Monde"),
    ("à", "Les Échos", "aux Échos"),
    ("de", "Octet Hebdo", "d’Octet Hebdo"),
    ("de", "La Lettre des Données", "de La Lettre des Données"),
    ("de", "Régul'Info", "de Régul'Info"),
    ("de", "Tech Matin", "de Tech Matin"),
])
def test_preposition_before_a_name(word: str, name: str, said: str) -> None:
    assert preposition(word, name) == said


def test_french_characters() -> None:
    text = french_spacing('META ET L\'IA... les "moteurs de réponse" et “Llama”')
    assert text == "META ET L’IA… les «\u00a0moteurs de réponse\u00a0» et «\u00a0Llama\u00a0»"


def test_email_subject_is_the_leads_menu_line_in_sentence_case() -> None:
    issue = make_issue()
    subject = email_subject(issue)
    assert subject.startswith(f"Tech Matin du {french_date(issue.date)} — ")
    assert issue.menu[0].text.rstrip(".") in subject.replace("\u00a0", " ")
    assert not subject.endswith(".") and (issue.lead is None or issue.lead.kicker not in subject)
    long = dataclasses.replace(issue, menu=(dataclasses.replace(issue.menu[0], text="mot " * 60),))
    assert len(email_subject(long)) <= 120 and email_subject(long).endswith("…")
    empty = dataclasses.replace(issue, menu=(), lead=None, sections=(), further_reading=())
    assert email_subject(empty).endswith("rien de neuf ce matin")
