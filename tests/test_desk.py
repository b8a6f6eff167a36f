"""`pipeline desk` as a real server process on 127.0.0.1: readers' one-click unsubscribe, the
editor's login, CSRF, security headers, rate limits.

The demo issue of 2025-05-06 is built once by the real pipeline; each test that changes the
store works on its own copy and starts its own desk (`python -m pipeline desk --port 0`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import time_machine
import yaml
from itsdangerous import URLSafeTimedSerializer
from smtpserver import SmtpServer

from pipeline.config import load_config
from pipeline.desk.security import SESSION_COOKIE, Session, SessionSigner, TokenBucket
from pipeline.store import StoreTarget, issue_from_json, open_store
from tests.helpers import call_cli, free_port

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"
TOPICS = REPO / "topics.yaml"
DATE = dt.date(2025, 5, 6)
SECRET = "unsubscribe-key-for-tests-of-32-bytes-or-more"
TOKEN = "desk-token-for-the-tests-0123456789abcdef"
PUBLIC = "https://techmatin.example.org"
# A limit for failure only (httpx's default is 5 s): an editor's decision builds the issue again.
HTTP_SECONDS = 120.0
READERS = ["jeanne.morel@example.org", "idriss@example.net", "camille.roux@example.com"]

pytestmark = pytest.mark.skipif(not DEMO.is_file(), reason="examples/demo.yaml is not there")


# ---------------------------------------------------------------- a built demo and a desk


@dataclasses.dataclass
class Site:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "sources.yaml"

    @property
    def db(self) -> Path:
        return self.root / "db.sqlite3"

    @property
    def output(self) -> Path:
        return self.root / "out"

    def args(self, *extra: str) -> list[str]:
        # storage.output of the config is out/ beside it; send takes no --output.
        return ["--config", str(self.config), "--topics", str(TOPICS), "--db", str(self.db), *extra]

    def configure(self, smtp_port: int = 25) -> None:
        config = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
        for feed in config["feeds"]:
            feed["url"] = str(DEMO.parent / feed["url"])
        config["storage"] = {"db": self.db.name, "output": self.output.name}
        config["delivery"] = {
            "from_address": "lettre@techmatin.example.org", "smtp_host": "127.0.0.1", "smtp_port": smtp_port,
            "security": "none", "recipients": "recipients.csv", "rate": 0, "max_retries": 0, "timeout": 10,
            "unsubscribe_url": f"{PUBLIC}/desinscription?email={{email}}&token={{token}}",
        }
        self.config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        (self.root / "recipients.csv").write_text("email,name,topics\n" + "".join(f"{r},,\n" for r in READERS),
                                                  encoding="utf-8")

    def suppressions(self) -> dict[str, Any]:
        with open_store(StoreTarget(self.db)) as store:
            return store.suppressions()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Site:
    site = Site(tmp_path_factory.mktemp("desk-built"))
    site.configure()
    code, _, err = call_cli("run", *site.args("--date", DATE.isoformat()))
    assert code == 0, err
    return site


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' secrets in the environment, and no developer's SMTP credentials."""
    monkeypatch.setenv("TECH_MATIN_UNSUBSCRIBE_SECRET", SECRET)
    monkeypatch.setenv("TECH_MATIN_DESK_TOKEN", TOKEN)
    for name in ("TECH_MATIN_SMTP_USER", "TECH_MATIN_SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def site(built: Site, tmp_path: Path, secrets_env: None) -> Site:
    """A copy of the built demo, with the secrets of the tests in the environment."""
    copy = Site(tmp_path)
    shutil.copytree(built.root, tmp_path, dirs_exist_ok=True)
    copy.configure()
    return copy


@pytest.fixture
def config_site(tmp_path: Path, secrets_env: None) -> Site:
    """The demo's config with a delivery section and no store yet: for what stops before the
    store is opened, or builds its own."""
    site = Site(tmp_path)
    site.configure()
    return site


class Desk:
    """`python -m pipeline desk --port 0` in its own process; `url` once it listens."""

    def __init__(self, site: Site, args: list[str] | None = None):
        env = {**os.environ, "TECH_MATIN_DESK_TOKEN": TOKEN, "TECH_MATIN_UNSUBSCRIBE_SECRET": SECRET}
        args = site.args() if args is None else args
        self.process = subprocess.Popen([sys.executable, "-m", "pipeline", "desk", *args, "--port", "0"],
                                        cwd=site.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.lines: list[str] = []
        first: list[str] = []
        ready = threading.Event()

        def read_stdout() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                if not first:
                    first.append(line)
                    ready.set()
            ready.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        # A limit for failure only: the desk listens as soon as its config is read.
        if not ready.wait(60) or not first:
            self.stop()
            raise AssertionError(f"the desk did not start: {self.stderr()}")
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", first[0])
        assert match, first[0]
        self.url = f"http://127.0.0.1:{match.group(1)}"

    def stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def desk(site: Site) -> Iterator[Desk]:
    server = Desk(site)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared(built: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Desk]]:
    """One desk for the tests that change nothing (each checks so): its rate limits have room
    for all of them (about 12 reader requests of 20, 3 logins of 10)."""
    root = tmp_path_factory.mktemp("desk-shared")
    copy = Site(root)
    shutil.copytree(built.root, root, dirs_exist_ok=True)
    copy.configure()
    server = Desk(copy)
    try:
        yield copy, server
    finally:
        server.stop()


def login(client: httpx.Client, desk: Desk, name: str = "Camille Roux") -> str:
    """Log in as an editor would; returns the session's CSRF token."""
    page = client.get(f"{desk.url}/connexion")
    csrf = csrf_of(page.text)
    answer = client.post(f"{desk.url}/connexion", data={"csrf": csrf, "nom": name, "jeton": TOKEN})
    assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
    return csrf_of(client.get(f"{desk.url}/").text)


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


# ---------------------------------------------------------------- start-up


@pytest.mark.parametrize(("token", "message"), [
    (None, "environment variable TECH_MATIN_DESK_TOKEN is not set"),
    ("too-short", "environment variable TECH_MATIN_DESK_TOKEN holds 9 bytes; the desk's token needs at least 32"),
])
def test_the_desk_refuses_to_start_without_a_long_enough_token(config_site: Site, monkeypatch: pytest.MonkeyPatch,
                                                               token: str | None, message: str) -> None:
    site = config_site
    if token is None:
        monkeypatch.delenv("TECH_MATIN_DESK_TOKEN")
    else:
        monkeypatch.setenv("TECH_MATIN_DESK_TOKEN", token)
    code, out, err = call_cli("desk", *site.args())
    assert code == 2 and out == ""
    assert err.startswith(f"pipeline: error: {message}") and err.count("\n") == 1, err


def test_the_desk_refuses_to_start_without_the_unsubscribe_secret(config_site: Site, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    site = config_site
    monkeypatch.delenv("TECH_MATIN_UNSUBSCRIBE_SECRET")
    code, _, err = call_cli("desk", *site.args())
    assert code == 2 and "TECH_MATIN_UNSUBSCRIBE_SECRET is not set" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(("extra", "message"), [
    (["--port", "70000"], "argument --port: must be from 0 to 65535, got 70000"),
    (["--port", "x"], "argument --port: invalid number 'x'"),
    (["--host", "256.0.0.1"], "cannot listen on 256.0.0.1:0"),
])
def test_bad_host_or_port_is_one_line(config_site: Site, extra: list[str], message: str) -> None:
    site = config_site
    code, _, err = call_cli("desk", *site.args("--port", "0", *extra))
    assert code == 2 and message in err and err.count("\n") == 1, err


# ---------------------------------------------------------------- readers' one-click unsubscribe


def unsubscribe_url_of(eml: Path) -> str:
    message = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    https = [u.strip(" <>") for u in str(message["List-Unsubscribe"]).split(",") if "https:" in u]
    assert len(https) == 1
    return https[0]


def test_one_click_unsubscribe_as_a_mail_client_sends_it_then_send_skips_the_reader(
        site: Site, desk: Desk, smtp: SmtpServer, tmp_path: Path) -> None:
    site.configure(smtp.port)
    # The message the reader has: its List-Unsubscribe header, as a dry run writes it.
    code, _, err = call_cli("send", *site.args("--date", DATE.isoformat(), "--dry-run",
                                               "--outbox", str(tmp_path / "o")))
    assert code == 0, err
    reader = READERS[1]
    [eml] = (tmp_path / "o" / DATE.isoformat()).glob(f"*{reader.split('@')[0]}*.eml")
    advertised = unsubscribe_url_of(eml)
    assert advertised.startswith(f"{PUBLIC}/desinscription?")
    # The reverse proxy maps the public https origin onto the desk, path and query unchanged.
    url = desk.url + advertised.removeprefix(PUBLIC)

    with httpx.Client(timeout=HTTP_SECONDS) as client:
        page = client.get(url)  # what a reader's click shows: a confirmation, nothing done yet
        assert page.status_code == 200 and 'lang="fr"' in page.text
        assert "Confirmer la désinscription" in page.text and reader in page.text
        assert 'name="List-Unsubscribe" value="One-Click"' in page.text
        assert "set-cookie" not in page.headers
        assert site.suppressions() == {}

        # RFC 8058: a POST to the https URI, body `List-Unsubscribe=One-Click`, form-encoded, no cookie.
        done = client.post(url, data={"List-Unsubscribe": "One-Click"})
        assert done.request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert done.status_code == 200 and "C’est fait" in done.text
        suppressed = site.suppressions()
        assert list(suppressed) == [reader] and suppressed[reader].reason == "unsubscribed"

        again = client.post(url, data={"List-Unsubscribe": "One-Click"})  # a reused link
        assert again.status_code == 200 and "déjà désinscrite" in again.text
        assert site.suppressions() == suppressed

    desk.stop()  # its log: one line per request, never the query (the reader's address and token)
    log = desk.stderr()
    assert "POST /desinscription 200" in log and "token" not in log and reader not in log, log
    code, out, err = call_cli("send", *site.args("--date", DATE.isoformat()))
    assert code == 0, err
    assert "2 sent" in out and "1 suppressed" in out, out
    received = sorted(m.rcpt_tos[0] for m in smtp.inbox.messages)
    assert received == sorted(r for r in READERS if r != reader)


def test_a_forged_or_missing_token_changes_nothing(shared: tuple[Site, Desk]) -> None:
    site, desk = shared
    victim = READERS[0]
    base = f"{desk.url}/desinscription"
    with httpx.Client(timeout=HTTP_SECONDS) as client:
        for params in ({"email": victim, "token": "0" * 32}, {"email": victim, "token": ""}, {"email": victim},
                       {"email": READERS[1], "token": "f" * 32}, {}):
            for method in ("GET", "POST"):
                answer = client.request(method, base, params=params, data={"List-Unsubscribe": "One-Click"}
                                        if method == "POST" else None)
                assert answer.status_code == 403, (method, params)
                assert "non valide" in answer.text and "rien n’a été changé" in answer.text
        # A right token without the one-click body: refused too.
        from pipeline.deliver import unsubscribe_token

        answer = client.post(base, params={"email": victim, "token": unsubscribe_token(SECRET, victim)},
                             data={"autre": "chose"})
        assert answer.status_code == 400 and "rien n’a été changé" in answer.text
    assert site.suppressions() == {}


def test_the_readers_endpoint_is_rate_limited_per_client(site: Site, desk: Desk) -> None:
    statuses = []
    with httpx.Client(timeout=HTTP_SECONDS) as client:
        for _ in range(60):  # 20 at once, then 20 a minute: 60 in well under two minutes hit the limit
            answer = client.get(f"{desk.url}/desinscription", params={"email": READERS[0], "token": "0" * 32})
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert int(answer.headers["retry-after"]) >= 1 and "Trop de demandes" in answer.text
                break
    assert statuses[:20] == [403] * 20 and statuses[-1] == 429


# ---------------------------------------------------------------- the editor's side


def editorial_state(site: Site) -> tuple[Any, ...]:
    """What an editor's request could change: decisions, approval, deliveries, the issue as stored."""
    with open_store(StoreTarget(site.db)) as store:
        stored = store.issue(DATE)
        return (store.decisions_for(DATE), store.approval_of(DATE), store.deliveries(DATE),
                stored.issue_json if stored else None)


def story_ids(page: str) -> list[str]:
    return re.findall(r'data-item="([^"]+)"', page)


def test_an_unauthenticated_editor_request_is_refused(shared: tuple[Site, Desk]) -> None:
    site, desk = shared
    before = editorial_state(site)
    with httpx.Client(timeout=HTTP_SECONDS) as client:
        home = client.get(f"{desk.url}/")
        assert home.status_code == 303 and home.headers["location"] == "/connexion"
        for path in (f"/brouillon/{DATE}", f"/brouillon/{DATE}/apercu"):
            assert client.get(f"{desk.url}{path}").status_code == 303
        refused = client.post(f"{desk.url}/deconnexion", data={"csrf": "x"})
        assert refused.status_code == 403 and "Connexion requise" in refused.text
        # A visitor's own session and CSRF token are not an editor's: still refused.
        csrf = csrf_of(client.get(f"{desk.url}/connexion").text)
        assert editorial_state(site)[3] is not None
        for path, data in ((f"/brouillon/{DATE}/decision", {"action": "drop", "item": "x"}),
                           (f"/brouillon/{DATE}/approuver", {}), (f"/brouillon/{DATE}/essai", {"adresse": "a@b.fr"})):
            answer = client.post(f"{desk.url}{path}", data={"csrf": csrf, **data})
            assert answer.status_code == 403 and "Connexion requise" in answer.text, path
        wrong = client.get(f"{desk.url}/connexion")
        answer = client.post(f"{desk.url}/connexion", data={"csrf": csrf_of(wrong.text), "nom": "Intrus",
                                                            "jeton": TOKEN[:-1] + "x"})
        assert answer.status_code == 401 and "Jeton incorrect" in answer.text
        assert client.get(f"{desk.url}/").status_code == 303
    assert editorial_state(site) == before


def test_logins_are_rate_limited_per_client(site: Site, desk: Desk) -> None:
    statuses = []
    with httpx.Client(timeout=HTTP_SECONDS) as client:
        csrf = csrf_of(client.get(f"{desk.url}/connexion").text)
        for _ in range(40):  # 10 at once, then 5 a minute: 40 in well under six minutes hit the limit
            answer = client.post(f"{desk.url}/connexion", data={"csrf": csrf, "nom": "Intrus", "jeton": "devine"})
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                break
        assert statuses[:10] == [401] * 10 and statuses[-1] == 429


def test_login_sets_a_strict_http_only_cookie_and_every_post_needs_the_csrf_token(shared: tuple[Site, Desk]) -> None:
    site, desk = shared
    with httpx.Client(timeout=HTTP_SECONDS) as client:
        first = client.get(f"{desk.url}/connexion")
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        # The login form itself is CSRF-protected: a post without the session's token is refused.
        answer = client.post(f"{desk.url}/connexion", data={"nom": "Camille", "jeton": TOKEN})
        assert answer.status_code == 403 and client.get(f"{desk.url}/").status_code == 303
        csrf = login(client, desk)
        home = client.get(f"{desk.url}/")
        assert home.status_code == 200 and "Camille Roux" in home.text and "mardi 6 mai 2025" in home.text
        assert csrf != csrf_of(first.text), "a new CSRF token at login"
        for data in ({}, {"csrf": ""}, {"csrf": csrf[:-2] + "xx"}):
            refused = client.post(f"{desk.url}/deconnexion", data=data)
            assert refused.status_code == 403 and "Formulaire refusé" in refused.text
        before = editorial_state(site)
        item = story_ids(client.get(f"{desk.url}/brouillon/{DATE}").text)[0]
        for path, data in ((f"/brouillon/{DATE}/decision", {"action": "drop", "item": item}),
                           (f"/brouillon/{DATE}/approuver", {})):
            refused = client.post(f"{desk.url}{path}", data=data)  # logged in, but no CSRF token
            assert refused.status_code == 403 and "Formulaire refusé" in refused.text
        assert editorial_state(site) == before
        assert client.get(f"{desk.url}/").status_code == 200, "still logged in"
        out = client.post(f"{desk.url}/deconnexion", data={"csrf": csrf})
        assert out.status_code == 303 and client.get(f"{desk.url}/").status_code == 303


def test_the_desk_refuses_a_tampered_foreign_or_expired_session_cookie(shared: tuple[Site, Desk]) -> None:
    """The running desk reads only the cookies it signed in the last 12 hours: a session the
    test signs with the desk's token opens the editor's pages, the same altered, signed with
    another token or 13 hours old is a visitor's (sent to the login page, refused on POST)."""
    site, desk = shared
    signer = SessionSigner(TOKEN)
    editor = Session(csrf="csrf-of-the-test", editor="Camille Roux", at=signer.now())
    valid = signer.dump(editor)
    payload, stamp, mac = valid.rsplit(".", 2)
    other = signer.dump(dataclasses.replace(editor, editor="Intrus")).rsplit(".", 2)[0]
    with time_machine.travel(dt.datetime.now(dt.UTC) - dt.timedelta(hours=13), tick=False):
        old = signer.dump(dataclasses.replace(editor, at=signer.now()))
    before = editorial_state(site)

    def home(cookie: str) -> httpx.Response:
        with httpx.Client(base_url=desk.url, timeout=HTTP_SECONDS) as client:
            return client.get("/", headers={"cookie": f"{SESSION_COOKIE}={cookie}"})

    assert home(valid).status_code == 200 and "Camille Roux" in home(valid).text
    for cookie in (f"{other}.{stamp}.{mac}", f"{payload}.{stamp}.{mac[:-2]}AA", SessionSigner(TOKEN + "x").dump(editor),
                   old, payload):
        answer = home(cookie)
        assert answer.status_code == 303 and answer.headers["location"] == "/connexion", cookie
        with httpx.Client(base_url=desk.url, timeout=HTTP_SECONDS) as client:
            refused = client.post(f"/brouillon/{DATE}/approuver", data={"csrf": editor.csrf},
                                  headers={"cookie": f"{SESSION_COOKIE}={cookie}"})
        assert refused.status_code == 403 and "Connexion requise" in refused.text, cookie
    assert editorial_state(site) == before


def test_every_answer_carries_the_security_headers(shared: tuple[Site, Desk]) -> None:
    _, desk = shared
    with httpx.Client(timeout=HTTP_SECONDS) as client:
        for path in ("/connexion", "/", "/nulle-part", "/desinscription", "/static/desk.css", f"/brouillon/{DATE}"):
            answer = client.get(f"{desk.url}{path}")
            policy_header = answer.headers["content-security-policy"]
            assert "script-src" not in policy_header and "default-src 'none'" in policy_header, path
            assert "frame-ancestors 'none'" in policy_header
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
        assert client.get(f"{desk.url}/nulle-part").status_code == 404
        page = client.get(f"{desk.url}/connexion").text
        assert "<script" not in page and " style=" not in page and 'lang="fr"' in page


# ---------------------------------------------------------------- the pieces, without a server


def test_token_bucket_allows_its_capacity_then_refills_at_its_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(capacity=3, per_minute=6, clock=lambda: now[0])
    assert [bucket.take("a") for _ in range(3)] == [None, None, None]
    assert bucket.take("a") == pytest.approx(10.0)  # 6 a minute: one every 10 s
    assert bucket.take("b") is None, "each client has its own bucket"
    now[0] += 10
    assert bucket.take("a") is None and bucket.take("a") is not None


def test_a_session_cookie_altered_or_signed_with_another_token_reads_as_nothing() -> None:
    signer = SessionSigner(TOKEN)
    now = signer.now()
    session = Session(csrf="abc", editor="Camille", at=now, address="camille@example.org")
    cookie = signer.dump(session)
    assert signer.load(cookie) == session
    payload, stamp, mac = cookie.rsplit(".", 2)
    forged = signer.dump(Session(csrf="abc", editor="Intrus", at=now)).rsplit(".", 2)[0] + f".{stamp}.{mac}"
    assert signer.load(forged) is None, "another payload under this cookie's signature"
    assert signer.load(f"{payload}.{stamp}.{'A' * len(mac)}") is None, "a made-up signature"
    assert SessionSigner(TOKEN + "-other").load(cookie) is None, "signed with another token"
    assert signer.load("garbage") is None and signer.load("") is None and signer.load(None) is None
    # What itsdangerous signs with this token but without the desk's salt and key derivation.
    assert signer.load(URLSafeTimedSerializer(TOKEN).dumps({"csrf": "abc", "editor": "Intrus", "at": now})) is None


def test_a_session_cookie_expires_12_hours_after_it_was_signed_and_an_editor_12_hours_after_login() -> None:
    signer = SessionSigner(TOKEN)
    start = dt.datetime(2025, 5, 6, 4, 0, tzinfo=dt.UTC)
    with time_machine.travel(start, tick=False):
        visitor = signer.dump(Session(csrf="abc"))
        editor = signer.dump(Session(csrf="def", editor="Camille", at=signer.now()))
    with time_machine.travel(start + dt.timedelta(hours=11, minutes=59), tick=False):
        assert signer.load(visitor) == Session(csrf="abc")
        camille = signer.load(editor)
        assert camille is not None and camille.editor == "Camille"
        # Signed again just now (a test send kept its address), but logged in 11 h 59 ago.
        resigned = signer.dump(dataclasses.replace(camille, address="camille@example.org"))
    with time_machine.travel(start + dt.timedelta(hours=12, seconds=1), tick=False):
        assert signer.load(visitor) is None and signer.load(editor) is None
        assert signer.load(resigned) is None, "an editor's session ends 12 hours after login"
    with time_machine.travel(start - dt.timedelta(minutes=5), tick=False):
        assert signer.load(visitor) is None, "signed in the future"


@pytest.mark.parametrize(("url", "message"), [
    ("https://techmatin.example.org/desinscription?token={token}", "needs {email} and {token} as query values"),
    ("https://techmatin.example.org/connexion?email={email}&token={token}", "cannot serve the path '/connexion'"),
])
def test_an_unsubscribe_url_the_desk_cannot_serve_stops_it_at_start(config_site: Site, url: str, message: str) -> None:
    site = config_site
    config = yaml.safe_load(site.config.read_text(encoding="utf-8"))
    config["delivery"]["unsubscribe_url"] = url
    site.config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    code, _, err = call_cli("desk", *site.args("--port", "0"))
    assert code == 2 and message in err and err.count("\n") == 1, err


# ---------------------------------------------------------------- behind the sample reverse proxy


@pytest.fixture
def proxy(site: Site, desk: Desk, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """deploy/nginx/tech-matin.conf run by a real nginx on free 127.0.0.1 ports, with a
    self-signed certificate, in front of the desk and the built archive; (https base, CA file)."""
    nginx, openssl = shutil.which("nginx") or "/usr/sbin/nginx", shutil.which("openssl")
    if not Path(nginx).is_file() or openssl is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI is set but nginx or openssl is missing (.ci/run installs nginx and openssl)")
        pytest.skip("nginx or openssl is not installed (apt-get install nginx openssl)")
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    cert, key = prefix / "cert.pem", prefix / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=techmatin.example.org",
                    "-addext", "subjectAltName=DNS:techmatin.example.org,DNS:bureau.techmatin.example.org,"
                    "IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    http_port, https_port = free_port(), free_port()
    sample = (REPO / "deploy" / "nginx" / "tech-matin.conf").read_text(encoding="utf-8")
    config = (sample.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
              .replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
              .replace("/etc/letsencrypt/live/techmatin.example.org/fullchain.pem", str(cert))
              .replace("/etc/letsencrypt/live/techmatin.example.org/privkey.pem", str(key))
              .replace("/srv/tech-matin/output", str(site.output))
              .replace("server 127.0.0.1:8001;", f"server {desk.url.removeprefix('http://')};"))
    config = "\n".join(line for line in config.splitlines() if "listen [::]" not in line)  # no IPv6 needed
    assert config.count(str(cert)) == 2 and desk.url.removeprefix("http://") in config
    (prefix / "site.conf").write_text(config, encoding="utf-8")
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the test's root-only folders
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes 1;\nerror_log {prefix}/logs/error.log;\npid {prefix}/nginx.pid;\n"
        f"events {{ worker_connections 64; }}\n"
        f"http {{ access_log off; client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;\n"
        f"  include /etc/nginx/mime.types; include {prefix}/site.conf; }}\n", encoding="utf-8")
    check = subprocess.run([nginx, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import socket
        import time

        deadline = time.monotonic() + 30  # a limit for failure only
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", https_port)) == 0:
                    break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
        yield f"https://127.0.0.1:{https_port}", cert
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_sample_nginx_config_serves_the_archive_and_the_one_click_unsubscribe_over_tls(
        site: Site, proxy: tuple[str, Path]) -> None:
    from pipeline.deliver import unsubscribe_token

    base, cert = proxy
    public = {"host": "techmatin.example.org"}
    reader = READERS[2]
    params = {"email": reader, "token": unsubscribe_token(SECRET, reader)}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=HTTP_SECONDS) as client:
        issue = client.get(f"{base}/{DATE.isoformat()}/", headers=public)
        assert issue.status_code == 200 and "LE FAIT DU JOUR" in issue.text
        assert client.get(f"{base}/connexion", headers=public).status_code == 404, "no desk page on the public name"
        page = client.get(f"{base}/desinscription", params=params, headers=public)
        assert page.status_code == 200 and "Confirmer la désinscription" in page.text
        assert site.suppressions() == {}
        done = client.post(f"{base}/desinscription", params=params, data={"List-Unsubscribe": "One-Click"},
                           headers=public)
        assert done.status_code == 200 and "C’est fait" in done.text
        assert list(site.suppressions()) == [reader]
        # The editor's name: the desk's pages, its session cookie marked Secure behind https.
        login_page = client.get(f"{base}/connexion", headers={"host": "bureau.techmatin.example.org"})
        assert login_page.status_code == 200 and "Secure" in login_page.headers["set-cookie"]
        assert "max-age=63072000" in login_page.headers["strict-transport-security"]


# ---------------------------------------------------------------- the editor in a real browser

SCREENS = Path("/tmp/tech-matin-screens")
BUILD_SECONDS = 120.0  # a limit for failure only: a decision builds the issue again (2 s on an idle machine)

DRAFT_LAYOUT_JS = r"""
(() => ({
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  lang: document.documentElement.lang,
  state: document.querySelector('#etat').textContent.trim(),
  stories: Array.from(document.querySelectorAll('article[data-item]')).map(a => ({
    item: a.dataset.item,
    where: a.querySelector('p.note').textContent.trim(),
    words: Array.from(a.querySelectorAll('p.words')).map(p => p.textContent.trim()),
    tags: Array.from(a.querySelectorAll('.tags li')).map(li => li.textContent.trim()),
  })),
  notice: (document.querySelector('.notice') || {textContent: ''}).textContent.trim(),
  preview: document.querySelector('iframe.preview').getBoundingClientRect().width,
}))()
"""


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f"{path} is not a real screenshot"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_an_editor_logs_in_drops_a_story_makes_another_the_lead_approves_and_rebuild_gives_the_same_files(
        site: Site, tmp_path: Path) -> None:
    from chromium import Chromium
    from test_issue_browser import CONTRAST_JS, chromium_or_skip

    executable = chromium_or_skip()
    config = yaml.safe_load(site.config.read_text(encoding="utf-8"))
    config["delivery"].update({"require_approval": True, "approve_by": "06:45", "on_no_approval": "hold"})
    site.config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    code, _, err = call_cli("rebuild", *site.args("--date", DATE.isoformat()))  # the issue as a draft now
    assert code == 0, err
    desk = Desk(site)
    try:
        with Chromium(executable) as browser:
            page = browser.new_page()
            page.open(f"{desk.url}/", 1024)  # not logged in: the login page
            assert page.evaluate("location.pathname") == "/connexion"
            page.evaluate(f"document.querySelector('#nom').value = 'Louise Garnier'; "
                          f"document.querySelector('#jeton').value = {TOKEN!r}")
            page.click_and_wait("form.login button[type=submit]")
            assert page.evaluate("location.pathname") == "/"
            listed = page.evaluate("document.querySelector('ul.issues').textContent.replace(/\\s+/g, ' ')")
            assert re.search(r"mardi 6 mai 2025 — \d+ sujets · brouillon, à approuver", listed), listed
            page.click_and_wait(f"a[href='/brouillon/{DATE.isoformat()}']")
            before = page.evaluate(DRAFT_LAYOUT_JS)
            assert before["state"] == "En attente d’approbation." and len(before["stories"]) >= 4
            lead, second = before["stories"][0], before["stories"][1]
            assert lead["where"] == "Le fait du jour"
            # Each story with its topics and the words that matched.
            assert all(s["tags"] and s["words"] for s in before["stories"]), before["stories"]

            page.click_and_wait(f"article[data-item='{lead['item']}'] button.danger", BUILD_SECONDS)
            dropped = page.evaluate(DRAFT_LAYOUT_JS)
            assert dropped["notice"] == "Sujet retiré du numéro."
            assert lead["item"] not in [s["item"] for s in dropped["stories"]]
            page.click_and_wait(f"article[data-item='{second['item']}'] form:nth-of-type(2) button", BUILD_SECONDS)
            led = page.evaluate(DRAFT_LAYOUT_JS)
            assert led["notice"] == "Sujet mis à la une."
            assert led["stories"][0]["item"] == second["item"] and led["stories"][0]["where"] == "Le fait du jour"

            page.click_and_wait("#approuver", BUILD_SECONDS)
            approved = page.evaluate(DRAFT_LAYOUT_JS)
            assert approved["notice"] == "Numéro approuvé."
            assert approved["state"].startswith("Approuvé par Louise Garnier le ")
            for width in (375, 1024):
                page.errors.clear()
                page.open(f"{desk.url}/brouillon/{DATE.isoformat()}", width)
                layout = page.evaluate(DRAFT_LAYOUT_JS)
                shot = page.screenshot(tmp_path / f"desk-draft-{DATE.isoformat()}-{width}.png")
                SCREENS.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, SCREENS / shot.name)
                assert page.errors == []  # nothing the CSP blocked, no failed load
                contrast = page.evaluate(CONTRAST_JS)
                assert contrast["checked"] > 50 and contrast["bad"] == [], contrast["bad"]
                assert layout["scrollWidth"] <= layout["innerWidth"] == width, layout
                assert layout["lang"] == "fr" and 0 < layout["preview"] <= width
                shot_width, shot_height = png_size(shot)
                assert shot_width == width and shot_height > 900
    finally:
        desk.stop()

    with open_store(StoreTarget(site.db)) as store:
        decisions = store.decisions_for(DATE)
        approval = store.approval_of(DATE)
    assert [(d.action, d.item_id, d.editor) for d in decisions] == [
        ("drop", lead["item"], "Louise Garnier"), ("lead", second["item"], "Louise Garnier")]
    assert approval is not None and approval.editor == "Louise Garnier"
    with open_store(StoreTarget(site.db)) as store:
        stored = store.issue(DATE)
    assert stored is not None
    issue = issue_from_json(stored.issue_json, load_config(site.config).newsletter)
    assert issue.lead is not None and issue.lead.id == second["item"]
    assert lead["item"] not in {i for story in issue.stories() for i in story.item_ids}

    # The approved issue's files, then `pipeline rebuild`: in place, and into an empty folder (every
    # page written again from the store): byte for byte the same.
    def site_files(folder: Path) -> dict[Path, bytes]:
        return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
                if p.is_file() and not p.name.startswith(".")}

    files = site_files(site.output)
    assert Path(DATE.isoformat(), "index.html") in files and Path("index.html") in files
    code, _, err = call_cli("rebuild", *site.args("--date", DATE.isoformat()))
    assert code == 0, err
    again = site_files(site.output)
    assert again.keys() == files.keys() and [f for f in files if files[f] != again[f]] == []
    fresh = tmp_path / "fresh"
    code, _, err = call_cli("rebuild", *site.args("--date", DATE.isoformat(), "--output", str(fresh)))
    assert code == 0, err
    rebuilt = site_files(fresh)
    assert Path(DATE.isoformat(), "index.html") in rebuilt and Path(DATE.isoformat(), "digest.txt") in rebuilt
    assert [f for f in rebuilt if rebuilt[f] != files.get(f)] == []


def test_every_decision_of_the_desk_is_stored_with_its_editor_and_a_test_send_reaches_only_the_editor(
        site: Site, smtp: SmtpServer) -> None:
    site.configure(smtp.port)
    desk = Desk(site)
    try:
        with httpx.Client(base_url=desk.url, timeout=HTTP_SECONDS) as client:
            csrf = login(client, desk, "Jeanne Morel")
            draft = client.get(f"/brouillon/{DATE}")
            assert draft.status_code == 200
            ids = story_ids(draft.text)
            preview = client.get(f"/brouillon/{DATE}/apercu")
            assert preview.status_code == 200 and "LE FAIT DU JOUR" in preview.text
            assert "sandbox" in preview.headers["content-security-policy"]
            assert "frame-ancestors 'self'" in preview.headers["content-security-policy"]
            assert f'src="/brouillon/{DATE}/apercu"' in draft.text

            def decide(**data: str) -> httpx.Response:
                return client.post(f"/brouillon/{DATE}/decision", data={"csrf": csrf, **data})

            assert decide(action="move", item=ids[1], section="rgpd").status_code == 303
            assert decide(action="kicker", item=ids[2], text="Un surtitre choisi").status_code == 303
            assert decide(action="summary", item=ids[2], text="Le résumé de la rédaction.").status_code == 303
            found = client.get(f"/brouillon/{DATE}", params={"q": "billetterie"})
            [candidate] = re.findall(r'name="item" value="([^"]+)">\s*<input type="hidden" name="action" '
                                     r'value="add">', found.text)
            assert decide(action="add", item=candidate, section="media_partnership").status_code == 303
            page = client.get(f"/brouillon/{DATE}?fait=add").text
            assert "Article ajouté au numéro." in page and "UN SURTITRE CHOISI." in page
            assert candidate in story_ids(page)
            # A decision the pipeline refuses: a clear message, nothing stored.
            before = editorial_state(site)
            refused = decide(action="lead", item="no-such-item")
            assert refused.status_code == 409 and "rien n’a été changé" in refused.text
            assert decide(action="invent", item=ids[0]).status_code == 400
            assert editorial_state(site) == before

            sent = client.post(f"/brouillon/{DATE}/essai", data={"csrf": csrf, "adresse": "jeanne@example.org"})
            assert sent.status_code == 303, sent.text
            assert 'value="jeanne@example.org"' in client.get(f"/brouillon/{DATE}").text
            bad = client.post(f"/brouillon/{DATE}/essai", data={"csrf": csrf, "adresse": "pas une adresse"})
            assert bad.status_code == 400 and "Adresse d’essai refusée" in bad.text
    finally:
        desk.stop()
    [message] = smtp.inbox.messages
    assert message.rcpt_tos == ["jeanne@example.org"]
    assert str(message.parsed()["Subject"]).startswith("[TEST] Tech Matin du mardi 6 mai")
    decisions, approval, deliveries, _ = editorial_state(site)
    assert [(d.action, d.editor) for d in decisions] == [
        ("move", "Jeanne Morel"), ("kicker", "Jeanne Morel"), ("summary", "Jeanne Morel"), ("add", "Jeanne Morel")]
    assert decisions[0].section == "rgpd" and decisions[3].section == "media_partnership"
    assert approval is None and deliveries == {}, "a test send records no delivery"


def test_the_desk_on_the_postgresql_store(config_site: Site, pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same desk with storage.backend: postgresql: a reader's one-click unsubscribe and an
    editor's decision and approval land in PostgreSQL."""
    from pipeline.deliver import unsubscribe_token

    site = config_site
    config = yaml.safe_load(site.config.read_text(encoding="utf-8"))
    config["storage"] = {"backend": "postgresql", "output": site.output.name}
    site.config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("TECH_MATIN_DATABASE_URL", pg_database)
    args = ["--config", str(site.config), "--topics", str(TOPICS)]
    code, _, err = call_cli("run", *args, "--date", DATE.isoformat())
    assert code == 0, err
    target = StoreTarget(site.db, backend="postgresql", dsn=pg_database)
    desk = Desk(site, args)
    try:
        with httpx.Client(base_url=desk.url, timeout=HTTP_SECONDS) as client:
            reader = READERS[0]
            done = client.post("/desinscription", params={"email": reader, "token": unsubscribe_token(SECRET, reader)},
                               data={"List-Unsubscribe": "One-Click"})
            assert done.status_code == 200 and "C’est fait" in done.text
            csrf = login(client, desk, "Idriss Benali")
            ids = story_ids(client.get(f"/brouillon/{DATE}").text)
            dropped = client.post(f"/brouillon/{DATE}/decision", data={"csrf": csrf, "action": "drop", "item": ids[1]})
            assert dropped.status_code == 303
            assert ids[1] not in story_ids(client.get(f"/brouillon/{DATE}").text)
            assert client.post(f"/brouillon/{DATE}/approuver", data={"csrf": csrf}).status_code == 303
    finally:
        desk.stop()
    with open_store(target) as store:
        assert list(store.suppressions()) == [reader]
        assert [(d.action, d.item_id, d.editor) for d in store.decisions_for(DATE)] == [
            ("drop", ids[1], "Idriss Benali")]
        approval = store.approval_of(DATE)
        assert approval is not None and approval.editor == "Idriss Benali"
