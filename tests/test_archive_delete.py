"""`pipeline archive delete DATE` (issue 18 point 5): an issue removed as if it had never been
built, from the store, the site, the search index and the feed, its neighbours' links fixed,
and its stories given back to the dates they would otherwise have appeared in."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipeline.app import Pipeline
from pipeline.config import load_config
from pipeline.config.topics import load_topics
from pipeline.models import Approval, EditorialDecision, FeedSource, FetchResult, FetchStatus, Item, ParseResult
from pipeline.store import StoreTarget, open_store
from tests.test_app import FakeFetcher, write_sources
from tests.test_archive import issue, save, story
from tests.test_editorial import demo_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"
GOLDEN = REPO / "tests" / "golden"


def demo_args(root: Path) -> list[str | Path]:
    return ["--config", DEMO, "--topics", REPO / "topics.yaml", "--db", root / "db.sqlite3", "--output", root / "out"]


def site_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_mistyped_future_issue_deleted_gives_the_demo_its_stories_back(tmp_path: Path, cli) -> None:
    args = demo_args(tmp_path)
    out = tmp_path / "out"
    # The mistake of issue 18: 2205 for 2025. Its run sees the feeds' undated pages first, as of now.
    assert cli("run", "--date", "2205-05-06", "--force", *args).code == 0
    before = site_files(out)

    asked = cli("archive", "delete", "2205-05-06", *args)
    assert asked.code == 2
    assert asked.err == "pipeline: error: nothing deleted; add --yes to delete the issue of 2205-05-06\n"
    assert "would remove the issue (0 stories)" in asked.out and "6 undated item(s)" in asked.out, asked.out
    assert site_files(out) == before  # nothing changed without --yes

    deleted = cli("archive", "delete", "2205-05-06", "--yes", *args)
    assert deleted.code == 0, deleted.err
    assert "removed the issue" in deleted.out and "6 undated item(s) its runs saw first forgotten" in deleted.out
    assert not (out / "2205-05-06").exists()
    for page in ("index.html", "feed.xml", "search-index.json"):
        assert "2205" not in (out / page).read_text(encoding="utf-8"), page
    listed = cli("archive", "list", *args)
    assert listed.code == 0 and "2205" not in listed.out

    # The issue it took its stories from is whole again: the golden issue, byte for byte.
    run = cli("run", "--date", "2025-05-06", *args)
    assert run.code == 0 and "18 stories" in run.out, run.out
    for name, golden in (("index.html", "2025-05-06.html"), ("digest.txt", "2025-05-06.txt")):
        assert (out / "2025-05-06" / name).read_bytes() == (GOLDEN / golden).read_bytes(), name

    again = cli("archive", "delete", "2205-05-06", "--yes", *args)
    assert (again.code, again.err) == (
        2, "pipeline: error: no issue stored for 2205-05-06 (see `pipeline archive list`)\n")


def test_the_site_after_a_deletion_is_the_site_built_without_that_issue(tmp_path: Path, cli) -> None:
    with_it, without = tmp_path / "with", tmp_path / "without"
    for date in ("2025-05-05", "2025-05-06", "2025-05-07"):
        assert cli("run", "--date", date, *demo_args(with_it)).code == 0
    for date in ("2025-05-05", "2025-05-07"):
        assert cli("run", "--date", date, *demo_args(without)).code == 0
    deleted = cli("archive", "delete", "2025-05-06", "--yes", *demo_args(with_it))
    assert deleted.code == 0, deleted.err
    assert "2025-05-05: previous/next links re-rendered" in deleted.out
    assert "2025-05-07: previous/next links re-rendered" in deleted.out

    # Every page, the neighbours' previous/next links, the index, topic pages, feed and search index
    # included (and the manifest that records them), is what a site that never had it holds.
    assert site_files(with_it / "out") == site_files(without / "out")
    page = (with_it / "out" / "2025-05-05" / "index.html").read_text(encoding="utf-8")
    assert "../2025-05-07/index.html" in page and "2025-05-06" not in page
    search = cli("archive", "search", "meta", "--limit", "100", *demo_args(with_it))
    assert search.code == 0 and "2025-05-06" not in search.out and "2025-05-07" in search.out
    assert json.loads((with_it / "out" / "search-index.json").read_text(encoding="utf-8"))["stories"]


def test_a_deletion_interrupted_after_the_store_is_finished_by_running_it_again(tmp_path: Path, cli) -> None:
    args = demo_args(tmp_path)
    for date in ("2025-05-05", "2025-05-06"):
        assert cli("run", "--date", date, *args).code == 0
    with open_store(StoreTarget(tmp_path / "db.sqlite3")) as store:  # what a crash after the store's part leaves
        assert store.delete_issue(dt.date(2025, 5, 6))
    assert (tmp_path / "out" / "2025-05-06" / "index.html").is_file()

    finished = cli("archive", "delete", "2025-05-06", "--yes", *args)
    assert finished.code == 0, finished.err
    assert "2025-05-06: not in the store any more" in finished.out
    assert not (tmp_path / "out" / "2025-05-06").exists()
    assert "2025-05-06" not in (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert cli("archive", "delete", "2025-05-06", "--yes", *args).code == 2


# ---------------------------------------------------------------- featured items, on both backends


class DatedParser:
    """One on-topic item whose date the feed changes from one run to the next."""

    def __init__(self) -> None:
        self.published = dt.datetime(2025, 5, 5, 10, 0, tzinfo=dt.UTC)

    def __call__(self, result: FetchResult, seen_at: dt.datetime) -> ParseResult:
        return ParseResult(feed=result.feed, items=(Item(
            id="cnil-1", feed_id="cnil", source="Source cnil", title="La CNIL inflige une amende au titre du RGPD",
            url="https://cnil.example/1", summary="La CNIL sanctionne un courtier en données personnelles.",
            published=self.published, first_seen=seen_at),))


def test_an_item_featured_by_a_deleted_issue_is_free_for_the_next_build_of_a_later_date(
        tmp_path: Path, store_target: StoreTarget) -> None:
    parser = DatedParser()
    config = load_config(write_sources(tmp_path, "cnil"))
    app = Pipeline(config, load_topics(REPO / "topics.yaml"), store=store_target, output_dir=tmp_path / "out",
                   fetcher=FakeFetcher({"cnil": FetchStatus.NEW}), parser=parser)
    first, second = dt.date(2025, 5, 6), dt.date(2025, 5, 7)
    with app:
        report = app.run(first, now=dt.datetime(2025, 5, 6, 5, 0, tzinfo=dt.UTC))
        assert report.build is not None and report.build.item_ids == ("cnil-1",)
        # The feed re-dates the article into the next day's window: already featured, it is not repeated.
        parser.published = dt.datetime(2025, 5, 6, 10, 0, tzinfo=dt.UTC)
        report = app.run(second, now=dt.datetime(2025, 5, 7, 5, 0, tzinfo=dt.UTC))
        assert report.build is not None and report.build.stories == 0

        deletion = app.delete_issue(first)
        assert deletion.done and deletion.featured == ("cnil-1",) and deletion.later_issues == (second,)
        assert deletion.neighbours == (second,) and deletion.forgotten == ()
        assert app.store.featured_item_ids(before=dt.date(2025, 5, 8)) == set()
        assert app.search("courtier") == []

        (rebuilt,) = app.rebuild([second])
        assert rebuilt.item_ids == ("cnil-1",)
        assert [s.title for s in app.stored_issue(second).stories()] == ["La CNIL inflige une amende au titre du RGPD"]
        assert [hit.date for hit in app.search("courtier")] == [second]
        assert [listing.date for listing in app.archive_listing()] == [second]


def test_the_store_deletes_an_issue_and_forgets_items_in_one_go(store_target: StoreTarget) -> None:
    feed = FeedSource(id="f", name="F", url="https://f.example/rss")
    seen = dt.datetime(2025, 5, 6, 3, 59, 59, tzinfo=dt.UTC)
    items = [Item(id=f"f-{n}", feed_id="f", source="F", title=f"Page {n}", url=None, summary="", first_seen=seen)
             for n in (1, 2)]
    with open_store(store_target) as store:
        store.record_fetch(FetchResult(feed=feed, status=FetchStatus.NEW, url=feed.url, etag='"v1"',
                                       last_modified="Tue, 06 May 2025 03:00:00 GMT"), 2, seen)
        store.upsert_items(items)
        run_id = store.start_run("run", dt.date(2025, 5, 6), seen)
        store.finish_run(run_id, "ok", "", None, seen)
        assert store.run_starts("run", dt.date(2025, 5, 6)) == [seen]
        assert store.run_starts("rebuild", dt.date(2025, 5, 6)) == []
        assert store.delete_issue(dt.date(2025, 5, 6), ["f-1"]) is False  # no such issue: nothing done
        assert len(store.all_items()) == 2 and store.feed_health()[0].etag == '"v1"'


        save(store, issue(dt.date(2025, 5, 6), story("a1", "Le règlement sur l'IA", ("ai_act",))))
        save(store, issue(dt.date(2025, 5, 7), story("b1", "Un autre règlement", ("ai_act",))))
        for day in (dt.date(2025, 5, 6), dt.date(2025, 5, 7)):
            store.record_decision(EditorialDecision(issue_date=day, action="drop", item_id="item-a1", editor="Ed",
                                                    decided_at=seen))
            store.record_approval(Approval(issue_date=day, editor="Ed", approved_at=seen))
        assert store.delete_issue(dt.date(2025, 5, 6), ["f-1"]) is True
        assert store.issue(dt.date(2025, 5, 6)) is None and store.issue_stories(dt.date(2025, 5, 6)) == []
        assert store.issue_dates() == [dt.date(2025, 5, 7)]
        assert [h.story_id for h in store.search_stories("reglement")] == ["b1"]
        assert [i.id for i in store.all_items()] == ["f-2"]
        # A new issue of that date would start unreviewed; the other issue keeps its review.
        assert store.decisions_for(dt.date(2025, 5, 6)) == [] and store.approval_of(dt.date(2025, 5, 6)) is None
        assert len(store.decisions_for(dt.date(2025, 5, 7))) == 1 and store.approval_of(dt.date(2025, 5, 7))
        (health,) = store.feed_health()
        assert (health.etag, health.last_modified) == (None, None)  # the next fetch reads the feed in full


@pytest.mark.parametrize("date", ["2025-05-06", "1999-01-01"])
def test_deleting_from_an_archive_that_lacks_the_date_is_one_line(tmp_path: Path, cli, date: str) -> None:
    args = demo_args(tmp_path)
    assert cli("run", "--date", "2025-05-05", *args).code == 0
    result = cli("archive", "delete", date, "--yes", *args)
    assert (result.code, result.err) == (
        2, f"pipeline: error: no issue stored for {date} (see `pipeline archive list`)\n")
    assert (tmp_path / "out" / "2025-05-05" / "index.html").is_file()


def test_a_held_draft_stays_out_of_the_links_a_deletion_rewrites(tmp_path: Path, cli) -> None:
    config = demo_config(tmp_path, require_approval=True, approve_by="06:45", on_no_approval="hold")
    where = ["--config", config, "--topics", REPO / "topics.yaml", "--db", tmp_path / "db.sqlite3",
             "--output", tmp_path / "out"]
    days = [dt.date(2025, 5, 5), dt.date(2025, 5, 6), dt.date(2025, 5, 7)]
    for day in days:
        assert cli("run", "--date", day.isoformat(), *where).code == 0
    with Pipeline.from_files(config, REPO / "topics.yaml", db=tmp_path / "db.sqlite3", output=tmp_path / "out") as app:
        for day in days[:2]:
            app.approve(day, "Louise", now=dt.datetime(2025, 5, 7, 5, 0, tzinfo=dt.UTC))
        app.store.record_decision(EditorialDecision(issue_date=days[1], action="drop", item_id="x", editor="Louise",
                                                    decided_at=dt.datetime(2025, 5, 7, 5, 1, tzinfo=dt.UTC)))
        deletion = app.delete_issue(days[1])
        assert deletion.neighbours == (days[0],)  # 7 May awaits its approval: in nobody's links
        assert app.store.approval_of(days[1]) is None and app.store.decisions_for(days[1]) == []
    first = (tmp_path / "out" / "2025-05-05" / "index.html").read_text(encoding="utf-8")
    assert "2025-05-06" not in first and "../2025-05-07/" not in first
    assert "2025-05-07" not in (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
