"""What a build does not redo: an issue composed from the same inputs (items of its window and
their classification, rules, settings, weights, items featured before) is not composed again,
and pages rendered from the same issue, links and templates are not rendered again, with the
same bytes as a build from scratch. A run whose feeds all answer 304 composes and renders
nothing and loads neither the feed parser, the classifier's engine, jinja2 nor the mail code.
An issue whose stored inputs are unchanged is not even read again (its input key), on each
backend. Real CLI, real demo feeds, real SQLite and PostgreSQL, a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import pipeline.app
from pipeline.app import (
    CLASSIFY_SOURCES,
    CODE_ROOT,
    COMPOSE_SOURCES,
    RENDER_SOURCES,
    BuildResult,
    Pipeline,
    code_fingerprint,
)
from pipeline.archive import MANIFEST_NAME
from pipeline.config import load_config
from pipeline.config.topics import load_topics
from pipeline.errors import RunFailed
from pipeline.models import Item
from pipeline.render import Renderer
from pipeline.store import StoreTarget, open_store
from tests.conftest import CliResult
from tests.helpers import call_cli
from tests.localfeed import RSS
from tests.test_postgres_store import demo_config
from tests.test_rebuild import DATES, DEMO, REPO, changed_templates, snapshot


def demo_archive(root: Path, *extra: str | Path) -> Path:
    for date in DATES:
        code, _out, err = call_cli("run", "--config", DEMO, "--date", date, "--db", root / "db.sqlite3",
                                   "--output", root / "out", *extra)
        assert code == 0, err
    return root


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many issues were composed and rendered (the real functions still run)."""
    import pipeline.compose

    calls = {"composed": 0, "rendered": 0}
    compose, render = pipeline.compose.compose_issue, Renderer.render_issue

    def composing(*args: object, **kwargs: object) -> object:
        calls["composed"] += 1
        return compose(*args, **kwargs)  # type: ignore[arg-type]

    def rendering(self: Renderer, *args: object, **kwargs: object) -> object:
        calls["rendered"] += 1
        return render(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.compose, "compose_issue", composing)
    monkeypatch.setattr(Renderer, "render_issue", rendering)
    return calls


def rebuild(root: Path, *extra: str | Path) -> None:
    code, _out, err = call_cli("rebuild", "--all", "--config", DEMO, "--db", root / "db.sqlite3", "--output",
                               root / "out", *extra)
    assert code == 0, err


def test_unchanged_issues_are_neither_composed_nor_rendered_again(tmp_path: Path, counted: dict[str, int]) -> None:
    root = demo_archive(tmp_path / "archive")
    counted.update(composed=0, rendered=0)
    before = snapshot(root / "out")
    rebuild(root)
    assert counted == {"composed": 0, "rendered": 0}
    assert snapshot(root / "out") == before


def test_a_template_edit_renders_the_stored_issues_as_a_build_from_scratch(tmp_path: Path,
                                                                           counted: dict[str, int]) -> None:
    templates = changed_templates(tmp_path)
    root = demo_archive(tmp_path / "archive")
    counted.update(composed=0, rendered=0)
    rebuild(root, "--templates", templates)
    # The issues were not composed again (only the templates changed), only rendered.
    assert counted == {"composed": 0, "rendered": len(DATES)}
    scratch = demo_archive(tmp_path / "scratch", "--templates", templates)
    pages = {k: v[0] for k, v in snapshot(root / "out").items() if k != MANIFEST_NAME}
    assert "chers lecteurs" in pages[f"{DATES[-1]}/digest.txt"].decode()
    assert pages == {k: v[0] for k, v in snapshot(scratch / "out").items() if k != MANIFEST_NAME}


def test_a_rule_change_composes_every_issue_again(tmp_path: Path, counted: dict[str, int]) -> None:
    root = demo_archive(tmp_path / "archive")
    rules = (REPO / "topics.yaml").read_text(encoding="utf-8")
    marker = '  - id: media_partnership\n    heading: "MÉDIAS"\n'
    assert marker in rules
    topics = tmp_path / "topics.yaml"
    topics.write_text(rules.replace(marker, marker + "    threshold: 1000\n"), encoding="utf-8")
    counted.update(composed=0, rendered=0)
    rebuild(root, "--topics", topics)
    assert counted["composed"] == len(DATES)


# ---------------------------------------------------------------- an issue whose inputs are unchanged


@pytest.fixture
def items_read(monkeypatch: pytest.MonkeyPatch) -> list[dt.date]:
    """The dates whose window's items a build read (the real method still runs)."""
    read: list[dt.date] = []
    window_items = Pipeline.window_items

    def reading(self: Pipeline, date: dt.date) -> list[Item]:
        read.append(date)
        return window_items(self, date)

    monkeypatch.setattr(Pipeline, "window_items", reading)
    return read


def demo_pipeline(store_target: StoreTarget, output: Path, templates: Path | None = None) -> Pipeline:
    return Pipeline(load_config(DEMO), load_topics(REPO / "topics.yaml"), store=store_target, output_dir=output,
                    templates_dir=templates)


def test_only_an_issue_whose_stored_inputs_changed_reads_its_items_again(store_target: StoreTarget, tmp_path: Path,
                                                                         items_read: list[dt.date]) -> None:
    """On each backend: the input key stored with each issue (its window's item digests, the
    editors' decisions, rules, settings) lets a build take an unchanged issue without reading its
    items; an edited item recomposes its issue, an edited template renders every issue again."""
    dates = [dt.date.fromisoformat(d) for d in DATES]
    out = tmp_path / "out"
    with demo_pipeline(store_target, out) as app:
        for date in dates:
            app.run(date)
        assert items_read == dates
        items_read.clear()
        before = snapshot(out)
        app.rebuild(None)
        assert items_read == []
        assert snapshot(out) == before
        # An item of the last issue edited at its source and stored again: that issue alone is read and shows it.
        last = app.store.issue(dates[-1])
        assert last is not None
        featured = next(i for i in app.window_items(dates[-1]) if i.id in last.issue_json)
        app.store.upsert_items([dataclasses.replace(featured, title="Titre corrigé à la source")])
        items_read.clear()
        results = app.rebuild(None)
        assert items_read == [dates[-1]]
        assert [r.date for r in results if r.changed_files] == [dates[-1]]
        stored = app.store.issue(dates[-1])
        assert stored is not None and "Titre corrigé à la source" in stored.issue_json
        assert stored.input_key != last.input_key
    # A template edit: every issue rendered again, none composed again nor its items read.
    with demo_pipeline(store_target, out, changed_templates(tmp_path)) as edited:
        items_read.clear()
        results = edited.rebuild(None)
        assert items_read == []
        assert all(r.changed_files for r in results)
        assert "chers lecteurs" in (out / DATES[-1] / "digest.txt").read_text(encoding="utf-8")


def copied_code(tmp_path: Path) -> Path:
    """A copy of the pipeline package's source, to edit: what an upgrade of the program looks like
    to the keys (the code that runs stays the installed one)."""
    code = tmp_path / "code"
    shutil.copytree(Path(pipeline.app.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
    return code


def edited(code: Path, module: str) -> None:
    path = code / module
    path.write_text(path.read_text(encoding="utf-8") + "\n# upgraded\n", encoding="utf-8")
    code_fingerprint.cache_clear()  # read once per process: the upgraded program's next process reads it again


def test_an_upgraded_program_classifies_composes_and_renders_again(store_target: StoreTarget, tmp_path: Path,
                                                                      items_read: list[dt.date],
                                                                      counted: dict[str, int]) -> None:
    """On each backend: stored classifications and issues are keyed by the source of the code
    that made them, not only by the rules (the version number does not move). The same source
    elsewhere changes nothing; an edited engine makes every stored classification stale and
    every issue composed again, once; an edited compose recomposes the issues and keeps the
    classifications; an edited renderer renders the stored issues again without composing them."""
    dates = [dt.date.fromisoformat(d) for d in DATES]
    out = tmp_path / "out"
    with demo_pipeline(store_target, out) as app:
        for date in dates:
            app.run(date)
        ids = [i.id for date in dates for i in app.window_items(date)]
        old_key = app.classification_key
        assert set(app.store.classifications(ids, old_key)) == set(ids)
    code = copied_code(tmp_path)
    before = snapshot(out)
    with Pipeline(load_config(DEMO), load_topics(REPO / "topics.yaml"), store=store_target, output_dir=out,
                  code_root=code) as same:
        assert same.classification_key == old_key
        items_read.clear()
        counted.update(composed=0, rendered=0)
        same.rebuild(None)
        assert (items_read, counted) == ([], {"composed": 0, "rendered": 0})
    assert snapshot(out) == before
    edited(code, "classify/engine.py")
    with Pipeline(load_config(DEMO), load_topics(REPO / "topics.yaml"), store=store_target, output_dir=out,
                  code_root=code) as upgraded:
        assert upgraded.topics.fingerprint == app.topics.fingerprint  # the rules did not change
        assert upgraded.classification_key != old_key
        assert upgraded.store.classifications(ids, upgraded.classification_key) == {}  # stale
        items_read.clear()
        counted.update(composed=0, rendered=0)
        upgraded.rebuild(None)
        assert items_read == dates
        assert counted["composed"] == len(dates)
        assert set(upgraded.store.classifications(ids, upgraded.classification_key)) == set(ids)
        # Once: the next rebuild of the upgraded program skips everything again.
        items_read.clear()
        counted.update(composed=0, rendered=0)
        upgraded.rebuild(None)
        assert (items_read, counted) == ([], {"composed": 0, "rendered": 0})
        new_key = upgraded.classification_key
    # The same code made the same pages: only the records' keys changed.
    assert {k: v[0] for k, v in snapshot(out).items() if k != MANIFEST_NAME} == \
        {k: v[0] for k, v in before.items() if k != MANIFEST_NAME}
    edited(code, "compose.py")
    with Pipeline(load_config(DEMO), load_topics(REPO / "topics.yaml"), store=store_target, output_dir=out,
                  code_root=code) as recomposed:
        assert recomposed.classification_key == new_key  # compose does not classify
        items_read.clear()
        counted.update(composed=0, rendered=0)
        recomposed.rebuild(None)
        assert items_read == dates
        assert counted["composed"] == len(dates)
    edited(code, "render.py")
    with Pipeline(load_config(DEMO), load_topics(REPO / "topics.yaml"), store=store_target, output_dir=out,
                  code_root=code) as rendered:
        items_read.clear()
        counted.update(composed=0, rendered=0)
        rendered.rebuild(None)
        # The pages rendered again by the new renderer, the issues neither read nor composed.
        assert (items_read, counted) == ([], {"composed": 0, "rendered": len(dates)})


def test_the_code_fingerprints_cover_the_modules_that_decide_each_result(tmp_path: Path) -> None:
    code = copied_code(tmp_path)
    classify, compose = code_fingerprint(code, CLASSIFY_SOURCES), code_fingerprint(code, COMPOSE_SOURCES)
    assert (classify, compose) == (code_fingerprint(CODE_ROOT, CLASSIFY_SOURCES),
                                   code_fingerprint(CODE_ROOT, COMPOSE_SOURCES))
    render = code_fingerprint(code, RENDER_SOURCES)
    edited(code, "render.py")
    assert (code_fingerprint(code, CLASSIFY_SOURCES), code_fingerprint(code, COMPOSE_SOURCES)) == (classify, compose)
    assert code_fingerprint(code, RENDER_SOURCES) != render
    for module in ("classify/normalize.py", "text.py", "store/codec.py"):
        edited(code, module)
        changed = code_fingerprint(code, COMPOSE_SOURCES)
        assert changed != compose
        compose = changed
    (code / "classify" / "extra.py").write_text("X = 1\n", encoding="utf-8")  # a new module of the engine
    code_fingerprint.cache_clear()
    assert code_fingerprint(code, CLASSIFY_SOURCES) != classify


def copied_program(tmp_path: Path) -> Path:
    """A checkout of the program to upgrade: its package and templates, where `python -m pipeline`
    run from the returned folder imports this copy, not the installed package."""
    program = tmp_path / "program"
    shutil.copytree(Path(pipeline.app.__file__).parent, program / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "templates", program / "templates")
    return program


def listed(result: CliResult) -> list[str]:
    """The notes of `pipeline archive list`, one per issue listed (oldest first)."""
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == len(DATES), result.out
    return [line.partition(" stories")[2].strip() for line in reversed(lines)]


def test_archive_list_says_which_issues_an_upgraded_program_would_build_otherwise(
        store_target: StoreTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, run_cli) -> None:
    """On each backend, through the real command: the store keeps the fingerprint of the code
    each issue was built by, and `pipeline archive list` of an upgraded program (a copy of the
    package with its renderer edited, run as its own process) marks every issue "code changed",
    with the rules too when they changed as well, until the upgraded program rebuilds them; the
    same program elsewhere (an unedited copy) marks none."""
    root = tmp_path / "archive"
    if store_target.backend == "postgresql":
        assert store_target.dsn is not None
        root.mkdir()
        config = demo_config(root)
        monkeypatch.setenv("TECH_MATIN_DATABASE_URL", store_target.dsn)  # inherited by the upgraded program's process
    else:
        config = DEMO
    args = ("--config", config, "--topics", REPO / "topics.yaml", "--db", root / "db.sqlite3", "--output", root / "out")
    for date in DATES:
        result = cli("run", *args, "--date", date)
        assert result.code == 0, result.err
    program = copied_program(tmp_path)
    assert listed(cli("archive", "list", *args)) == [""] * len(DATES)
    assert listed(run_cli("archive", "list", *args, cwd=program)) == [""] * len(DATES)
    edited(program / "pipeline", "render.py")
    code_changed = ["(code changed since built: rebuild)"] * len(DATES)
    assert listed(run_cli("archive", "list", *args, cwd=program)) == code_changed
    rules = (REPO / "topics.yaml").read_text(encoding="utf-8")
    marker = '  - id: media_partnership\n    heading: "MÉDIAS"\n'
    assert marker in rules
    topics = tmp_path / "topics.yaml"
    topics.write_text(rules.replace(marker, marker + "    threshold: 1000\n"), encoding="utf-8")
    assert listed(run_cli("archive", "list", *args, "--topics", topics, cwd=program)) == \
        ["(rules and code changed since built: rebuild)"] * len(DATES)
    rebuilt = run_cli("rebuild", "--all", *args, cwd=program)
    assert rebuilt.code == 0, rebuilt.err
    assert listed(run_cli("archive", "list", *args, cwd=program)) == [""] * len(DATES)
    # The store now holds the upgraded program's fingerprint: to the installed one, the code changed.
    assert listed(cli("archive", "list", *args)) == code_changed


# ---------------------------------------------------------------- a run where every feed answers 304

ETAG = '"v1"'


class _Feed(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.headers.get("If-None-Match") == ETAG:
            self.send_response(304)
            self.send_header("ETag", ETAG)
            self.end_headers()
            return
        body = RSS.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("ETag", ETAG)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def feed_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Feed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/feed.xml"
    server.shutdown()
    server.server_close()


HEAVY = ("feedparser", "pipeline.parse", "pebble", "pipeline.classify.engine", "jinja2", "css_inline",
         "pipeline.deliver")


def test_a_run_whose_feeds_all_answer_304_composes_renders_and_loads_nothing(tmp_path: Path, feed_url: str) -> None:
    config = tmp_path / "sources.yaml"
    config.write_text("storage:\n  db: data/archive.sqlite3\n  output: out\n"
                      f"feeds:\n  - {{id: exemple, name: Exemple, url: '{feed_url}'}}\n", encoding="utf-8")
    command = ["-m", "pipeline", "run", "--config", str(config), "--topics", str(REPO / "topics.yaml"),
               "--date", "2025-05-06"]

    def run(*options: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, *options, *command], capture_output=True, text=True, cwd=tmp_path,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done

    first = run()
    assert "1 new items, 1 stories" in first.stdout
    pages = {name: hashlib.sha256(path.read_bytes()).hexdigest()
             for name, path in ((p.relative_to(tmp_path).as_posix(), p) for p in (tmp_path / "out").rglob("*"))
             if path.is_file()}
    second = run("-X", "importtime")
    assert "1 feeds read, 0 failed, 0 new items, 1 stories" in second.stdout
    # Every import of the process is on stderr, one line each: "import time: self | cumulative | name".
    loaded = {line.rsplit("|", 1)[1].strip() for line in second.stderr.splitlines() if line.startswith("import time:")}
    assert "pipeline.app" in loaded and "httpx" in loaded  # the listing is real
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert {name: hashlib.sha256(path.read_bytes()).hexdigest()
            for name, path in ((p.relative_to(tmp_path).as_posix(), p) for p in (tmp_path / "out").rglob("*"))
            if path.is_file()} == pages
    shutil.rmtree(tmp_path / "out" / "2025-05-06")  # a page gone: the next run of 304s writes it again
    third = run()
    assert "0 new items, 1 stories" in third.stdout and (tmp_path / "out" / "2025-05-06" / "index.html").is_file()


# ---------------------------------------------------------------- pages rendered on several processes


def pooled_rebuild(root: Path, templates: Path, topics: Path = REPO / "topics.yaml") -> list[BuildResult]:
    """`rebuild --all` with the pages rendered by two processes (a rebuild of many issues does so)."""
    with Pipeline.from_files(DEMO, topics, db=root / "db.sqlite3", output=root / "out", templates=templates) as app:
        app.render_workers = 2
        return app.rebuild(None)


def test_pages_rendered_on_several_processes_are_those_of_a_build_from_scratch(tmp_path: Path,
                                                                               counted: dict[str, int]) -> None:
    templates = changed_templates(tmp_path)
    root = demo_archive(tmp_path / "archive")
    results = pooled_rebuild(root, templates)
    assert [r.date.isoformat() for r in results] == list(DATES)
    assert all(any(p.name == "index.html" and p.parent.name == r.date.isoformat() for p in r.changed_files)
               for r in results)  # each result names its own pages
    scratch = demo_archive(tmp_path / "scratch", "--templates", templates)
    assert ({k: v[0] for k, v in snapshot(root / "out").items() if k != MANIFEST_NAME}
            == {k: v[0] for k, v in snapshot(scratch / "out").items() if k != MANIFEST_NAME})
    # The records say so: the next rebuild with these templates renders nothing.
    counted.update(composed=0, rendered=0)
    before = snapshot(root / "out")
    rebuild(root, "--templates", templates)
    assert counted == {"composed": 0, "rendered": 0} and snapshot(root / "out") == before


def test_render_processes_follow_a_second_edit_of_the_same_templates_folder(tmp_path: Path) -> None:
    """The render processes keep the compiled templates per folder and fingerprint: an edit of the
    same folder is rendered, not the templates compiled before it."""
    templates = changed_templates(tmp_path)
    root = demo_archive(tmp_path / "archive")
    pooled_rebuild(root, templates)
    page = templates / "issue.txt.j2"
    page.write_text(page.read_text(encoding="utf-8").replace("chers lecteurs", "chères lectrices"), encoding="utf-8")
    pooled_rebuild(root, templates)
    text = (root / "out" / DATES[-1] / "digest.txt").read_text(encoding="utf-8")
    assert "chères lectrices" in text and "chers lecteurs" not in text


def test_a_rule_change_rebuilt_on_several_processes_gives_the_bytes_and_records_of_one(tmp_path: Path) -> None:
    rules = (REPO / "topics.yaml").read_text(encoding="utf-8")
    marker = '  - id: media_partnership\n    heading: "MÉDIAS"\n'
    topics = tmp_path / "topics.yaml"
    topics.write_text(rules.replace(marker, marker + "    threshold: 1000\n"), encoding="utf-8")
    templates = changed_templates(tmp_path)
    roots = {workers: demo_archive(tmp_path / f"archive-{workers}") for workers in (1, 2)}
    for workers, root in roots.items():
        with Pipeline.from_files(DEMO, topics, db=root / "db.sqlite3", output=root / "out",
                                 templates=templates) as app:
            app.render_workers = workers
            app.rebuild(None)
    one, two = ({k: v[0] for k, v in snapshot(roots[w] / "out").items()} for w in (1, 2))
    assert one == two
    records = {}
    for workers, root in roots.items():
        with open_store(StoreTarget(root / "db.sqlite3")) as store:
            records[workers] = [(s.issue_json, s.html_sha256, s.text_sha256, s.render_key, s.rules_fingerprint,
                                 s.templates_fingerprint) for s in store.issues()]
    assert records[1] == records[2]


def test_a_page_that_fails_to_render_in_a_render_process_fails_the_rebuild_in_one_line(tmp_path: Path) -> None:
    templates = changed_templates(tmp_path)
    page = templates / "issue.txt.j2"
    page.write_text(page.read_text(encoding="utf-8") + "{{ no_such_value }}\n", encoding="utf-8")
    root = demo_archive(tmp_path / "archive")
    with pytest.raises(RunFailed) as failed:
        pooled_rebuild(root, templates)
    message = str(failed.value)
    assert message.startswith(f"the issue of {DATES[0]} could not be rendered: ") and "no_such_value" in message
    assert "\n" not in message
    with open_store(StoreTarget(root / "db.sqlite3")) as store:  # no rebuild left "running"
        rebuilds = [r for r in store.runs(limit=100) if r.kind == "rebuild"]
        assert rebuilds and all(r.status == "failed" for r in rebuilds)
        assert store.failed_runs("rebuild", dt.date.fromisoformat(DATES[0]))


def test_a_listing_page_that_fails_to_render_in_a_render_process_fails_the_rebuild_in_one_line(
        tmp_path: Path) -> None:
    templates = changed_templates(tmp_path)
    page = templates / "topic.html.j2"
    page.write_text(page.read_text(encoding="utf-8") + "{{ no_such_value }}\n", encoding="utf-8")
    root = demo_archive(tmp_path / "archive")
    with pytest.raises(RunFailed) as failed:
        pooled_rebuild(root, templates)
    message = str(failed.value)
    assert message.startswith("topic.html.j2: the page could not be rendered: ") and "no_such_value" in message
    assert "\n" not in message
