"""The desk's protections, each small enough to read whole: the editor's token, the signed
session cookie, the CSRF token bound to it, per-client rate limits and the headers of every answer.

* **Token.** The editor's pages open with a token (a password) from the environment
  (`TECH_MATIN_DESK_TOKEN`), at least `MIN_TOKEN_BYTES` long; compared in constant time.
* **Session.** A cookie `desk_session` holding `{"csrf", "editor", "at", "address"}` (the
  last test-send address), signed and timestamped by itsdangerous (`URLSafeTimedSerializer`:
  compact JSON, HMAC-SHA256 with a key derived from the token by HMAC, so changing the token
  logs everyone out). HttpOnly, SameSite=Strict, Path=/, Secure when the request came over https
  (directly or through a proxy whose X-Forwarded-Proto uvicorn trusts). Signed, not encrypted:
  it holds no secret but the CSRF token, which the page shows anyway. A cookie signed more than
  `SESSION_SECONDS` ago reads as nothing, and so does an editor's session that many seconds
  after its login (`at`), however recently it was signed again.
* **CSRF.** Every visitor gets a session with a random CSRF token (the login form too, so a
  foreign site cannot log a browser in under its own name); every form carries it in a hidden
  field, every POST is refused (403) unless the field equals the session's, compared in
  constant time. It changes at login. SameSite=Strict is a second wall, not the only one.
* **Rate limits.** A token bucket per client address and per kind of request, in this process
  (a restart forgets them; one desk process per machine is the deployment of deploy/).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from itsdangerous import BadData, URLSafeTimedSerializer

from pipeline.errors import PipelineError

TOKEN_ENV = "TECH_MATIN_DESK_TOKEN"
MIN_TOKEN_BYTES = 32
SESSION_COOKIE = "desk_session"
SESSION_SECONDS = 12 * 3600  # a working morning; then log in again
CSRF_FIELD = "csrf"


def desk_token(env: Mapping[str, str]) -> str:
    """The editor's token from the environment; a one-line error when missing or too short."""
    token = env.get(TOKEN_ENV, "")
    if not token:
        raise PipelineError(f"environment variable {TOKEN_ENV} is not set: the desk needs the editor's token "
                            "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    size = len(token.encode("utf-8"))
    if size < MIN_TOKEN_BYTES:
        raise PipelineError(f"environment variable {TOKEN_ENV} holds {size} bytes; the desk's token needs at "
                            f"least {MIN_TOKEN_BYTES} (make one with: python3 -c 'import secrets; "
                            "print(secrets.token_urlsafe(32))')")
    return token


def token_matches(expected: str, given: str) -> bool:
    """Constant time whatever the lengths (both are hashed first)."""
    return hmac.compare_digest(hashlib.sha256(expected.encode("utf-8")).digest(),
                               hashlib.sha256(given.encode("utf-8", "replace")).digest())


# ---------------------------------------------------------------- the session cookie


@dataclass(frozen=True)
class Session:
    csrf: str
    editor: str | None = None  # the name given at login; None: not logged in
    at: float = 0.0  # when the editor logged in (Unix time)
    address: str | None = None  # the editor's address of the last test send, to offer it again

    @classmethod
    def fresh(cls) -> Session:
        return cls(csrf=secrets.token_urlsafe(32))

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(self.csrf.encode("utf-8"), given.encode("utf-8", "replace"))


class SessionSigner:
    """Writes and reads the session cookie (itsdangerous signs it); anything unsigned, altered,
    signed with another token or expired reads as None."""

    def __init__(self, token: str):
        # A key of its own, derived from the token with this salt: the token itself never signs.
        self._serializer = URLSafeTimedSerializer(
            token, salt=b"tech-matin desk session v2",
            signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256})

    def now(self) -> float:
        return time.time()

    def dump(self, session: Session) -> str:
        return self._serializer.dumps({"csrf": session.csrf, "editor": session.editor, "at": session.at,
                                       "address": session.address})

    def load(self, cookie: str | None) -> Session | None:
        if not cookie or len(cookie) > 4096:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=SESSION_SECONDS)
        except BadData:  # bad signature, expired, or not our payload at all
            return None
        # Signed by us, so well formed; checked anyway, as whatever comes from outside is.
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        editor, at, address = data.get("editor"), data.get("at"), data.get("address")
        if not isinstance(editor, str | None) or not isinstance(at, int | float) or not isinstance(address, str | None):
            return None
        if editor is not None and not 0 <= self.now() - at <= SESSION_SECONDS:
            return None  # logged in too long ago: a visitor again (the caller makes a fresh session)
        return Session(csrf=data["csrf"], editor=editor, at=float(at), address=address if editor else None)

    def cookie_header(self, session: Session | None, secure: bool) -> str:
        """The Set-Cookie value that keeps `session` (None: deletes the cookie)."""
        flags = "Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
        if session is None:
            return f"{SESSION_COOKIE}=; Max-Age=0; {flags}"
        return f"{SESSION_COOKIE}={self.dump(session)}; Max-Age={SESSION_SECONDS}; {flags}"


# ---------------------------------------------------------------- rate limits


@dataclass
class TokenBucket:
    """`capacity` requests at once per key, refilled at `per_minute` a minute. Keys are client
    addresses; at most `max_keys` are kept (the fullest are forgotten first: a full bucket is
    what a forgotten one would be)."""

    capacity: float
    per_minute: float
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 10_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, when)

    def take(self, key: str) -> float | None:
        """Take one token for `key`: None if allowed, else the seconds until the next one."""
        now = self.clock()
        tokens, when = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - when) * self.per_minute / 60.0)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) * 60.0 / self.per_minute
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_keys:
            self._forget(now)
        return None

    def _forget(self, now: float) -> None:
        refilled = sorted(self._buckets, key=lambda k: -(self._buckets[k][0] + (now - self._buckets[k][1])
                                                         * self.per_minute / 60.0))
        for key in refilled[: len(self._buckets) - self.max_keys // 2]:
            del self._buckets[key]


# ---------------------------------------------------------------- headers

# Pages of the desk: their own stylesheet, no script at all, forms to the desk only, never framed.
PAGE_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
               "frame-src 'self'; frame-ancestors 'none'; base-uri 'none'")
# The issue as readers see it (an email-safe page: inline styles, remote images), shown in a
# frame of the draft page: no script either, and framed by the desk alone.
PREVIEW_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'none'; "
                  "frame-ancestors 'self'; base-uri 'none'; sandbox allow-popups allow-popups-to-escape-sandbox")


def security_headers(policy: str = PAGE_POLICY) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", policy.encode("ascii")),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"SAMEORIGIN" if "frame-ancestors 'self'" in policy else b"DENY"),
        (b"referrer-policy", b"no-referrer"),  # an unsubscribe URL holds the reader's token
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cache-control", b"no-store"),
    ]
