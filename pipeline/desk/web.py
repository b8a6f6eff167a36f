"""The desk's web app (Starlette): the editor's pages and the readers' unsubscribe endpoint.

It holds no pipeline logic: every page asks `Pipeline` (pipeline.app), on one thread of its own
(`PipelineThread`: a store connection belongs to the thread that opened it), and renders what
it answers with the templates beside this file (Jinja2, autoescaped, in French).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email.parser
import email.policy
import html
import re
import urllib.parse
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.desk.security import (
    CSRF_FIELD,
    PAGE_POLICY,
    PREVIEW_POLICY,
    SESSION_COOKIE,
    Session,
    SessionSigner,
    TokenBucket,
    security_headers,
    token_matches,
)
from pipeline.errors import PipelineError
from pipeline.store import StoreError

if TYPE_CHECKING:
    from pipeline.app import Candidate, DraftView, IssueListing, Pipeline
    from pipeline.deliver import UnsubscribeRoute

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STYLESHEET = HERE / "static" / "desk.css"
MAX_FORM_BYTES = 64 * 1024  # a summary an editor writes fits many times over
MAX_EDITOR_NAME = 80
ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058's POST body

# Readers' endpoint: 20 requests at once per client address, then 20 a minute (a reader clicks
# once; a mail provider's one-click POST comes once per message). Login: 10, then 5 a minute.
UNSUBSCRIBE_LIMIT = (20.0, 20.0)
LOGIN_LIMIT = (10.0, 5.0)

MAX_QUERY = 200
MAX_LISTED = 60  # issues on the home page, newest first
MAX_CANDIDATES = 20
MAX_ITEM_ID = 200
MAX_KICKER = 120
MAX_SUMMARY = 2000
LOCK_SECONDS = 60.0  # a decision waits this long for a build of the same archive (the scheduler's)
# What the draft page says after a POST (?fait=…), and how a decision reads in a story's history.
NOTICES = {
    "drop": "Sujet retiré du numéro.", "lead": "Sujet mis à la une.", "move": "Sujet déplacé.",
    "kicker": "Surtitre modifié.", "summary": "Résumé modifié.", "add": "Article ajouté au numéro.",
    "approuve": "Numéro approuvé.", "essai": "Envoi de test parti.",
}
ACTIONS_DONE = {
    "drop": "Retiré", "lead": "Mis à la une", "move": "Déplacé", "kicker": "Surtitre modifié",
    "summary": "Résumé modifié", "add": "Ajouté",
}

T = TypeVar("T")


class PipelineThread:
    """Runs calls on the Pipeline in one dedicated thread, one at a time, without blocking the
    event loop; the Pipeline is made there on first use by `open_pipeline`."""

    def __init__(self, open_pipeline: Callable[[], Pipeline]):
        self._open = open_pipeline
        self._app: Pipeline | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="desk-pipeline")

    def _with_app(self, call: Callable[[Pipeline], T]) -> T:
        if self._app is None:
            self._app = self._open()
        return call(self._app)

    def run(self, call: Callable[[Pipeline], T]) -> T:
        """From outside the event loop (start-up checks)."""
        return self._executor.submit(self._with_app, call).result()

    async def __call__(self, call: Callable[[Pipeline], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._with_app, call)

    def close(self) -> None:
        def close(app: Pipeline) -> None:
            app.close()

        if self._app is not None:
            self.run(close)
        self._executor.shutdown(wait=True)


@dataclass(frozen=True)
class DeskSettings:
    token: str  # the editor's token (see security.desk_token)
    name: str  # the newsletter's name, for the pages
    unsubscribe: UnsubscribeRoute | None  # None: no `delivery:` section, no readers' endpoint


class SecurityHeaders:
    """ASGI middleware: the protective headers on every answer (a page that sets its own
    Content-Security-Policy keeps it), and one log line per request without its query string
    (an unsubscribe URL holds a reader's address and token)."""

    def __init__(self, app: ASGIApp, log: TextIO | None):
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                own = [(name, value) for name, value in security_headers() if name not in names]
                message["headers"] = headers + own
                if self.log is not None:
                    client = scope.get("client") or ("-", 0)
                    path = scope.get("path", "").encode("unicode_escape").decode("ascii")
                    self.log.write(f"{client[0]} {scope.get('method')} {path} {message['status']}\n")
                    self.log.flush()
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def read_form(request: Request) -> dict[str, str] | None:
    """The fields of a form POST (urlencoded, or multipart for a mail client's one-click), first
    value of each name; None for a body too large, not a form, or not UTF-8."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    form: dict[str, str] = {}
    if kind == "application/x-www-form-urlencoded":
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
        except (UnicodeDecodeError, ValueError):
            return None
        for name, value in pairs:
            form.setdefault(name, value)
        return form
    if kind == "multipart/form-data":
        parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace") + body)
        if not parsed.is_multipart():
            return None
        for part in parsed.iter_parts():
            field_name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(field_name, str) and isinstance(payload, bytes):
                try:
                    form.setdefault(field_name, payload.decode("utf-8"))
                except UnicodeDecodeError:
                    return None
        return form
    return None


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


class Desk:
    """The routes and what they share: the pipeline's threads, the session signer, the limits.

    Editors' and readers' requests use a Pipeline each, on a thread each: a decision that
    rebuilds the issue, or a test send waiting on SMTP, never holds up a reader's unsubscribe."""

    def __init__(self, pipeline: PipelineThread, readers: PipelineThread, settings: DeskSettings,
                 log: TextIO | None = None):
        self.pipeline = pipeline
        self.readers = readers
        self.settings = settings
        self.signer = SessionSigner(settings.token)
        self.unsubscribe_bucket = TokenBucket(*UNSUBSCRIBE_LIMIT)
        self.login_bucket = TokenBucket(*LOGIN_LIMIT)
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                            undefined=jinja2.StrictUndefined, trim_blocks=True,
                                            lstrip_blocks=True)
        self.log = log

    # -- answers

    def session(self, request: Request) -> Session:
        """The visitor's session, or a fresh one (it is sent with the answer by `page`)."""
        cached = request.scope.get("desk.session")
        if isinstance(cached, Session):
            return cached
        session = self.signer.load(request.cookies.get(SESSION_COOKIE)) or Session.fresh()
        request.scope["desk.session"] = session
        return session

    def keep(self, request: Request, response: Response, session: Session | None) -> Response:
        """Set the cookie when the session is new or changed (None: log out)."""
        loaded = self.signer.load(request.cookies.get(SESSION_COOKIE))
        if session != loaded:
            response.headers.append("set-cookie", self.signer.cookie_header(session, request.url.scheme == "https"))
        return response

    def page(self, request: Request, template: str, status: int = 200, session: Session | None = None,
             headers: dict[str, str] | None = None, **values: Any) -> Response:
        session = session or self.session(request)
        body = self.templates.get_template(template).render(
            name=self.settings.name, csrf=session.csrf, editor=session.editor, **values)
        return self.keep(request, HTMLResponse(body, status_code=status, headers=headers), session)

    def message(self, request: Request, status: int, heading: str, *lines: str, back: str | None = None,
                headers: dict[str, str] | None = None) -> Response:
        return self.page(request, "message.html", status, heading=heading, lines=lines, back=back, headers=headers)

    def too_many(self, request: Request, wait: float) -> Response:
        seconds = max(1, int(wait + 0.999))
        return self.message(request, 429, "Trop de demandes",
                            f"Trop de demandes depuis votre adresse : réessayez dans {seconds} secondes.",
                            headers={"retry-after": str(seconds)})

    # -- editor's guard

    def editor_only(self, handler: Callable[[Request, Session], Awaitable[Response]]
                    ) -> Callable[[Request], Awaitable[Response]]:
        """A page of the editor's: a visitor without an editor's session is sent to the login
        page (GET) or refused (POST, 403); a POST without the session's CSRF token is refused
        (403) before its handler runs, so nothing changes."""

        async def guarded(request: Request) -> Response:
            session = self.session(request)
            if request.method == "POST":
                form = await read_form(request)
                if session.editor is None:
                    return self.message(request, 403, "Connexion requise",
                                        "Cette action est réservée à la rédaction : connectez-vous d’abord.",
                                        back="/connexion")
                if form is None or not session.csrf_matches(form.get(CSRF_FIELD)):
                    return self.message(request, 403, "Formulaire refusé",
                                        "Ce formulaire a expiré ou ne vient pas du bureau de la rédaction : "
                                        "rien n’a été changé. Rechargez la page et recommencez.", back="/")
                request.scope["desk.form"] = form
            elif session.editor is None:
                return self.keep(request, RedirectResponse("/connexion", status_code=303), session)
            return await handler(request, session)

        return guarded

    # -- login

    async def login_page(self, request: Request) -> Response:
        session = self.session(request)
        if session.editor is not None:
            return RedirectResponse("/", status_code=303)
        return self.page(request, "login.html", problem=None, nom="")

    async def login(self, request: Request) -> Response:
        wait = self.login_bucket.take(_client(request))
        if wait is not None:
            return self.too_many(request, wait)
        session = self.session(request)
        form = await read_form(request)
        if form is None or not session.csrf_matches(form.get(CSRF_FIELD)):
            return self.page(request, "login.html", 403, session=Session.fresh(), nom="",
                             problem="Le formulaire a expiré : recommencez.")
        name = " ".join(form.get("nom", "").split())[:MAX_EDITOR_NAME]
        if not name or not name.isprintable():
            return self.page(request, "login.html", 400, nom="", problem="Indiquez votre nom.")
        if not token_matches(self.settings.token, form.get("jeton", "")):
            return self.page(request, "login.html", 401, nom=name, problem="Jeton incorrect.")
        logged = Session(csrf=Session.fresh().csrf, editor=name, at=self.signer.now())  # a new CSRF token
        return self.keep(request, RedirectResponse("/", status_code=303), logged)

    async def logout(self, request: Request, session: Session) -> Response:
        return self.keep(request, RedirectResponse("/connexion", status_code=303), None)

    # -- the editor's pages

    async def home(self, request: Request, session: Session) -> Response:
        from pipeline.render import french_date

        def read(app: Pipeline) -> list[tuple[IssueListing, str]]:
            listing = app.archive_listing()[:MAX_LISTED]
            held = app.held_drafts([i.date for i in listing])
            return [(i, "approuvé" if app.approved(i.date) else "brouillon, à approuver" if i.date in held else "")
                    for i in listing]

        issues = [{"date": i.date, "label": french_date(i.date, year=True), "stories": i.story_count, "state": state}
                  for i, state in await self.pipeline(read)]
        return self.page(request, "home.html", issues=issues)

    # -- the draft of an issue, and the editors' decisions on it

    def day(self, request: Request) -> dt.date:
        text = str(request.path_params.get("day", ""))
        try:
            if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
                raise ValueError(text)
            return dt.date.fromisoformat(text)
        except ValueError:
            raise HTTPException(404) from None

    async def draft(self, request: Request, session: Session, problem: str | None = None,
                    status: int = 200) -> Response:
        day = self.day(request)
        query = request.query_params.get("q", "").strip()[:MAX_QUERY]

        def read(app: Pipeline) -> tuple[DraftView, list[Candidate], str, dt.time | None]:
            view = app.draft(day)
            candidates = [] if view.sent else app.candidates(day, query or None, limit=MAX_CANDIDATES)
            delivery = app.config.delivery
            return view, candidates, app.config.newsletter.timezone, delivery.approve_by if delivery else None

        try:
            view, candidates, timezone, approve_by = await self.pipeline(read)
        except PipelineError:
            return self.message(request, 404, "Aucun numéro à cette date",
                                f"Aucun numéro n’est construit pour le {day.isoformat()} : lancez "
                                f"`pipeline run --date {day.isoformat()}`.", back="/")
        notice = NOTICES.get(request.query_params.get("fait", ""))
        return self.page(request, "draft.html", status, **draft_context(view, candidates, timezone, query),
                         approve_by=f"{approve_by:%H:%M}" if approve_by else "", day=day.isoformat(), notice=notice,
                         problem=problem, address=session.address or "", max_kicker=MAX_KICKER,
                         max_summary=MAX_SUMMARY)

    async def preview(self, request: Request, session: Session) -> Response:
        """The issue as readers get it in their mailbox, for the draft page's frame."""
        day = self.day(request)
        try:
            page = await self.pipeline(lambda app: app.render_for_email(app.stored_issue(day)).html)
        except PipelineError:
            raise HTTPException(404) from None
        return HTMLResponse(page, headers={"content-security-policy": PREVIEW_POLICY,
                                           "x-frame-options": "SAMEORIGIN"})

    async def decide(self, request: Request, session: Session) -> Response:
        from pipeline.app import utc_now
        from pipeline.models import DECISION_ACTIONS, EditorialDecision

        day = self.day(request)
        form: dict[str, str] = request.scope["desk.form"]
        action, item = form.get("action", ""), form.get("item", "").strip()
        text = " ".join(form.get("text", "").split()) if action == "kicker" else form.get("text", "").strip()
        if action not in DECISION_ACTIONS or not item or len(item) > MAX_ITEM_ID:
            return await self.draft(request, session, "Décision refusée : action ou article inconnu.", 400)
        too_long = len(text) > (MAX_KICKER if action == "kicker" else MAX_SUMMARY)
        if too_long or (action == "kicker" and not text.isprintable()):
            return await self.draft(request, session, "Décision refusée : texte trop long ou illisible.", 400)
        assert session.editor is not None  # editor_only
        decision = EditorialDecision(
            issue_date=day, action=action, item_id=item, editor=session.editor, decided_at=utc_now(),
            section=(form.get("section") or None) if action in ("move", "add") else None,
            text=text if action in ("kicker", "summary") else None)
        try:
            await self.pipeline(lambda app: app.decide(decision, lock_timeout=LOCK_SECONDS))
        except PipelineError as exc:
            return await self.draft(request, session, f"Décision refusée, rien n’a été changé : {exc}", 409)
        return RedirectResponse(f"/brouillon/{day.isoformat()}?fait={action}", status_code=303)

    async def approve(self, request: Request, session: Session) -> Response:
        day = self.day(request)
        editor = session.editor
        assert editor is not None  # editor_only
        try:
            await self.pipeline(lambda app: app.approve(day, editor, lock_timeout=LOCK_SECONDS))
        except PipelineError as exc:
            return await self.draft(request, session, f"Approbation refusée : {exc}", 409)
        return RedirectResponse(f"/brouillon/{day.isoformat()}?fait=approuve", status_code=303)

    async def send_test(self, request: Request, session: Session) -> Response:
        from pipeline.config.sources import email_address_problem

        day = self.day(request)
        form: dict[str, str] = request.scope["desk.form"]
        address = form.get("adresse", "").strip()
        problem = email_address_problem(address)
        if problem:
            return await self.draft(request, session, f"Adresse d’essai refusée : {problem}.", 400)
        try:
            await self.pipeline(lambda app: app.send_test(day, address))
        except PipelineError as exc:
            return await self.draft(request, session, f"L’envoi de test a échoué : {exc}", 502)
        kept = dataclasses.replace(session, address=address)
        return self.keep(request, RedirectResponse(f"/brouillon/{day.isoformat()}?fait=essai", status_code=303), kept)

    # -- readers' unsubscribe

    async def unsubscribe(self, request: Request) -> Response:
        route = self.settings.unsubscribe
        if route is None:  # pragma: no cover - the route is only mounted with a delivery section
            raise HTTPException(404)
        wait = self.unsubscribe_bucket.take(_client(request))
        if wait is not None:
            return self.too_many(request, wait)
        email = request.query_params.get(route.email_param, "")
        token = request.query_params.get(route.token_param, "")
        action = request.url.path + ("?" + request.url.query if request.url.query else "")
        if request.method == "POST":
            form = await read_form(request)
            if form is None or form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
                return self.reader_page(request, 400, "incomplete", email, action)
        confirm = request.method == "POST"
        outcome = await self.readers(lambda app: app.unsubscribe(email, token, confirm=confirm))
        status = 403 if outcome.outcome == "refused" else 200
        return self.reader_page(request, status, outcome.outcome, outcome.email, action)

    def reader_page(self, request: Request, status: int, outcome: str, email: str, action: str) -> Response:
        # No session, no cookie: a reader's page knows nothing of the desk's visitors.
        body = self.templates.get_template("unsubscribe.html").render(
            name=self.settings.name, outcome=outcome, email=email, action=action)
        return HTMLResponse(body, status_code=status)

    # -- the rest

    async def stylesheet(self, request: Request) -> Response:
        return FileResponse(STYLESHEET, media_type="text/css; charset=utf-8")

    async def no_icon(self, request: Request) -> Response:
        return Response(status_code=204)  # browsers ask for one; a 404 would be a console error

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def not_found(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        heading = {404: "Page introuvable", 405: "Méthode non permise"}.get(status, "Erreur")
        body = self.templates.get_template("message.html").render(
            name=self.settings.name, heading=heading, lines=[f"{status} — {html.unescape(heading)}"], back="/")
        return HTMLResponse(body, status_code=status)


    async def store_error(self, request: Request, exc: Exception) -> Response:
        """The database locked, full or gone: one line in the log, a page saying to try again."""
        if self.log is not None:
            self.log.write(f"error: database: {' '.join(str(exc).split())}\n")
            self.log.flush()
        body = self.templates.get_template("message.html").render(
            name=self.settings.name, heading="Base de données indisponible", back=None,
            lines=["La base de données ne répond pas. Réessayez dans un instant."])
        return HTMLResponse(body, status_code=503, headers={"retry-after": "30"})


def draft_context(view: DraftView, candidates: Sequence[Candidate], timezone: str, query: str) -> dict[str, Any]:
    """What draft.html shows, in French: each story with where it stands, its topics, the words
    that matched and the decisions on it; the candidates to add; the approval."""
    from pipeline.render import french_date

    zone = zoneinfo.ZoneInfo(timezone)
    themes = {t.id: t.theme for t in view.sections}
    headings = {t.id: t.heading for t in view.sections}

    def when(moment: dt.datetime) -> str:
        local = moment.astimezone(zone)
        return f"{french_date(local.date(), weekday=False, year=True)} à {local:%H:%M}"

    stories = []
    for entry in view.stories:
        where = {"lead": "Le fait du jour", "further": "Restez branchés"}.get(entry.part, headings.get(entry.section,
                                                                                                      entry.section))
        history = []
        for d in entry.decisions:
            target = f" vers {headings.get(d.section, d.section)}" if d.section and d.action in ("move", "add") else ""
            history.append(f"{ACTIONS_DONE[d.action]}{target} par {d.editor}, le {when(d.decided_at)}")
        stories.append({
            "story": entry.story, "part": entry.part, "section": entry.section, "where": where, "history": history,
            "topics": [themes.get(t, t) for t in entry.story.topics],
            "matched": [(themes.get(t, t), words) for t, words in entry.matched.items()],
        })
    found = []
    for candidate in candidates:
        published = candidate.item.published or candidate.item.first_seen
        found.append({"item": candidate.item, "when": when(published) if published else "",
                      "section": candidate.topics[0] if candidate.topics else view.sections[0].id,
                      "matched": [(themes.get(t, t), words) for t, words in candidate.matched.items() if words]})
    return {
        "view": view, "stories": stories, "candidates": found, "query": query, "sections": view.sections,
        "label": french_date(view.date, year=True),
        "approved_at": when(view.approval.approved_at) if view.approval else "",
    }


def make_app(pipeline: PipelineThread, readers: PipelineThread, settings: DeskSettings,
             log: TextIO | None = None) -> ASGIApp:
    """The desk as an ASGI app, wrapped in its security headers: `pipeline` serves the editors'
    pages, `readers` the unsubscribe endpoint."""
    desk = Desk(pipeline, readers, settings, log)
    routes = [
        Route("/", desk.editor_only(desk.home), methods=["GET"]),
        Route("/connexion", desk.login_page, methods=["GET"]),
        Route("/connexion", desk.login, methods=["POST"]),
        Route("/deconnexion", desk.editor_only(desk.logout), methods=["POST"]),
        Route("/brouillon/{day}", desk.editor_only(desk.draft), methods=["GET"]),
        Route("/brouillon/{day}/apercu", desk.editor_only(desk.preview), methods=["GET"]),
        Route("/brouillon/{day}/decision", desk.editor_only(desk.decide), methods=["POST"]),
        Route("/brouillon/{day}/approuver", desk.editor_only(desk.approve), methods=["POST"]),
        Route("/brouillon/{day}/essai", desk.editor_only(desk.send_test), methods=["POST"]),
        Route("/static/desk.css", desk.stylesheet, methods=["GET"]),
        Route("/sante", desk.health, methods=["GET"]),
        Route("/favicon.ico", desk.no_icon, methods=["GET"]),
    ]
    if settings.unsubscribe is not None:
        routes.insert(0, Route(settings.unsubscribe.path, desk.unsubscribe, methods=["GET", "POST"]))
    app = Starlette(routes=routes, exception_handlers={HTTPException: desk.not_found, StoreError: desk.store_error})
    return SecurityHeaders(app, log)


__all__ = ["PAGE_POLICY", "Desk", "DeskSettings", "PipelineThread", "make_app", "read_form"]
