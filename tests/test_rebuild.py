"""`pipeline rebuild`: no network, byte-identical when nothing changed, new rules applied,
clear errors, atomic pages when interrupted, and only changed pages rewritten.

The archive is the real demo (examples/demo.yaml, bundled feeds read as files) built by
`pipeline run` for a few dates, once per module, then copied into each test's tmp_path."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from pipeline.archive import MANIFEST_NAME, WRITER_THREADS
from pipeline.store import StoreTarget, open_store
from tests.helpers import call_cli

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"
DATES = ("2025-05-03", "2025-05-05", "2025-05-06")  # 2025-05-04 left out: neighbours skip a day


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under `folder`: bytes, mtime in ns and inode."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            info = path.stat()
            found[path.relative_to(folder).as_posix()] = (path.read_bytes(), info.st_mtime_ns, info.st_ino)
    return found


@pytest.fixture(scope="module")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DEMO.is_file():
        pytest.skip("examples/demo.yaml is not present")
    root = tmp_path_factory.mktemp("demo")
    for date in DATES:
        code, _out, err = call_cli("run", "--config", DEMO, "--date", date, "--db", root / "db.sqlite3",
                                   "--output", root / "out")
        assert code == 0, err
    return root


@pytest.fixture
def archive(demo_archive: Path, tmp_path: Path) -> Path:
    """A private copy of the demo archive: db.sqlite3 and out/."""
    root = tmp_path / "archive"
    shutil.copytree(demo_archive, root, ignore=shutil.ignore_patterns("*.lock"))
    return root


def args(root: Path, *extra: str | Path) -> list[str | Path]:
    return [*extra, "--config", DEMO, "--db", root / "db.sqlite3", "--output", root / "out"]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any attempt to open a socket is recorded and fails."""
    attempts: list[str] = []

    class NoSocket(socket.socket):
        def __init__(self, *a: object, **k: object) -> None:
            attempts.append(f"socket{a}")
            raise OSError("network access during a rebuild")

    def refuse(*a: object, **k: object) -> None:
        attempts.append(f"connect{a}")
        raise OSError("network access during a rebuild")

    monkeypatch.setattr(socket, "socket", NoSocket)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_rebuild_opens_no_socket(archive: Path, no_network: list[str]) -> None:
    code, out, err = call_cli("rebuild", *args(archive, "--date", "2025-05-06"))
    assert code == 0, err
    code, out, err = call_cli("rebuild", *args(archive, "--all"))
    assert code == 0, err
    assert "rebuilt 3 issue(s)" in out
    assert no_network == []


def test_the_guard_really_blocks_sockets(no_network: list[str]) -> None:
    # The test above proves something only if the guard catches a connection attempt.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 9))
    assert no_network


def test_rebuild_with_nothing_changed_is_byte_identical_and_touches_no_file(archive: Path) -> None:
    before = snapshot(archive / "out")
    code, out, err = call_cli("rebuild", *args(archive, "--all"))
    assert code == 0, err
    assert snapshot(archive / "out") == before  # same bytes, same mtime, same inode
    assert "rebuilt 3 issue(s)" in out and "0 files rewritten in all" in out


def test_rebuild_after_a_rule_change_reflects_the_new_rules(archive: Path, tmp_path: Path) -> None:
    html = archive / "out" / "2025-05-06" / "index.html"
    assert "MÉDIAS |" in html.read_text(encoding="utf-8")
    media_page_before = (archive / "out" / "topics" / "media_partnership.html").read_bytes()
    other_issue_before = (archive / "out" / "2025-05-03" / "index.html").read_bytes()
    # The same rules, but media partnerships now need an impossible score.
    rules = (REPO / "topics.yaml").read_text(encoding="utf-8")
    marker = '  - id: media_partnership\n    heading: "MÉDIAS"\n'
    assert marker in rules
    topics = tmp_path / "topics.yaml"
    topics.write_text(rules.replace(marker, marker + "    threshold: 1000\n"), encoding="utf-8")

    code, out, err = call_cli("archive", "list", *args(archive, "--topics", topics))
    assert code == 0, err
    assert "rules changed since built: rebuild" in out

    code, out, err = call_cli("rebuild", *args(archive, "--date", "2025-05-06", "--topics", topics))
    assert code == 0, err
    page = html.read_text(encoding="utf-8")
    assert "MÉDIAS |" not in page
    with open_store(StoreTarget(archive / "db.sqlite3")) as store:
        stored = store.issue(dt.date(2025, 5, 6))
        assert stored is not None
        issue = json.loads(stored.issue_json)
        assert all(s.topic != "media_partnership" for s in store.issue_stories(stored.date))
    assert "media_partnership" not in json.dumps(issue["sections"])
    # The listing pages follow; an issue not rebuilt keeps its page.
    assert (archive / "out" / "topics" / "media_partnership.html").read_bytes() != media_page_before
    assert (archive / "out" / "2025-05-03" / "index.html").read_bytes() == other_issue_before
    # Back to the original rules: the original page again, byte for byte.
    code, out, err = call_cli("rebuild", *args(archive, "--date", "2025-05-06"))
    assert code == 0, err
    assert "MÉDIAS |" in html.read_text(encoding="utf-8")


def test_rebuild_of_a_date_without_items_is_a_clear_error(archive: Path) -> None:
    before = snapshot(archive / "out")
    code, _out, err = call_cli("rebuild", *args(archive, "--date", "2024-01-01"))
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("pipeline: error: no stored items for 2024-01-01")
    assert snapshot(archive / "out") == before


def test_rebuild_without_a_database_is_a_clear_error(tmp_path: Path) -> None:
    code, _out, err = call_cli("rebuild", "--all", "--config", DEMO, "--db", tmp_path / "none.sqlite3",
                               "--output", tmp_path / "out")
    assert code == 2
    assert "none.sqlite3: no such database" in err and err.count("\n") == 1
    assert not (tmp_path / "none.sqlite3").exists()


def test_rebuild_of_a_date_with_items_but_no_issue_builds_it_and_links_neighbours(archive: Path) -> None:
    code, _out, err = call_cli("rebuild", *args(archive, "--date", "2025-05-04"))
    assert code == 0, err
    page = (archive / "out" / "2025-05-04" / "index.html").read_text(encoding="utf-8")
    assert 'href="../2025-05-03/index.html"' in page and 'href="../2025-05-05/index.html"' in page
    # The neighbours now point at it.
    assert 'href="../2025-05-04/index.html"' in (archive / "out" / "2025-05-03" / "index.html").read_text("utf-8")
    assert 'href="../2025-05-04/index.html"' in (archive / "out" / "2025-05-05" / "index.html").read_text("utf-8")
    assert "2025-05-04/index.html" in (archive / "out" / "index.html").read_text("utf-8")


def changed_templates(tmp_path: Path) -> Path:
    """A copy of the templates where every issue page and text changes (a visible edit)."""
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    for name in ("issue.html.j2", "issue.txt.j2"):
        path = templates / name
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("Bonjour à toutes et à tous", "Bonjour à toutes et à tous, chers lecteurs"),
                        encoding="utf-8")
    return templates


@pytest.mark.parametrize("fail_at", [1, 2, 4, 6])
def test_an_interrupted_rebuild_leaves_every_page_whole(archive: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, fail_at: int) -> None:
    templates = changed_templates(tmp_path)
    # The expected new version: a full rebuild of a second copy.
    reference = tmp_path / "reference"
    shutil.copytree(archive, reference)
    code, _out, err = call_cli("rebuild", *args(reference, "--all", "--templates", templates))
    assert code == 0, err
    new = {k: v[0] for k, v in snapshot(reference / "out").items()}
    old = {k: v[0] for k, v in snapshot(archive / "out").items()}
    assert sum(new[k] != old.get(k) for k in new) >= 6  # the edit really changes pages

    calls = {"n": 0}
    real_replace = os.replace

    def failing_replace(src: str | Path, dst: str | Path) -> None:
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    code, _out, err = call_cli("rebuild", *args(archive, "--all", "--templates", templates))
    monkeypatch.setattr(os, "replace", real_replace)
    assert code == 1, err  # the disk failed, not the input: RunFailed
    assert "cannot write: No space left on device" in err and err.count("\n") == 1

    after = {k: v[0] for k, v in snapshot(archive / "out").items()}
    leftovers = [k for k in after if k.endswith(".tmp") or ("/." in f"/{k}" and k != MANIFEST_NAME)]
    assert not leftovers, "temporary files left behind"
    for name, data in after.items():
        assert data in (old.get(name), new.get(name)), f"{name} is neither the old nor the new version"
    # The writes before the failure, and those already under way beside it (pages are written by
    # WRITER_THREADS threads): no write starts after it.
    assert fail_at - 1 <= sum(after[k] == new[k] != old.get(k) for k in after) < fail_at - 1 + WRITER_THREADS
    # Running it again finishes the job.
    code, _out, err = call_cli("rebuild", *args(archive, "--all", "--templates", templates))
    assert code == 0, err
    assert {k: v[0] for k, v in snapshot(archive / "out").items()} == new


def test_an_incremental_run_rewrites_only_what_the_new_issue_changes(archive: Path) -> None:
    out_dir = archive / "out"
    before = snapshot(out_dir)
    code, _out, err = call_cli("run", *args(archive, "--date", "2025-05-07"))
    assert code == 0, err
    after = snapshot(out_dir)
    rewritten = {name for name in after if before.get(name) is None or after[name][1:] != before[name][1:]}
    with open_store(StoreTarget(archive / "db.sqlite3")) as store:
        new_topics = {t for s in store.issue_stories(dt.date(2025, 5, 7)) for t in s.topics}
    assert new_topics, "the demo's 2025-05-07 issue has stories"
    expected = {
        "2025-05-07/index.html", "2025-05-07/digest.txt",
        "2025-05-06/index.html",  # its "next issue" link
        "index.html", "feed.xml", "search-index.json",
        *(f"topics/{t}.html" for t in new_topics),
        MANIFEST_NAME,  # it lists the two new files
    }
    assert rewritten == expected
    # An unchanged file kept its bytes, mtime and inode.
    for name in set(before) - expected:
        assert after[name] == before[name]


def test_current_pages_are_not_rendered_again(archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same stored issue, links, settings and templates, pages intact: no render at all."""
    from pipeline.render import Renderer

    rendered: list[object] = []
    original = Renderer.render_issue

    def counting(self: Renderer, *a: object, **k: object):  # type: ignore[no-untyped-def]
        rendered.append(a[0])
        return original(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Renderer, "render_issue", counting)
    code, _out, err = call_cli("rebuild", *args(archive, "--all"))
    assert code == 0, err
    assert rendered == []


def test_a_damaged_page_is_rendered_again(archive: Path) -> None:
    page = archive / "out" / DATES[1] / "index.html"
    good = page.read_bytes()
    page.write_bytes(good[: len(good) // 2])  # e.g. edited or truncated by hand
    code, _out, err = call_cli("rebuild", *args(archive, "--date", DATES[1]))
    assert code == 0, err
    assert page.read_bytes() == good
