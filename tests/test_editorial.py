"""The editor's review: decisions kept in the store (both backends), applied by compose after the
rules, validated, reproduced byte for byte by a rebuild; approval; candidates; a test send.

The archive is the real demo (examples/demo.yaml, bundled feeds read as files) built by
`pipeline run` for the issue and the day before, once per module (tests/test_rebuild.py builds
three dates), then copied into each test's tmp_path."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from smtpserver import SmtpServer

from pipeline.app import Pipeline
from pipeline.errors import PipelineError
from pipeline.models import Approval, EditorialDecision
from pipeline.store import DeliveryStatus, StoreTarget, open_store
from tests.helpers import call_cli
from tests.test_rebuild import DEMO, REPO

DAY = dt.date(2025, 5, 6)
BEFORE = dt.date(2025, 5, 5)
T0 = dt.datetime(2025, 5, 6, 5, 30, tzinfo=dt.UTC)
SECRET = "unsubscribe-key-for-tests-of-32-bytes-or-more"


# ---------------------------------------------------------------- the store, on both backends


def test_decisions_and_approvals_are_kept_in_order_per_date(store) -> None:
    made = [
        EditorialDecision(DAY, "drop", "item-b", "Louise", T0),
        EditorialDecision(DAY, "move", "item-a", "Louise", T0, section="rgpd"),
        EditorialDecision(BEFORE, "lead", "item-z", "Victor", T0 - dt.timedelta(days=1)),
        EditorialDecision(DAY, "kicker", "item-a", "Victor", T0 + dt.timedelta(minutes=3), text="Amende record"),
        EditorialDecision(DAY, "summary", "item-a", "Victor", T0 + dt.timedelta(minutes=3),
                          text="Une phrase.\n\nUne autre, « citée »."),
    ]
    for decision in made:
        store.record_decision(decision)
    assert store.decisions_for(DAY) == [made[0], made[1], made[3], made[4]]
    assert store.decisions_for(BEFORE) == [made[2]]
    assert store.decisions_for(dt.date(2025, 5, 7)) == []
    assert all(d.decided_at.tzinfo is not None for d in store.decisions_for(DAY))

    assert store.approval_of(DAY) is None
    first = Approval(DAY, "Louise", T0 + dt.timedelta(minutes=5))
    store.record_approval(first)
    assert store.approval_of(DAY) == first
    again = Approval(DAY, "Victor", T0 + dt.timedelta(minutes=9))
    store.record_approval(again)
    assert store.approval_of(DAY) == again  # the latest
    assert store.approval_of(BEFORE) is None
    # A time in another zone comes back as the same instant, in UTC.
    paris = dt.timezone(dt.timedelta(hours=2))
    store.record_approval(Approval(BEFORE, "Camille", dt.datetime(2025, 5, 5, 8, 0, tzinfo=paris)))
    found = store.approval_of(BEFORE)
    assert found is not None and found.approved_at == dt.datetime(2025, 5, 5, 6, 0, tzinfo=dt.UTC)


def test_a_decision_that_cannot_be_written_leaves_nothing(store) -> None:
    with pytest.raises(ValueError):  # a naive time: refused before anything is written
        store.record_decision(EditorialDecision(DAY, "drop", "item-b", "Louise", dt.datetime(2025, 5, 6, 5, 0)))
    assert store.decisions_for(DAY) == []


# ---------------------------------------------------------------- the demo archive


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DEMO.is_file():
        pytest.skip("examples/demo.yaml is not present")
    root = tmp_path_factory.mktemp("editorial")
    for date in (BEFORE, DAY):
        code, _out, err = call_cli("run", "--config", DEMO, "--date", date.isoformat(), "--db", root / "db.sqlite3",
                                   "--output", root / "out")
        assert code == 0, err
    return root


@pytest.fixture
def demo_copy(two_days: Path, tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    shutil.copytree(two_days, root, ignore=shutil.ignore_patterns("*.lock"))
    return root


def demo_config(root: Path, **delivery: object) -> Path:
    """examples/demo.yaml with its feeds' paths made absolute and, with `delivery`, a delivery section."""
    config = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    for feed in config["feeds"]:
        feed["url"] = str(DEMO.parent / feed["url"])
    config.pop("storage", None)
    if delivery:
        (root / "readers.csv").write_text("email,name,topics\nlecteur@example.org,Lecteur,\n", encoding="utf-8")
        config["delivery"] = {
            "from_address": "lettre@techmatin.example.org", "smtp_host": "127.0.0.1", "security": "none",
            "recipients": "readers.csv", "rate": 0, "timeout": 10,
            "unsubscribe_url": "https://techmatin.example.org/desinscription?email={email}&token={token}",
            **delivery,
        }
    path = root / "sources.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def open_pipeline(root: Path, config: Path = DEMO) -> Pipeline:
    return Pipeline.from_files(config, REPO / "topics.yaml", db=root / "db.sqlite3", output=root / "out")


@pytest.fixture
def app(demo_copy: Path) -> Iterator[Pipeline]:
    with open_pipeline(demo_copy) as pipeline:
        yield pipeline


def decision(action: str, item_id: str, section: str | None = None, text: str | None = None,
             minutes: int = 0) -> EditorialDecision:
    return EditorialDecision(DAY, action, item_id, "Louise Garnier", T0 + dt.timedelta(minutes=minutes),
                             section=section, text=text)


def by_part(app: Pipeline) -> dict[str, list[str]]:
    view = app.draft(DAY)
    parts: dict[str, list[str]] = {}
    for story in view.stories:
        key = story.part if story.part != "section" else f"section:{story.section}"
        parts.setdefault(key, []).append(story.story.id)
    return parts


def test_the_draft_shows_each_story_with_its_topics_and_matched_words(app: Pipeline) -> None:
    view = app.draft(DAY)
    assert view.stories[0].part == "lead" and view.issue.lead is not None
    assert [s.story.id for s in view.stories] == [s.id for s in view.issue.stories()]
    for story in view.stories:
        assert story.story.topics and set(story.story.topics) <= set(story.matched)
        assert all(story.matched[t] for t in story.story.topics)
    assert {t.id for t in view.sections} == set(app.topics.ids)
    assert not view.decisions and view.approval is None and not view.approved
    assert view.published and view.sent == 0 and not view.require_approval
    assert "<html" in view.rendered.html.lower() and "Tech Matin" in view.rendered.text


def test_each_decision_changes_the_issue_as_asked(app: Pipeline) -> None:
    before = by_part(app)
    lead = before["lead"][0]
    second = before["section:rgpd"][1]
    ai_act = before["section:ai_act"][0]
    (candidate, *_) = app.candidates(DAY)

    view = app.decide(decision("drop", lead))
    assert lead not in [s.story.id for s in view.stories]
    assert app.draft(DAY).stories[0].story.id != lead

    view = app.decide(decision("lead", second, minutes=1))
    assert view.stories[0].part == "lead" and view.stories[0].story.id == second

    view = app.decide(decision("move", ai_act, section="media_partnership", minutes=2))
    moved = next(s for s in view.stories if s.story.id == ai_act)
    assert (moved.part, moved.section, moved.story.primary_topic) == ("section", "media_partnership",
                                                                        "media_partnership")
    assert ai_act not in by_part(app)["section:ai_act"]

    view = app.decide(decision("kicker", second, text="Prospection abusive", minutes=3))
    view = app.decide(decision("summary", second, text="La CNIL frappe fort : l'amende double.", minutes=4))
    lead_story = view.stories[0].story
    assert lead_story.kicker == "PROSPECTION ABUSIVE."
    assert lead_story.text == "La CNIL frappe fort : l’amende double."  # French typography, as every text

    view = app.decide(decision("add", candidate.item.id, section="rgpd", minutes=5))
    added = next(s for s in view.stories if candidate.item.id in s.story.item_ids)
    assert (added.part, added.section) == ("section", "rgpd")
    assert candidate.item.id not in {c.item.id for c in app.candidates(DAY, limit=100)}
    assert [d.action for d in view.decisions] == ["drop", "lead", "move", "kicker", "summary", "add"]
    text = " ".join((app.output_dir / DAY.isoformat() / "digest.txt").read_text(encoding="utf-8").split())
    assert "PROSPECTION ABUSIVE." in text and candidate.item.url in text

    # A later decision on the same story wins: the dropped lead comes back when added, then made the lead.
    with pytest.raises(PipelineError, match="no story of the issue of 2025-05-06 tells it"):
        app.decide(decision("lead", lead, minutes=6))
    assert lead in {c.item.id for c in app.candidates(DAY, limit=100)}
    app.decide(decision("add", lead, minutes=6))
    view = app.decide(decision("lead", lead, minutes=7))
    assert view.stories[0].story.id == lead


def test_bad_decisions_are_refused_with_one_line_and_nothing_stored(app: Pipeline) -> None:
    story = by_part(app)["lead"][0]
    told = {i for s in app.draft(DAY).issue.stories() for i in s.item_ids}
    cases = [
        (decision("drop", "no-such-item"), "unknown item 'no-such-item': no story of the issue of 2025-05-06"),
        (decision("add", "no-such-item"), "unknown item 'no-such-item': not a stored item of the window"),
        (decision("add", next(iter(told))), "is already in the issue of 2025-05-06"),
        (decision("add", app.candidates(DAY)[0].item.id), "has no topic under the rules: say which section"),
        (decision("move", story, section="sports"), "unknown section 'sports'"),
        (decision("move", story), "a move needs the target section"),
        (decision("kicker", story, text="   "), "a kicker decision needs a non-empty text"),
        (decision("summary", story), "a summary decision needs a non-empty text"),
        (decision("retitle", story, text="x"), "unknown editorial action 'retitle'"),
        (EditorialDecision(DAY, "drop", story, " ", T0), "needs the editor's name"),
        (EditorialDecision(dt.date(2025, 5, 9), "drop", story, "Louise", T0), "no issue built for 2025-05-09"),
    ]
    for bad, message in cases:
        with pytest.raises(PipelineError, match=message.replace("(", r"\(")) as caught:
            app.decide(bad)
        assert "\n" not in str(caught.value)
    assert app.store.decisions_for(DAY) == []
    with pytest.raises(PipelineError, match="needs the editor's name"):
        app.approve(DAY, "")


def test_rebuild_reproduces_the_approved_issue_byte_for_byte(demo_copy: Path) -> None:
    archive = demo_copy
    with open_pipeline(archive) as app:
        parts = by_part(app)
        (candidate, *_) = app.candidates(DAY, "meta")
        for made in (decision("drop", parts["section:rgpd"][0]),
                     decision("lead", parts["section:media_partnership"][1], minutes=1),
                     decision("move", parts["section:meta_ai"][0], section="ai_act", minutes=2),
                     decision("kicker", parts["lead"][0], text="L’IA de Meta", minutes=3),
                     decision("summary", parts["section:ai_act"][0], text="Trois lignes directrices.", minutes=4),
                     decision("add", candidate.item.id, section="meta_ai", minutes=5)):
            app.decide(made)
        approval = app.approve(DAY, "Louise Garnier", now=T0 + dt.timedelta(minutes=10))
        assert app.draft(DAY).approved and app.draft(DAY).approval == approval
    issue_dir = archive / "out" / DAY.isoformat()
    approved = {name: (issue_dir / name).read_bytes() for name in ("index.html", "digest.txt")}
    assert b"L\xe2\x80\x99IA DE META." in approved["digest.txt"]
    # The issue's pages removed and its build keys forgotten: the rebuild composes it again from the
    # stored items, rules and decisions, and renders it again.
    shutil.rmtree(issue_dir)
    with sqlite3.connect(archive / "db.sqlite3") as db:
        db.execute("UPDATE issues SET render_key = '', input_key = '', issue_json = '{}' WHERE date = ?",
                   (DAY.isoformat(),))
    db.close()
    code, _out, err = call_cli("rebuild", "--date", DAY.isoformat(), "--config", DEMO, "--db", archive / "db.sqlite3",
                               "--output", archive / "out")
    assert code == 0, err
    assert {name: (issue_dir / name).read_bytes() for name in approved} == approved


def test_a_decision_after_the_approval_needs_a_new_approval(app: Pipeline) -> None:
    parts = by_part(app)
    app.approve(DAY, "Louise", now=T0)
    assert app.approved(DAY)
    app.decide(decision("drop", parts["lead"][0], minutes=1))
    assert not app.approved(DAY) and not app.draft(DAY).approved
    app.approve(DAY, "Victor", now=T0 + dt.timedelta(minutes=2))
    assert app.approved(DAY)


def test_candidates_are_the_window_items_left_out_and_searchable(app: Pipeline) -> None:
    told = {i for s in app.draft(DAY).issue.stories() for i in s.item_ids}
    every = app.candidates(DAY, limit=1000)
    assert every and not told & {c.item.id for c in every}
    window = {i.id for i in app.window_items(DAY)}
    assert {c.item.id for c in every} <= window
    dated = [c.item.published or c.item.first_seen for c in every]
    assert dated == sorted(dated, reverse=True)  # newest first
    assert len(app.candidates(DAY, limit=2)) == 2
    found = app.candidates(DAY, "META")  # case and accents ignored, prefix*: as the archive's search
    assert found and all("meta" in (c.item.title + c.item.summary + c.item.content).lower() for c in found)
    assert {c.item.id for c in app.candidates(DAY, "méta*")} >= {c.item.id for c in found}
    assert app.candidates(DAY, "zzzunknownword") == []
    with pytest.raises(PipelineError, match="has no word to look for"):
        app.candidates(DAY, "!!")


# ---------------------------------------------------------------- drafts in the archive


def test_a_draft_stays_out_of_the_listings_until_approved(tmp_path: Path) -> None:
    archive = tmp_path
    config = demo_config(archive, require_approval=True, approve_by="06:45", on_no_approval="hold")
    # The day before was mailed to its readers (a delivery record): it is published.
    for date in (BEFORE, DAY):
        code, _out, err = call_cli("run", "--date", date.isoformat(), "--config", config,
                                   "--db", archive / "db.sqlite3", "--output", archive / "out")
        assert code == 0, err
        if date == BEFORE:
            with open_store(StoreTarget(archive / "db.sqlite3")) as store:
                store.begin_delivery(BEFORE, "lecteur@example.org", "<1@example.org>", T0)
    with open_pipeline(archive, config) as app:
        mailed = app.draft(BEFORE)
        assert mailed.published and mailed.sent == 1
        view = app.draft(DAY)
        assert view.require_approval and not view.published and not view.approved
        out = archive / "out"
        assert (out / DAY.isoformat() / "index.html").is_file()  # written, unlisted: the desk can preview it
        for page in ("index.html", "feed.xml"):
            assert DAY.isoformat() not in (out / page).read_text(encoding="utf-8")
        assert f"../{DAY.isoformat()}/" not in (out / BEFORE.isoformat() / "index.html").read_text(encoding="utf-8")
        app.approve(DAY, "Louise", now=T0)
        assert app.draft(DAY).published
        for page in ("index.html", "feed.xml"):
            assert DAY.isoformat() in (out / page).read_text(encoding="utf-8")
        assert f"../{DAY.isoformat()}/" in (out / BEFORE.isoformat() / "index.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------- the test send


def test_send_test_mails_the_editor_alone_and_touches_no_delivery(demo_copy: Path, smtp: SmtpServer) -> None:
    archive = demo_copy
    config = demo_config(archive, smtp_port=smtp.port)
    with open_pipeline(archive, config) as app:
        reply = app.send_test(DAY, "louise@techmatin.example.org", env={"TECH_MATIN_UNSUBSCRIBE_SECRET": SECRET})
        assert reply.startswith("250")
        (message,) = smtp.inbox.messages
        assert message.rcpt_tos == ["louise@techmatin.example.org"]
        assert message.parsed()["Subject"].startswith("[TEST] Tech Matin du mardi 6 mai")
        assert app.store.deliveries(DAY) == {}
        with pytest.raises(PipelineError, match="is not an email address"):
            app.send_test(DAY, "louise", env={"TECH_MATIN_UNSUBSCRIBE_SECRET": SECRET})
    with open_store(StoreTarget(archive / "db.sqlite3")) as store:
        assert store.deliveries(DAY) == {}


# ---------------------------------------------------------------- try-rules and the decisions


def threshold_candidate(folder: Path, threshold: str) -> Path:
    text = (REPO / "topics.yaml").read_text(encoding="utf-8")
    assert "\nthreshold: 3\n" in text
    path = folder / f"candidate-{threshold}.yaml"
    path.write_text(text.replace("\nthreshold: 3\n", f"\nthreshold: {threshold}\n"), encoding="utf-8")
    return path


def test_try_rules_tells_which_decisions_a_rule_change_makes_unnecessary(demo_copy: Path, tmp_path: Path,
                                                                        cli) -> None:
    from pipeline.config.topics import load_topics

    # 7: above the scores of some of the demo day's stories (5.3, 6.8), below the others'.
    stricter, looser = threshold_candidate(tmp_path, "7"), threshold_candidate(tmp_path, "1")
    with open_pipeline(demo_copy) as app:
        gains = {c.item.id for c in app.try_rules(load_topics(looser), since=BEFORE, until=DAY).changes if c.added}
        added = next(c for c in app.candidates(DAY, limit=100) if c.item.id in gains and not c.topics)
        losses = {c.item.id for c in app.try_rules(load_topics(stricter), since=BEFORE, until=DAY).changes
                  if not c.after}
        dropped = next(s.story for s in app.draft(DAY).stories[1:] if set(s.story.item_ids) <= losses)
        kept = next(s.story for s in app.draft(DAY).stories[1:] if not set(s.story.item_ids) & losses)
        app.decide(decision("add", added.item.id, section="rgpd"))
        app.decide(decision("drop", dropped.id, minutes=1))
        app.decide(decision("drop", kept.id, minutes=2))  # the stricter rules still tag it: still needed
        app.decide(decision("kicker", app.draft(DAY).stories[0].story.id, text="À la une", minutes=3))

        preview = app.try_rules(load_topics(looser))
        assert [(u.decision.action, u.decision.item_id) for u in preview.unneeded] == [("add", added.item.id)]
        assert preview.unneeded[0].reason.startswith("the candidate rules tag it ")
        preview = app.try_rules(load_topics(stricter))
        assert [(u.decision.action, u.decision.item_id, u.reason) for u in preview.unneeded] == [
            ("drop", dropped.id, "the candidate rules no longer tag it")]
        assert app.try_rules(load_topics(stricter), until=BEFORE).unneeded == ()  # decisions of other dates
    result = cli("try-rules", looser, "--config", DEMO, "--db", demo_copy / "db.sqlite3")
    assert result.code == 0, result.err
    assert (f"2025-05-06  decision add {added.item.id} by Louise Garnier would be unnecessary: the candidate "
            "rules tag it") in result.out
    assert "1 editorial decision(s) would be unnecessary with" in result.out


def test_mailed_dates_are_the_dates_with_a_delivery_record(store) -> None:
    assert store.mailed_dates([DAY, BEFORE]) == set()
    store.begin_delivery(DAY, "lecteur@example.org", "<1@example.org>", T0)
    store.begin_delivery(DAY, "lectrice@example.org", "<2@example.org>", T0)
    assert store.mailed_dates([DAY, BEFORE, DAY]) == {DAY}
    assert store.mailed_dates([]) == set()


def test_delivery_count_counts_an_issues_delivery_records_whatever_their_status(store) -> None:
    assert store.delivery_count(DAY) == 0
    store.queue_deliveries(DAY, [(f"r{n}@example.org", f"<q{n}@example.org>") for n in range(3)], T0)
    store.begin_delivery(DAY, "lecteur@example.org", "<1@example.org>", T0)
    store.finish_delivery(DAY, "lecteur@example.org", DeliveryStatus.FAILED_PERMANENT, "550", T0)
    store.begin_delivery(DAY, "lectrice@example.org", "<2@example.org>", T0)
    store.finish_delivery(DAY, "lectrice@example.org", DeliveryStatus.SENT, "250", T0)
    store.begin_delivery(DAY, "lectrice@example.org", "<2@example.org>", T0)  # the same reader again: one record
    store.begin_delivery(BEFORE, "lecteur@example.org", "<3@example.org>", T0)
    assert store.delivery_count(DAY) == len(store.deliveries(DAY)) == 5
    assert store.delivery_count(BEFORE) == 1 and store.delivery_count(DAY + dt.timedelta(days=1)) == 0


def test_links_step_over_a_held_draft(tmp_path: Path) -> None:
    config = demo_config(tmp_path, require_approval=True, approve_by="06:45")
    first, draft, last = dt.date(2025, 5, 3), BEFORE, DAY
    for date in (first, draft, last):
        code, _out, err = call_cli("run", "--date", date.isoformat(), "--config", config,
                                   "--db", tmp_path / "db.sqlite3", "--output", tmp_path / "out")
        assert code == 0, err
        if date == first:
            with open_store(StoreTarget(tmp_path / "db.sqlite3")) as store:
                store.begin_delivery(first, "lecteur@example.org", "<1@example.org>", T0)
        if date == last:
            with open_pipeline(tmp_path, config) as app:
                app.approve(last, "Louise", now=T0)
    page = (tmp_path / "out" / last.isoformat() / "index.html").read_text(encoding="utf-8")
    assert f"../{first.isoformat()}/index.html" in page and f"../{draft.isoformat()}/" not in page
    page = (tmp_path / "out" / first.isoformat() / "index.html").read_text(encoding="utf-8")
    assert f"../{last.isoformat()}/index.html" in page and f"../{draft.isoformat()}/" not in page
