"""The archive site (index, topic pages, Atom feed, search page and index), atomic writes,
full-text search in the store, and `pipeline archive` / `pipeline serve` as a user runs them."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree

import feedparser
import pytest

from pipeline.archive import FEED_ENTRIES, MANIFEST_NAME, Archive, ArchiveEntry, atomic_write
from pipeline.errors import PipelineError
from pipeline.models import Issue, MenuTeaser, NewsletterSettings, RenderedIssue, Section, Story, TopicInfo
from pipeline.render import DEFAULT_TEMPLATES, Renderer
from pipeline.serve import make_server
from pipeline.store import Store, StoredIssue, StoreTarget, issue_stories, issue_to_json, open_store
from pipeline.store.sqlite.schema import MIGRATIONS
from tests.helpers import call_cli

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"
BASE = "https://lettre.example.org/archives/"
SETTINGS = NewsletterSettings(base_url=BASE)
TOPICS = (
    TopicInfo("meta_ai", "META ET L'IA", "Intelligence artificielle"),
    TopicInfo("rgpd", "DONNÉES PERSONNELLES", "Données personnelles"),
    TopicInfo("ai_act", "DU CÔTÉ DE BRUXELLES", "Régulation de l'IA"),
)


def story(sid: str, title: str, topics: tuple[str, ...], text: str = "Un texte.", url: str | None = None) -> Story:
    return Story(id=sid, kicker=title.upper()[:20] + ".", title=title, text=text,
                 url=url if url is not None else f"https://presse.example/{sid}", source="Le Veilleur",
                 topics=topics, primary_topic=topics[0], score=3.0, item_ids=(f"item-{sid}",))


def issue(date: dt.date, *stories: Story) -> Issue:
    sections = tuple(
        Section(topic=t.id, heading=t.heading, stories=tuple(s for s in stories[1:] if s.primary_topic == t.id))
        for t in TOPICS if any(s.primary_topic == t.id for s in stories[1:])
    )
    menu = tuple(MenuTeaser(theme="RGPD", text=s.title, story_id=s.id) for s in stories[:3])
    return Issue(date=date, newsletter=SETTINGS, menu=menu, lead=stories[0] if stories else None,
                 sections=sections, agenda=(), further_reading=())


def site(tmp_path: Path, issues: list[Issue], topics: tuple[TopicInfo, ...] = TOPICS) -> tuple[Archive, Path]:
    out = tmp_path / "out"
    archive = Archive(out, Renderer(), BASE, "Tech Matin")
    archive.write_site([ArchiveEntry(issue=i) for i in issues], topics)
    return archive, out


SPRING = [
    issue(dt.date(2025, 4, 29), story("a1", "La CNIL sanctionne un courtier en données", ("rgpd",))),
    issue(dt.date(2025, 5, 5), story("b1", "Llama 4 : Meta entraîne ses modèles en Europe", ("meta_ai", "rgpd")),
          story("b2", "Le règlement sur l’IA entre dans sa deuxième phase", ("ai_act",))),
    issue(dt.date(2025, 5, 6), story("c1", "AI Act : le code de bonnes pratiques publié", ("ai_act",)),
          story("c2", "Intérêt légitime : l’avis du CEPD", ("rgpd",))),
]


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_skips_identical_content_and_keeps_the_file(tmp_path: Path) -> None:
    page = tmp_path / "a" / "page.html"
    assert atomic_write(page, "<p>un</p>") is True
    before = page.stat()
    assert atomic_write(page, "<p>un</p>") is False
    assert (page.stat().st_mtime_ns, page.stat().st_ino) == (before.st_mtime_ns, before.st_ino)
    assert atomic_write(page, "<p>deux</p>") is True
    assert page.read_text() == "<p>deux</p>" and page.stat().st_ino != before.st_ino  # renamed over
    assert sorted(p.name for p in page.parent.iterdir()) == ["page.html"]


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "page.html"
    page.write_text("ancien")

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", broken)
    with pytest.raises(PipelineError, match=r"page\.html: cannot write: No space left on device"):
        atomic_write(page, "nouveau")
    assert page.read_text() == "ancien"
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_pages_written_by_threads_are_those_written_in_turn(tmp_path: Path) -> None:
    """parallel_writes: the same files, the same `written` list (in the order asked), the same
    manifest as one write after the other; a page asked for twice ends with the last bytes."""
    pages = [RenderedIssue(date=dt.date(2025, 1, 1) + dt.timedelta(days=n), html=f"<p>{n}</p>" * (n + 1),
                           text=f"numéro {n}\n") for n in range(40)]
    again = dataclasses.replace(pages[3], html="<p>la dernière version</p>")
    folders: dict[int, Path] = {}
    lists: dict[int, list[str]] = {}
    for threads in (1, 8):
        out = tmp_path / f"out-{threads}"
        archive = Archive(out, Renderer(), BASE, "Tech Matin")
        if threads == 1:
            for page in [*pages, again, pages[5]]:
                archive.write_issue(page)
        else:
            with archive.parallel_writes(threads):
                for page in [*pages, again, pages[5]]:
                    archive.write_issue(page)
        archive.write_site([ArchiveEntry(issue=i) for i in SPRING], TOPICS)
        folders[threads] = out
        lists[threads] = [p.relative_to(out).as_posix() for p in archive.written]
    assert tree(folders[8]) == tree(folders[1])
    assert lists[8] == lists[1]
    assert lists[8].count("2025-01-06/index.html") == 1  # asked for again, unchanged: not rewritten
    assert lists[8].count("2025-01-04/index.html") == 2
    assert (folders[8] / "2025-01-04" / "index.html").read_text(encoding="utf-8") == again.html


def test_a_failed_write_among_threads_fails_the_build_with_its_own_reason(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def full_disk(src: str, dst: str) -> None:
        if str(dst).endswith("2025-01-03/index.html"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr("os.replace", full_disk)
    archive = Archive(tmp_path / "out", Renderer(), BASE, "Tech Matin")
    failure = r"2025-01-03/index\.html: cannot write: No space left on device"
    with pytest.raises(PipelineError, match=failure), archive.parallel_writes(4):
        for n in range(20):
            archive.write_issue(RenderedIssue(date=dt.date(2025, 1, 1) + dt.timedelta(days=n), html="<p></p>",
                                              text="texte\n"))
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_a_page_being_written_has_no_name_until_it_is_complete(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGKILL at any moment of the write leaves no partial file: while the bytes go to disk the
    new file has no name in the folder (O_TMPFILE), so nothing but the old page is there."""
    if not hasattr(os, "O_TMPFILE"):
        pytest.skip("no O_TMPFILE on this system")
    page = tmp_path / "page.html"
    page.write_text("ancien")
    seen: list[list[str]] = []
    real_fsync = os.fsync

    def watching(descriptor: int) -> None:
        seen.append(sorted(os.listdir(tmp_path)))
        real_fsync(descriptor)

    monkeypatch.setattr("os.fsync", watching)
    assert atomic_write(page, "nouveau") is True
    assert seen == [["page.html"]]
    assert page.read_text() == "nouveau" and os.listdir(tmp_path) == ["page.html"]


# ---------------------------------------------------------------- the listing pages


def test_index_lists_issues_by_month_newest_first_with_teasers_and_counts(tmp_path: Path) -> None:
    _, out = site(tmp_path, SPRING)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.index("mai 2025") < page.index("avril 2025")
    assert page.index("Mardi 6 mai 2025") < page.index("Lundi 5 mai 2025") < page.index("Mardi 29 avril 2025")
    assert "RGPD\u00a0: Llama 4\u00a0: Meta entraîne ses modèles en Europe" in page  # a teaser, in French typography
    # Stories per topic, a story counting under each of its topics; links to the topic pages.
    may5 = page[page.index("Lundi 5 mai 2025"):page.index("Mardi 29 avril 2025")]
    assert '<a href="topics/meta_ai.html">Intelligence artificielle</a>&nbsp;: 1' in may5
    assert '<a href="topics/rgpd.html">Données personnelles</a>&nbsp;: 1' in may5
    assert '<a href="topics/ai_act.html">Régulation de l’IA</a>&nbsp;: 1' in may5
    assert 'href="search.html"' in page and 'href="feed.xml"' in page
    assert "<script" not in page


def test_topic_page_lists_every_story_of_the_topic_newest_first(tmp_path: Path) -> None:
    _, out = site(tmp_path, SPRING)
    page = (out / "topics" / "rgpd.html").read_text(encoding="utf-8")
    titles = re.findall(r'<a href="https://presse.example/(\w+)">', page)
    assert titles == ["c2", "b1", "a1"]
    assert 'dans le numéro du <a href="../2025-05-06/index.html">mardi 6 mai 2025</a>' in page
    ai_act = (out / "topics" / "ai_act.html").read_text(encoding="utf-8")
    assert re.findall(r'<a href="https://presse.example/(\w+)">', ai_act) == ["c1", "b2"]
    assert "<script" not in page


def test_feed_text_is_escaped_and_only_http_links_come_out(tmp_path: Path) -> None:
    evil = story("x1", '<script>alert("t")</script><img src=x onerror=alert(1)>', ("rgpd",),
                 text="<b>gras</b> & co", url="javascript:alert(1)")
    _, out = site(tmp_path, [issue(dt.date(2025, 5, 7), evil)])
    for name in ("index.html", "topics/rgpd.html"):
        page = (out / name).read_text(encoding="utf-8")
        assert "<script>" not in page and "<img" not in page and "javascript:" not in page
        assert "&lt;script&gt;" in page
    index = json.loads((out / "search-index.json").read_text(encoding="utf-8"))
    (record,) = index["stories"]
    assert record["url"] == "" and record["title"].startswith("<script>")  # data, inserted as text
    feed = feedparser.parse((out / "feed.xml").read_bytes())
    assert not feed.bozo
    assert "javascript:" not in (out / "feed.xml").read_text(encoding="utf-8")


def test_search_page_is_the_only_page_with_a_script_and_allows_only_that_script(tmp_path: Path) -> None:
    _, out = site(tmp_path, SPRING)
    page = (out / "search.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1 and page.count("<script") == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode("utf-8")).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page
    assert "innerHTML" not in scripts[0] and "textContent" in scripts[0]
    assert 'normalize("NFD")' in scripts[0] and "search-index.json" in scripts[0]
    assert "http://" not in scripts[0] and "https://" not in scripts[0]  # nothing loaded from elsewhere
    assert "<script src" not in page
    for html in out.rglob("*.html"):
        if html.name != "search.html":
            assert "<script" not in html.read_text(encoding="utf-8"), html


def test_search_index_holds_every_story_with_its_issue(tmp_path: Path) -> None:
    _, out = site(tmp_path, SPRING)
    index = json.loads((out / "search-index.json").read_text(encoding="utf-8"))
    rows = [(s["date"], s["title"], s["issue"]) for s in index["stories"]]
    assert [r[0] for r in rows] == ["2025-05-06", "2025-05-06", "2025-05-05", "2025-05-05", "2025-04-29"]
    assert all(issue_href == f"{date}/index.html" for date, _, issue_href in rows)
    (b2,) = [s for s in index["stories"] if s["title"].startswith("Le règlement")]
    assert b2["topics"] == ["Régulation de l'IA"] and b2["url"] == "https://presse.example/b2"


def test_atom_feed_parses_back_with_stable_ids_dates_and_links(tmp_path: Path) -> None:
    _, out = site(tmp_path, SPRING)
    data = (out / "feed.xml").read_bytes()
    feed = feedparser.parse(data)
    assert not feed.bozo, feed.bozo_exception
    assert feed.feed.title == "Tech Matin" and feed.feed.id == BASE
    assert [e.id for e in feed.entries] == [f"{BASE}2025-05-06/", f"{BASE}2025-05-05/", f"{BASE}2025-04-29/"]
    first = feed.entries[0]
    assert first.link == f"{BASE}2025-05-06/"
    assert first.title == "Tech Matin du mardi 6 mai 2025"
    # 06:00 in Paris (summer time) is 04:00 UTC: the issue's date, never the wall clock.
    assert first.updated_parsed[:5] == (2025, 5, 6, 4, 0)
    assert feed.feed.updated_parsed[:5] == (2025, 5, 6, 4, 0)
    assert any(link.type == "text/plain" and link.href == f"{BASE}2025-05-06/digest.txt" for link in first.links)
    # Deterministic: rendering again gives the same bytes.
    again, _ = site(tmp_path, SPRING)
    assert again.written == [] and (out / "feed.xml").read_bytes() == data


ATOM = "{http://www.w3.org/2005/Atom}"


def test_atom_feed_is_valid_atom_with_escaped_text_and_only_http_links(tmp_path: Path) -> None:
    evil = story("x1", 'Alerte\x0b <script>alert(1)</script>\ufffe "citée" & co', ("rgpd",),
                 url="javascript:alert(1)")
    fine = story("x2", "Le CEPD publie ses lignes directrices", ("rgpd",))
    _, out = site(tmp_path, [issue(dt.date(2025, 5, 7), evil, fine), *SPRING])
    data = (out / "feed.xml").read_bytes()
    root = ElementTree.fromstring(data)  # well-formed XML despite the control characters of the title
    assert root.tag == f"{ATOM}feed"
    # RFC 4287: exactly one id, title and updated per feed and per entry; an author for the feed.
    for node in (root, *root.findall(f"{ATOM}entry")):
        for required in ("id", "title", "updated"):
            assert len(node.findall(f"{ATOM}{required}")) == 1, (node.tag, required)
    assert root.find(f"{ATOM}author/{ATOM}name") is not None
    assert len(root.findall(f"{ATOM}entry")) == 4
    hrefs = [link.get("href", "") for link in root.iter(f"{ATOM}link")]
    content = "".join(node.text or "" for node in root.iter(f"{ATOM}content"))
    parser = Links()
    parser.feed(content)
    assert parser.links and all(h.startswith(("http://", "https://")) for h in hrefs + parser.links)
    # Feed text is text: the HTML content carries the title escaped, never as markup.
    assert "<script" not in content and "&lt;script&gt;alert(1)&lt;/script&gt;" in content
    assert "javascript:" not in data.decode("utf-8") and "\x0b" not in data.decode("utf-8")
    assert not feedparser.parse(data).bozo


def test_atom_feed_of_an_empty_archive_is_valid_and_stable(tmp_path: Path) -> None:
    _, out = site(tmp_path, [])
    data = (out / "feed.xml").read_bytes()
    feed = feedparser.parse(data)
    assert not feed.bozo and feed.entries == []
    assert feed.feed.updated_parsed[:3] == (1970, 1, 1)  # never the wall clock
    again, _ = site(tmp_path, [])
    assert again.written == [] and (out / "feed.xml").read_bytes() == data


def test_atom_feed_keeps_the_latest_issues(tmp_path: Path) -> None:
    issues = [issue(dt.date(2025, 1, 1) + dt.timedelta(days=n), story(f"s{n}", f"Numéro {n}", ("rgpd",)))
              for n in range(FEED_ENTRIES + 5)]
    _, out = site(tmp_path, issues)
    feed = feedparser.parse((out / "feed.xml").read_bytes())
    assert len(feed.entries) == FEED_ENTRIES
    assert feed.entries[0].id == f"{BASE}{issues[-1].date.isoformat()}/"


def test_unchanged_listing_pages_are_not_rewritten_and_dropped_topics_leave_no_page(tmp_path: Path) -> None:
    archive, out = site(tmp_path, SPRING)
    assert {p.relative_to(out).as_posix() for p in archive.written} == {
        "index.html", "topics/meta_ai.html", "topics/rgpd.html", "topics/ai_act.html", "feed.xml",
        "search-index.json", "search.html"}
    again, _ = site(tmp_path, SPRING)
    assert again.written == []
    fewer, _ = site(tmp_path, SPRING, topics=TOPICS[:2])
    assert [p.name for p in fewer.removed] == ["ai_act.html"]
    assert not (out / "topics" / "ai_act.html").exists()


# ---------------------------------------------------------------- the output folder's guard


def build_demo(out: Path, root: Path, date: str = "2025-05-06") -> tuple[int, str]:
    code, _, err = call_cli("run", "--config", DEMO, "--date", date, "--db", root / "db.sqlite3", "--output", out)
    return code, err


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("through_a_link", [False, True])
def test_a_folder_holding_someone_elses_files_is_refused_and_left_alone(tmp_path: Path, through_a_link: bool) -> None:
    notes = tmp_path / "notes"
    (notes / "topics").mkdir(parents=True)
    (notes / "index.html").write_text("<p>mes notes</p>", encoding="utf-8")
    (notes / "topics" / "my-notes.html").write_text("<p>à garder</p>", encoding="utf-8")
    before = tree(notes)
    target = notes
    if through_a_link:
        target = tmp_path / "output-link"
        target.symlink_to(notes)
    code, err = build_demo(target, tmp_path)
    assert code == 2 and err.count("\n") == 1, err
    assert str(target) in err and "not an archive" in err and ".tech-matin-archive.json" in err
    assert tree(notes) == before


def test_the_archive_deletes_only_files_it_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert build_demo(out, tmp_path)[0] == 0
    manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["format"] == "tech-matin-archive"
    assert set(manifest["files"]) == {p for p in tree(out) if p != MANIFEST_NAME}
    # Someone's page among the topic pages, and a topic dropped from the rules: the archive's own
    # page of that topic goes, someone's page stays.
    (out / "topics" / "my-notes.html").write_text("<p>à garder</p>", encoding="utf-8")
    archive = Archive(out, Renderer(), BASE, "Tech Matin")
    archive.write_site([ArchiveEntry(issue=i) for i in SPRING], TOPICS[:2])
    assert sorted(p.name for p in archive.removed) == ["ai_act.html", "media_partnership.html"]
    assert sorted(p.name for p in (out / "topics").iterdir()) == ["meta_ai.html", "my-notes.html", "rgpd.html"]
    assert "topics/ai_act.html" not in json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]


def test_removing_an_issue_deletes_its_pages_but_nothing_of_someone_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert build_demo(out, tmp_path)[0] == 0
    assert build_demo(out, tmp_path, "2025-05-07")[0] == 0
    (out / "2025-05-07" / "notes.txt").write_text("à moi", encoding="utf-8")
    archive = Archive(out, Renderer(), BASE, "Tech Matin")
    archive.remove_issue(dt.date(2025, 5, 6))
    archive.remove_issue(dt.date(2025, 5, 7))
    assert not (out / "2025-05-06").exists()
    assert sorted(p.name for p in (out / "2025-05-07").iterdir()) == ["notes.txt"]
    files = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
    assert not [name for name in files if name.startswith("2025-05-0")]


@pytest.mark.parametrize("after_the_old_make_clean", [False, True])
def test_an_archive_built_before_the_manifest_is_adopted(tmp_path: Path, after_the_old_make_clean: bool) -> None:
    out = tmp_path / "out"
    assert build_demo(out, tmp_path)[0] == 0
    (out / MANIFEST_NAME).unlink()  # what an earlier version left
    if after_the_old_make_clean:  # `rm -rf output/*-*-* output/index.html`
        shutil.rmtree(out / "2025-05-06")
        (out / "index.html").unlink()
    old = tree(out)
    code, err = build_demo(out, tmp_path, "2025-05-07")
    assert code == 0, err
    assert (out / MANIFEST_NAME).is_file() and (out / "2025-05-07" / "index.html").is_file()
    assert all(name in tree(out) for name in old)


FOREIGN_PATH = b'{"format": "tech-matin-archive", "files": {"../x": "0"}}'


@pytest.mark.parametrize(("content", "accepted"), [(b"", True), (b"{}", False), (b"[1, 2]", False),
                                                   (FOREIGN_PATH, False)])
def test_the_manifest_is_read_strictly_and_an_empty_one_adopts_a_folder(tmp_path: Path, content: bytes,
                                                                        accepted: bool) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("à moi", encoding="utf-8")
    (out / MANIFEST_NAME).write_bytes(content)
    code, err = build_demo(out, tmp_path)
    if accepted:
        assert code == 0, err
        assert (out / "mine.txt").read_text(encoding="utf-8") == "à moi"
        assert "mine.txt" not in json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
    else:
        assert code == 2 and err.count("\n") == 1 and "not a manifest of this archive" in err, err
        assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "mine.txt"]


def test_an_empty_folder_or_one_with_a_placeholder_is_the_archives(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".gitkeep").touch()
    assert build_demo(out, tmp_path)[0] == 0
    assert (out / MANIFEST_NAME).is_file() and (out / ".gitkeep").is_file()


def test_listing_pages_are_rendered_again_only_when_their_inputs_change(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, out = site(tmp_path, SPRING)
    rendered: list[str] = []
    real_render = Renderer.render_page

    def counting(self: Renderer, template: str, inline_css: bool = False, **context: object) -> str:
        rendered.append(template)
        return real_render(self, template, inline_css, **context)

    monkeypatch.setattr(Renderer, "render_page", counting)
    site(tmp_path, SPRING)
    assert rendered == []  # nothing changed: nothing rendered, nothing written
    (out / "feed.xml").write_text("altéré", encoding="utf-8")  # a page altered on disk is put back
    again, _ = site(tmp_path, SPRING)
    assert [p.name for p in again.written] == ["feed.xml"] and rendered
    rendered.clear()
    more, _ = site(tmp_path, [*SPRING, issue(dt.date(2025, 5, 7), story("d1", "Nouveau", ("rgpd",)))])
    assert "index.html.j2" in rendered and "topic.html.j2" in rendered
    assert {p.name for p in more.written} >= {"index.html", "rgpd.html", "feed.xml", "search-index.json"}
    assert "meta_ai.html" not in {p.name for p in more.written}  # same bytes: not rewritten


def test_stored_issues_are_decoded_only_when_a_listing_page_is_rendered(tmp_path: Path) -> None:
    decoded: list[str] = []
    by_text = {issue_to_json(i): i for i in SPRING}

    def load(text: str) -> Issue:
        decoded.append(text)
        return by_text[text]

    def publish() -> Archive:
        archive = Archive(tmp_path / "out", Renderer(), BASE, "Tech Matin")
        archive.write_site([ArchiveEntry.stored(i.date, t, load) for t, i in by_text.items()], TOPICS)
        return archive

    first = publish()
    assert len(decoded) == len(SPRING) and "index.html" in {p.name for p in first.written}
    decoded.clear()
    assert publish().written == [] and decoded == []  # same stored issues: nothing decoded, nothing rendered


# ---------------------------------------------------------------- search in the store


def save(store: Store, one: Issue) -> None:
    stories = one.stories()
    store.save_issue(
        StoredIssue(date=one.date, built_at=dt.datetime(2025, 5, 7, tzinfo=dt.UTC), rules_fingerprint="r",
                    templates_fingerprint="t", html_sha256="h", text_sha256="x", story_count=len(stories),
                    issue_json=issue_to_json(one)),
        issue_stories(one), [i for s in stories for i in s.item_ids],
    )


def test_store_search_folds_accents_ranks_and_snippets(store_target: StoreTarget) -> None:
    with open_store(store_target) as store:  # the same queries and answers on each backend
        for one in SPRING:
            save(store, one)
        hits = store.search_stories("reglement")
        assert [h.story_id for h in hits] == ["b2"]
        assert hits[0].date == dt.date(2025, 5, 5) and "[règlement]" in hits[0].snippet
        # A title hit outranks a text-only hit.
        save(store, issue(dt.date(2025, 5, 7), story("d1", "Rien à voir", ("rgpd",),
                                                     text="Un mot sur le Règlement, en passant.")))
        assert [h.story_id for h in store.search_stories("RÈGLEMENT")] == ["b2", "d1"]
        assert [h.story_id for h in store.search_stories("interet legitime")] == ["c2"]
        assert [h.story_id for h in store.search_stories('"code de bonnes pratiques"')] == ["c1"]
        assert [h.story_id for h in store.search_stories("regle*")] == ["b2", "d1"]
        assert [h.story_id for h in store.search_stories("llama", topic="ai_act")] == []
        assert [h.story_id for h in store.search_stories("llama", topic="rgpd")] == ["b1"]
        assert store.search_stories("l'IA AND OR NOT (") is not None  # punctuation is never syntax
        with pytest.raises(PipelineError, match="no word to look for"):
            store.search_stories("« » !")


def test_a_search_query_is_bounded_and_a_repeated_word_counts_once(store_target: StoreTarget) -> None:
    from pipeline.store.query import MAX_QUERY_CHARACTERS, MAX_QUERY_WORDS

    with open_store(store_target) as store:
        for one in SPRING:
            save(store, one)
        # issue 16: 5,000 words took 8.6 s; the same word (any case) 90 times is one word
        assert [h.story_id for h in store.search_stories("reglement REGLEMENT " * 45)] == ["b2"]
        assert [h.story_id for h in store.search_stories("regle* " * 100)] == ["b2"]
        words = [f"mot{n}" for n in range(MAX_QUERY_WORDS)]
        assert store.search_stories(" ".join(words)) == []  # 32 words: asked, nothing has them all
        with pytest.raises(PipelineError, match=f"search query of 33 words; at most {MAX_QUERY_WORDS} "):
            store.search_stories(" ".join([*words, "mot32"]))
        with pytest.raises(PipelineError, match=f"search query of 33 words; at most {MAX_QUERY_WORDS} "):
            store.search_stories('"' + " ".join([*words, "mot32"]) + '"')  # a phrase's words count too
        with pytest.raises(PipelineError, match=f"search query of 5,000 characters; at most "
                                                f"{MAX_QUERY_CHARACTERS:,}$"):
            store.search_stories("m* " * 1666 + "xy")


def test_archive_search_refuses_a_long_query_with_one_line(tmp_path: Path, cli) -> None:
    db = tmp_path / "db.sqlite3"
    with open_store(StoreTarget(db)) as store:
        for one in SPRING:
            save(store, one)
    result = cli("archive", "search", *(["reglement", "m*", "llama", "x"] * 5000), "--db", db)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "search query of 104,999 characters; at most 1,000" in result.err


def test_a_rebuilt_issue_replaces_its_rows_in_the_search_index(store_target: StoreTarget) -> None:
    with open_store(store_target) as store:
        save(store, SPRING[1])
        assert store.search_stories("llama")
        save(store, issue(SPRING[1].date, story("b9", "Autre chose", ("rgpd",))))
        assert store.search_stories("llama") == []
        assert [h.story_id for h in store.search_stories("autre")] == ["b9"]


def test_search_migration_indexes_issues_stored_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    search_version = next(n for n, sql in enumerate(MIGRATIONS) if "story_search" in sql)
    db = sqlite3.connect(path)
    for sql in MIGRATIONS[:search_version]:
        db.executescript(sql)
    db.execute(f"PRAGMA user_version = {search_version}")
    db.execute("INSERT INTO issues VALUES ('2025-03-04', '2025-03-04T05:00:00+00:00', 'r', 't', 'h', 'x', 1, '{}')")
    db.execute("INSERT INTO issue_stories VALUES ('2025-03-04', 0, 's', 'lead', 'rgpd', '[\"rgpd\"]', 'K.',"
               " 'Le Conseil d’État et la sécurité', 'txt', 'Src', NULL, '[]')")
    db.commit()
    db.close()
    with open_store(StoreTarget(path)) as store:
        assert store.schema_version == len(MIGRATIONS)
        (hit,) = store.search_stories("securite")
        assert hit.date == dt.date(2025, 3, 4) and hit.title.startswith("Le Conseil")


# ---------------------------------------------------------------- the demo archive, end to end


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DEMO.is_file():
        pytest.skip("examples/demo.yaml is not present")
    root = tmp_path_factory.mktemp("demo")
    for date in ("2025-05-03", "2025-05-05", "2025-05-06", "2025-05-07"):
        code, _, err = call_cli("run", "--config", DEMO, "--date", date, "--db", root / "db.sqlite3",
                                "--output", root / "out")
        assert code == 0, err
    return root


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("href", "src") and value]


def test_every_internal_link_of_the_site_resolves(demo: Path) -> None:
    out = demo / "out"
    base = "http://127.0.0.1:8000/"  # demo.yaml's base_url: links to it are links into the site
    pages = sorted(out.rglob("*.html"))
    assert len(pages) >= 4 + 4 + 2  # issues, topic pages, index and search
    checked = 0
    for page in pages:
        parser = Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for link in parser.links:
            if link.startswith(base):
                target = out / unquote(urlsplit(link).path.removeprefix(urlsplit(base).path))
            elif urlsplit(link).scheme in ("http", "https", "mailto", "data") or link.startswith("#"):
                continue
            else:
                target = page.parent / unquote(urlsplit(link).path)
            if target.is_dir() or link.endswith("/"):
                target = target / "index.html"
            assert target.resolve().is_file(), f"{page.relative_to(out)}: broken link {link}"
            assert out.resolve() in target.resolve().parents, f"{page.relative_to(out)}: {link} leaves the site"
            checked += 1
    assert checked > 50


def test_demo_issue_pages_pass_the_shared_issue_check(demo: Path, shared: Path) -> None:
    for date in ("2025-05-05", "2025-05-06"):
        proc = subprocess.run([sys.executable, str(shared / "tools" / "check_issue.py"), str(demo / "out"), date],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_archive_list_show_and_search_in_the_terminal(demo: Path) -> None:
    where = ["--config", DEMO, "--db", demo / "db.sqlite3", "--output", demo / "out"]
    code, out, err = call_cli("archive", "list", *where)
    assert code == 0, err
    dates = [line.split()[0] for line in out.splitlines()]
    assert dates == ["2025-05-07", "2025-05-06", "2025-05-05", "2025-05-03"]
    assert "mercredi 7 mai 2025" in out and "4 issue(s)" in err
    code, out, err = call_cli("archive", "show", "2025-05-06", *where)
    assert code == 0, err
    assert out == (demo / "out" / "2025-05-06" / "digest.txt").read_text(encoding="utf-8")
    code, out, err = call_cli("archive", "show", "2025-05-04", *where)
    assert code == 2 and "no issue stored for 2025-05-04" in err and err.count("\n") == 1
    # Accents folded: "reglement" finds "Règlement".
    code, out, err = call_cli("archive", "search", "reglement", *where)
    assert code == 0, err
    first = out.splitlines()[0]
    assert re.match(r"2025-05-0\d  .*[Rr]èglement", first), out
    assert "[Règlement]" in out or "[règlement]" in out
    code, out, err = call_cli("archive", "search", "zzzzqqq", *where)
    assert code == 0 and out == "" and "0 result(s)" in err
    code, out, err = call_cli("archive", "search", "--topic", "nope", "ia", *where)
    assert code == 2 and "unknown topic 'nope'" in err


# ---------------------------------------------------------------- the search page in a real browser

WAIT_FOR_SEARCH = """
new Promise((resolve) => {
  const started = Date.now();
  const done = () => !document.getElementById("status").textContent.startsWith("Chargement");
  const poll = () => (done() || Date.now() - started > 5000) ? resolve(true) : setTimeout(poll, 20);
  poll();
})
"""


def test_search_page_finds_stories_offline_in_a_real_browser(tmp_path: Path) -> None:
    chromium = pytest.importorskip("chromium", reason="tests/chromium.py (DevTools client) is not there")
    executable = chromium.find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed")
    import threading

    evil = story("x1", 'Faille <img src=x onerror="window.pwned=1"> chez Criteo', ("rgpd",),
                 url="javascript:window.pwned=2")
    _, out = site(tmp_path, [*SPRING, issue(dt.date(2025, 5, 7), evil)])
    # `pipeline serve`'s own server: its Content-Security-Policy header must let the page work.
    server = make_server(out, DEFAULT_TEMPLATES, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    try:
        with chromium.Chromium(executable) as browser:
            page = browser.new_page()

            def results(query: str) -> list[dict[str, object]]:
                page.open(f"{base}search.html?q={query}", width=1024)
                page.call("Runtime.evaluate", expression=WAIT_FOR_SEARCH, awaitPromise=True)
                return page.evaluate("""[...document.querySelectorAll('#results li')].map(li => ({
                    text: li.textContent, links: [...li.querySelectorAll('a')].map(a => a.getAttribute('href')),
                    imgs: li.querySelectorAll('img').length}))""")

            # Accents and case folded, prefixes match, every word must appear.
            found = results("reglement")
            assert len(found) == 1 and "Le règlement sur l’IA" in str(found[0]["text"])
            assert found[0]["links"] == ["https://presse.example/b2", "2025-05-05/index.html"]
            assert [len(results(q)) for q in ("REGL", "cnil%20llama", "interet%20legitime")] == [1, 0, 1]
            assert "1 article trouvé" in page.evaluate("document.getElementById('status').textContent")
            # Feed text is shown as text: no element made of it, no script run, no javascript: link.
            (hostile,) = results("criteo%20faille")
            assert '<img src=x onerror="window.pwned=1">' in str(hostile["text"])
            assert hostile["imgs"] == 0 and hostile["links"] == ["2025-05-07/index.html"]
            assert page.evaluate("typeof window.pwned") == "undefined"
            assert page.errors == []  # no CSP violation, no script error, no failed load
            # The result links lead to the issue pages.
            page.open(f"{base}search.html?q=llama", width=375)
            page.call("Runtime.evaluate", expression=WAIT_FOR_SEARCH, awaitPromise=True)
            href = page.evaluate("document.querySelector('#results a[href$=\"index.html\"]').href")
            assert href == f"{base}2025-05-05/index.html"
    finally:
        server.shutdown()
        server.server_close()


def test_the_demo_site_served_by_pipeline_serve_shows_in_a_browser_without_errors(demo: Path) -> None:
    """Every kind of page through the real server, its CSP and nosniff headers in force: no
    blocked script or style, no console error, the search works, digest.txt reads as UTF-8."""
    chromium = pytest.importorskip("chromium", reason="tests/chromium.py (DevTools client) is not there")
    executable = chromium.find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed")
    import threading

    server = make_server(demo / "out", DEFAULT_TEMPLATES, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    try:
        with chromium.Chromium(executable) as browser:
            page = browser.new_page()
            for path in ("", "2025-05-06/", "topics/rgpd.html", "search.html?q=meta"):
                page.open(base + path, width=1024)
                if path.startswith("search"):
                    page.call("Runtime.evaluate", expression=WAIT_FOR_SEARCH, awaitPromise=True)
                    assert page.evaluate("document.querySelectorAll('#results li').length") > 0
                assert page.errors == [], (path, page.errors)
            page.open(base + "2025-05-06/digest.txt", width=1024)
            assert page.evaluate("document.body.innerText").startswith("TECH MATIN · ")  # not "Â·"
    finally:
        server.shutdown()
        server.server_close()
