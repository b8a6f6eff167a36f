"""Store: items, feed health, classifications and issues survive in a real database, on each backend
(a SQLite file, a PostgreSQL database of the session's cluster: the `store` fixture of conftest.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.models import (
    Classification,
    FeedSource,
    FetchResult,
    FetchStatus,
    Issue,
    Item,
    Match,
    MenuTeaser,
    NewsletterSettings,
    Section,
    SourceRef,
    Story,
)
from pipeline.store import DeliveryStatus, Store, StoredIssue, issue_from_json, issue_stories, issue_to_json
from pipeline.store.sqlite import SqliteStore

T0 = dt.datetime(2025, 5, 5, 8, 0, tzinfo=dt.UTC)
FEED = FeedSource(id="f1", name="Feed One", url="https://example.org/rss")


def item(identifier: str, published: dt.datetime | None, title: str = "Titre") -> Item:
    return Item(id=identifier, feed_id="f1", source="Feed One", title=title, url=f"https://e.org/{identifier}",
                summary="Résumé", published=published, first_seen=T0)


def test_upsert_counts_only_new_items_and_keeps_first_seen(store: Store) -> None:
    assert store.upsert_items([item("a", T0), item("b", None)]) == 2
    later = Item(**{**item("a", T0).__dict__, "title": "Titre corrigé", "first_seen": T0 + dt.timedelta(days=3)})
    assert store.upsert_items([later]) == 0
    (stored,) = [i for i in store.all_items() if i.id == "a"]
    assert stored.title == "Titre corrigé" and stored.first_seen == T0


def test_an_items_digest_changes_with_its_content_only(store: Store) -> None:
    store.upsert_items([item("a", T0), item("b", T0 + dt.timedelta(minutes=1))])
    window = (T0 - dt.timedelta(hours=1), T0 + dt.timedelta(hours=1))
    digests = store.item_digests_between(*window)
    assert [i for i, _ in digests] == [i.id for i in store.items_between(*window)] == ["a", "b"]
    assert all(len(digest) == 64 for _, digest in digests)
    # Fetched again, unchanged (a later first_seen, which the store keeps as it was): the same digests.
    store.upsert_items([dataclasses.replace(item("a", T0), first_seen=T0 + dt.timedelta(days=1))])
    assert store.item_digests_between(*window) == digests
    store.upsert_items([item("a", T0, title="Titre corrigé")])
    (a, b) = store.item_digests_between(*window)
    assert a[0] == "a" and a[1] != digests[0][1] and b == digests[1]


def test_an_item_edited_at_its_source_is_classified_again(store: Store) -> None:
    """A classification is kept by item and rules fingerprint: an item stored again with other
    content must not keep the one made of its old text (its issue would be recomposed with the new
    title but the old topics and match offsets); stored again unchanged, it keeps it."""
    verdict = Classification(item_id="a", topics=("rgpd",), scores={"rgpd": 4.0},
                             matches=(Match(topic="rgpd", field="title", start=0, end=5, text="Titre", rule="r",
                                            weight=4.0),))
    store.upsert_items([item("a", T0), item("b", T0)])
    store.save_classifications([verdict, dataclasses.replace(verdict, item_id="b")], "fp")
    store.upsert_items([dataclasses.replace(item("a", T0), first_seen=T0 + dt.timedelta(days=1)), item("b", T0)])
    assert set(store.classifications(["a", "b"], "fp")) == {"a", "b"}
    store.upsert_items([item("a", T0, title="Sans rapport")])
    assert set(store.classifications(["a", "b"], "fp")) == {"b"}


def test_undated_items_count_from_first_seen(store: Store) -> None:
    store.upsert_items([item("dated", T0 - dt.timedelta(days=2)), item("undated", None)])
    window = store.items_between(T0 - dt.timedelta(hours=1), T0 + dt.timedelta(hours=1))
    assert [i.id for i in window] == ["undated"]


def test_feed_health_and_conditional_state(store: Store) -> None:
    ok = FetchResult(feed=FEED, status=FetchStatus.NEW, url=FEED.url, body=b"x", etag='"v1"',
                     last_modified="Mon, 05 May 2025 08:00:00 GMT")
    store.record_fetch(ok, new_items=3, at=T0)
    state = store.feed_states([FEED])["f1"]
    assert (state.etag, state.items_seen, state.consecutive_failures) == ('"v1"', 3, 0)
    failed = FetchResult(feed=FEED, status=FetchStatus.FAILED, url=FEED.url, error="HTTP 500")
    for _ in range(2):
        store.record_fetch(failed, 0, T0)
    state = store.feed_states([FEED])["f1"]
    assert state.consecutive_failures == 2 and state.last_error == "HTTP 500" and state.etag == '"v1"'
    moved = FetchResult(feed=FEED, status=FetchStatus.MOVED, url=FEED.url, body=b"x",
                        permanent_redirect="https://example.org/new-rss")
    store.record_fetch(moved, 0, T0)
    assert store.feed_states([FEED])["f1"].url == "https://example.org/new-rss"
    # A new URL in sources.yaml forgets the old redirect and validators.
    edited = FeedSource(id="f1", name="Feed One", url="https://example.org/other")
    state = store.feed_states([edited])["f1"]
    assert state.url is None and state.etag is None


def test_reenable_resets_failures(store: Store) -> None:
    failed = FetchResult(feed=FEED, status=FetchStatus.FAILED, url=FEED.url, error="boom")
    for _ in range(5):
        store.record_fetch(failed, 0, T0)
    assert store.set_feeds_enabled(["f1"], enabled=True) == 1
    assert store.feed_states([FEED])["f1"].consecutive_failures == 0


def test_classifications_are_keyed_by_rules_fingerprint(store: Store) -> None:
    store.upsert_items([item("a", T0)])
    c = Classification(item_id="a", topics=("rgpd",), scores={"rgpd": 3.0},
                       matches=(Match("rgpd", "cnil", "title", "CNIL", 0, 4),))
    store.save_classifications([c], "fp1")
    assert store.classifications(["a"], "fp1")["a"] == c
    assert store.classifications(["a"], "fp2") == {}


def sample_issue() -> Issue:
    story = Story(id="s1", kicker="META.", title="Meta", text="Texte.", url="https://e.org/1", source="A",
                  topics=("meta_ai", "rgpd"), primary_topic="meta_ai", score=3.2, item_ids=("a", "b"),
                  also_on=(SourceRef("B", "https://b.org/1"),), published=T0, why=("Meta AI",))
    return Issue(date=dt.date(2025, 5, 6), newsletter=NewsletterSettings(), lead=story,
                 menu=(MenuTeaser("IA", "Meta", "s1"),), sections=(Section("rgpd", "RGPD", (story,)),),
                 agenda=(), further_reading=())


def test_issue_round_trips_through_json() -> None:
    issue = sample_issue()
    assert issue_from_json(issue_to_json(issue), NewsletterSettings()) == issue


def test_saved_issue_marks_items_as_featured(store: Store) -> None:
    issue = sample_issue()
    record = StoredIssue(date=issue.date, built_at=T0, rules_fingerprint="r", templates_fingerprint="t",
                         html_sha256="h", text_sha256="x", story_count=1, issue_json=issue_to_json(issue))
    store.save_issue(record, [], ["a", "b"])
    assert store.featured_item_ids(before=dt.date(2025, 5, 7)) == {"a", "b"}
    assert store.featured_item_ids(before=dt.date(2025, 5, 6)) == set()
    store.save_issue(record, [], ["a"])  # a rebuild replaces, never duplicates
    assert store.featured_item_ids(before=dt.date(2025, 5, 7)) == {"a"}
    assert [i.date for i in store.issues()] == [dt.date(2025, 5, 6)]


def test_a_record_with_the_same_content_is_updated_in_place(store: Store) -> None:
    issue = sample_issue()
    record = StoredIssue(date=issue.date, built_at=T0, rules_fingerprint="r", templates_fingerprint="t",
                         html_sha256="h", text_sha256="x", story_count=1, issue_json=issue_to_json(issue),
                         render_key="k")
    stories = issue_stories(issue)
    store.save_issue(record, stories, ["a", "b"])
    # A template edit: new pages, same content. The stories, their search entries and the
    # featured items stay; the record is replaced.
    edited = dataclasses.replace(record, built_at=T0 + dt.timedelta(days=1), templates_fingerprint="t2",
                                 html_sha256="h2", render_key="k2", input_key="i2")
    assert store.update_issue_record(edited)
    assert store.issue(issue.date) == edited
    assert store.issue_stories(issue.date) == stories
    assert [hit.story_id for hit in store.search_stories("Meta")] == ["s1", "s1"]
    assert store.featured_item_ids(before=dt.date(2025, 5, 7)) == {"a", "b"}
    # Other content, or no issue of that date: refused, nothing changed (save_issue is for those).
    other = dataclasses.replace(edited, issue_json=issue_to_json(dataclasses.replace(issue, menu=())),
                                html_sha256="h3")
    assert not store.update_issue_record(other)
    assert not store.update_issue_record(dataclasses.replace(edited, date=dt.date(2025, 5, 7)))
    assert store.issue(issue.date) == edited and store.issue(dt.date(2025, 5, 7)) is None


def test_failed_transaction_leaves_nothing(store: Store) -> None:
    bad = Item(**{**item("z", T0).__dict__, "first_seen": None})
    with pytest.raises(ValueError):
        store.upsert_items([item("y", T0), bad])
    assert store.item_count() == 0
    if isinstance(store, SqliteStore):
        assert store.integrity_ok()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(PipelineError, match="newer than this program"):
        SqliteStore(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(PipelineError, match="cannot open the database"):
        SqliteStore(path)


def test_due_feeds_are_claimed_once_until_their_next_fetch(store: Store) -> None:
    feeds = [FEED, FeedSource(id="f2", name="Feed Two", url="https://example.org/two"),
             FeedSource(id="f3", name="Feed Three", url="https://example.org/three")]
    hold = dt.timedelta(minutes=15)
    assert store.claim_due_feeds(feeds, T0, hold) == ["f1", "f2", "f3"]  # never fetched: due at once
    assert store.claim_due_feeds(feeds, T0 + dt.timedelta(minutes=1), hold) == []  # held for their jobs
    store.schedule_fetch("f2", T0 + dt.timedelta(hours=2))
    store.set_feeds_enabled(["f3"], enabled=False)
    assert store.claim_due_feeds(feeds, T0 + dt.timedelta(minutes=16), hold) == ["f1"]
    store.upsert_items([item("a", T0 - dt.timedelta(days=1)), item("b", T0 - dt.timedelta(days=9))])
    assert store.feed_item_count("f1", T0 - dt.timedelta(days=7)) == 1


def test_queued_deliveries_are_claimed_by_one_batch_each_and_keep_their_message_id(store: Store) -> None:
    day = dt.date(2025, 5, 6)
    messages = [(f"r{n}@example.org", f"<m{n}@example.org>") for n in range(5)]
    assert store.queue_deliveries(day, messages, T0) == 5
    assert store.queue_deliveries(day, [(email, "<other@x>") for email, _ in messages], T0) == 5  # kept as is
    first = store.claim_deliveries(day, "b1", 3, T0)
    second = store.claim_deliveries(day, "b2", 3, T0)
    assert len(first) == 3 and len(second) == 2
    assert {r.email for r in first}.isdisjoint({r.email for r in second})
    assert {r.message_id for r in first + second} == {m for _, m in messages}
    assert all(r.status is DeliveryStatus.SENDING and r.batch == "b1" for r in first)
    # b1 dies: one delivery handed over, the others not; b1 resumed takes back only those.
    store.begin_delivery(day, first[0].email, "<ignored>", T0)
    store.mark_handed_over(day, first[0].email, T0)
    assert sorted(r.email for r in store.claim_deliveries(day, "b1", 10, T0)) == sorted(r.email for r in first[1:])
    store.finish_delivery(day, second[0].email, DeliveryStatus.FAILED_TEMPORARY, "451", T0)
    assert store.queue_deliveries(day, messages, T0) == 1  # a temporary failure is queued again
    assert store.deliveries(day)[first[0].email].message_id == first[0].message_id


def test_items_stored_before_the_text_pass_are_cleaned_when_the_store_opens(tmp_path: Path) -> None:
    from pipeline.store.sqlite.schema import MIGRATIONS

    text_pass = next(n for n, m in enumerate(MIGRATIONS) if callable(m))
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    for sql in MIGRATIONS[:text_pass]:
        assert isinstance(sql, str)
        db.executescript(sql)
    db.execute(f"PRAGMA user_version = {text_pass}")
    columns = ("id, feed_id, source, guid, url, title, summary, content, language, published, author, categories,"
               " first_seen, effective_time")
    seen = "2025-05-05T08:00:00+00:00"
    # As the former parser stored them: HTML gone, but the feeds' boilerplate and a second layer of
    # entities (escaped twice in the feed) left in.
    old = ("old", "f", "Source", None, "https://f.example/1", "Le r&eacute;glement &amp; vous",
           "La CNIL publie ses lignes directrices sur l&#8217;IA. Lire la suite",
           "Le texte complet […] The post Les lignes directrices appeared first on Le Veilleur.",
           "fr", seen, None, "[]", seen, seen)
    # As the text pass stores them: must not change.
    new = ("new", "f", "Source", None, "https://f.example/2", "AT&T et l’IA : « a < b » [sic]",
           "Un résumé propre… qui se termine ainsi…", "", "fr", seen, "Jeanne", "[]", seen, seen)
    db.executemany(f"INSERT INTO items ({columns}) VALUES ({','.join('?' * 14)})", [old, new])
    db.executemany("INSERT INTO classifications (item_id, fingerprint, topics, scores, matches) VALUES (?,?,?,?,?)",
                   [("old", "r", "[]", "{}", "{}"), ("new", "r", '["rgpd"]', '{"rgpd": 3.0}', "{}")])
    db.commit()
    db.close()

    with SqliteStore(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        items = {item.id: item for item in store.all_items()}
        assert items["old"].title == "Le réglement & vous"
        assert items["old"].summary == "La CNIL publie ses lignes directrices sur l’IA."
        assert items["old"].content == "Le texte complet"
        assert (items["new"].title, items["new"].summary, items["new"].author) == (new[5], new[6], new[10])
        # The changed item is classified again from its clean text; the other keeps its classification.
        assert set(store.classifications(["old", "new"], "r")) == {"new"}


def test_an_operators_findings_settle_uncertain_deliveries_all_or_none(store: Store) -> None:
    day = dt.date(2025, 5, 6)
    for n in range(5):
        store.begin_delivery(day, f"r{n}@example.org", f"<m{n}@example.org>", T0)
    for n in (0, 1, 2):  # killed between the end of the data and the server's reply: uncertain
        store.mark_handed_over(day, f"r{n}@example.org", T0)
    store.finish_delivery(day, "r3@example.org", DeliveryStatus.SENT, "250 ok", T0)  # r4: never handed over
    before = store.deliveries(day)

    for findings, problem in [
        ([("<m0@example.org>", True), ("<nope@example.org>", False)],
         "no delivery of 2025-05-06 has Message-ID <nope@example.org>"),
        ([("<m1@example.org>", False), ("<m3@example.org>", True)],
         "Message-ID <m3@example.org> (to r3@example.org, 2025-05-06) is not an uncertain delivery: it is sent"),
        ([("<m4@example.org>", False)], "is not an uncertain delivery: it is being sent, never handed over"),
    ]:
        with pytest.raises(PipelineError) as refused:
            store.settle_deliveries(day, findings, T0 + dt.timedelta(hours=1))
        assert problem in str(refused.value) and len(str(refused.value).splitlines()) == 1
        assert store.deliveries(day) == before, "nothing recorded when one finding is refused"
    with pytest.raises(PipelineError, match="no delivery of 2025-05-07 has"):
        store.settle_deliveries(dt.date(2025, 5, 7), [("<m0@example.org>", True)], T0)

    later = T0 + dt.timedelta(hours=2)
    settled = store.settle_deliveries(day, [("<m0@example.org>", True), ("<m1@example.org>", False)], later)
    assert [(r.email, r.status, r.settled, r.settled_at) for r in settled] == [
        ("r0@example.org", DeliveryStatus.SENT, "delivered", later),
        ("r1@example.org", DeliveryStatus.FAILED_TEMPORARY, "lost", later)]
    after = store.deliveries(day)
    assert after["r0@example.org"] == settled[0] and after["r1@example.org"] == settled[1]
    assert after["r2@example.org"] == before["r2@example.org"]  # not named: still uncertain
    assert after["r0@example.org"].message_id == "<m0@example.org>"
    with pytest.raises(PipelineError, match="is not an uncertain delivery: it is sent"):
        store.settle_deliveries(day, [("<m0@example.org>", True)], later)
    # The lost one is mailed again with its Message-ID; the finding stays on the record.
    again = store.begin_delivery(day, "r1@example.org", "<new@example.org>", later)
    assert (again.message_id, again.status, again.settled) == ("<m1@example.org>", DeliveryStatus.SENDING, "lost")
    # In the distributed mode a lost one is queued again, a delivered one never.
    assert store.queue_deliveries(day, [("r0@example.org", "<x0@x>"), ("r1@example.org", "<x1@x>")], later) == 0
    store.finish_delivery(day, "r1@example.org", DeliveryStatus.FAILED_TEMPORARY, "451", later)
    assert store.queue_deliveries(day, [("r0@example.org", "<x0@x>"), ("r1@example.org", "<x1@x>")], later) == 1
    assert store.deliveries(day)["r0@example.org"].status is DeliveryStatus.SENT


def test_the_engines_explanations_round_trip_on_each_backend(store: Store) -> None:
    # The engine keeps its explanations as rows until read (models.Matches); stored, they come back as
    # Match objects, equal to the engine's either way round.
    from pipeline.classify import Classifier
    from pipeline.config.topics import load_topics

    classifier = Classifier.compile(load_topics(Path(__file__).resolve().parents[1] / "topics.yaml"))
    made = classifier.classify_fields("a", "La CNIL inflige une amende au titre du RGPD", "Le CEPD salue la décision.")
    assert made.topics == ("rgpd",) and len(made.matches) >= 3
    store.upsert_items([item("a", T0)])
    store.save_classifications([made], "fp1")
    stored = store.classifications(["a"], "fp1")["a"]
    assert stored == made and made == stored
    assert stored.matches_for("rgpd") == made.matches_for("rgpd") and made.matches_for("meta_ai") == ()
