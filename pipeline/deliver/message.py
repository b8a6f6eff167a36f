"""Message building: one MIME message per reader (text and HTML), its headers (List-Unsubscribe
one-click, Message-ID), and the unsubscribe links and tokens."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import html
import re
from dataclasses import dataclass
from email import policy as email_policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from pipeline.deliver.recipients import Recipient, reader_problem
from pipeline.errors import PipelineError
from pipeline.models import DeliverySettings, Issue, RenderedIssue
from pipeline.render import email_subject


class _ListUnsubscribeHeader(UnstructuredHeader, BaseHeader):
    """List-Unsubscribe folded only between its URIs. The stock folder turns an URL longer than
    a line into RFC 2047 encoded words, which no mail client reads as a link (RFC 2369 wants
    the URIs verbatim); a line up to 998 octets is allowed by RFC 5322. (BaseHeader is what the
    registry mixes in anyway; naming it here tells type checkers what a header is.)"""

    def fold(self, *, policy: email_policy.Policy[Any]) -> str:
        return f"{self.name}: " + ("," + policy.linesep + " ").join(str(self).split(", ")) + policy.linesep


@functools.cache  # built once: a registry makes its header classes on first use, ~2 ms a message
def _message_policy() -> email_policy.EmailPolicy[EmailMessage]:
    registry = HeaderRegistry()  # our own registry: never change the shared one of policy.SMTP
    registry.map_to_type("list-unsubscribe", _ListUnsubscribeHeader)
    return email_policy.SMTP.clone(header_factory=registry)


def subject_for(issue: Issue) -> str:
    """'Tech Matin du mardi 6 mai — IA de Meta : l’intérêt légitime…': see render.email_subject."""
    return email_subject(issue)


def unsubscribe_token(secret: str, email: str) -> str:
    """An HMAC of the address: the unsubscribe endpoint can check a request without a database,
    and nobody can unsubscribe someone else by guessing."""
    return hmac.new(secret.encode("utf-8"), email.lower().encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def unsubscribe_token_matches(secret: str, email: str, token: str) -> bool:
    """Whether `token` is the one `unsubscribe_token` gives this address (compared in constant time)."""
    return hmac.compare_digest(unsubscribe_token(secret, email).encode("ascii"),
                               token.encode("utf-8", "replace"))


@dataclass(frozen=True)
class UnsubscribeRoute:
    """Where the one-click unsubscribe requests of `delivery.unsubscribe_url` arrive: the URL's
    path, and the names of its query parameters holding {email} and {token}."""

    path: str
    email_param: str
    token_param: str


def unsubscribe_route(settings: DeliverySettings) -> UnsubscribeRoute:
    """The path and query parameters of `delivery.unsubscribe_url`, for the endpoint that serves it
    (`pipeline desk`). The URL must carry {email} and {token} as whole query values."""
    url = settings.unsubscribe_url
    parts = urlsplit(url)
    params: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if value in ("{email}", "{token}"):
            params[value] = name
    missing = [f"{{{field}}}" for field in ("email", "token") if f"{{{field}}}" not in params]
    if missing or "{" in parts.path:
        raise PipelineError(f"delivery.unsubscribe_url {url!r}: the desk needs {{email}} and {{token}} as query "
                            "values and nothing else to fill in its path, e.g. "
                            "https://…/desinscription?email={email}&token={token}")
    return UnsubscribeRoute(path=parts.path or "/", email_param=params["{email}"], token_param=params["{token}"])


@dataclass(frozen=True)
class UnsubscribeLinks:
    mailto: str
    https: str


# A reader holds their own token, an HMAC of their address: a short key could be found offline
# from it by brute force, and then every other reader's token forged.
MIN_SECRET_BYTES = 32


def unsubscribe_links(settings: DeliverySettings, email: str, secret: str | None) -> UnsubscribeLinks:
    needs_token = "{token}" in settings.unsubscribe_url or "{token}" in settings.unsubscribe_mailto
    if needs_token and not secret:
        raise PipelineError(f"delivery.unsubscribe_url uses {{token}} but environment variable "
                            f"{settings.unsubscribe_secret_env} is not set")
    if needs_token and secret and len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise PipelineError(f"environment variable {settings.unsubscribe_secret_env} holds "
                            f"{len(secret.encode('utf-8'))} bytes; the unsubscribe secret needs at least "
                            f"{MIN_SECRET_BYTES} (make one with: python3 -c 'import secrets; "
                            "print(secrets.token_urlsafe(32))')")
    token = unsubscribe_token(secret, email) if secret else ""
    values = {"email": quote(email, safe=""), "token": token}
    mailto = settings.unsubscribe_mailto or f"mailto:{settings.from_address}?subject=unsubscribe"
    return UnsubscribeLinks(mailto=mailto.format(**values), https=settings.unsubscribe_url.format(**values))


def _with_unsubscribe_footer(rendered: RenderedIssue, name: str, links: UnsubscribeLinks) -> tuple[str, str]:
    """The issue's text and HTML with a personal unsubscribe line at the very end."""
    text = rendered.text.rstrip("\n") + f"\n\nPour ne plus recevoir {name} :\n{links.https}\n"
    line = (f'<p style="font-family:Arial,Helvetica,sans-serif;font-size:12px;color:#666666;text-align:center;'
            f'margin:16px 0">Pour ne plus recevoir {html.escape(name)} : '
            f'<a href="{html.escape(links.https)}" style="color:#666666">se désinscrire</a></p>\n')
    page = rendered.html
    end = page.rfind("</body>")
    page = page[:end] + line + page[end:] if end >= 0 else page + line
    return text, page


def build_message(issue: Issue, rendered: RenderedIssue, settings: DeliverySettings, recipient: Recipient,
                  message_id: str, now: dt.datetime, unsubscribe_secret: str | None) -> EmailMessage:
    """One message for one reader: multipart/alternative (text, then HTML), To that reader only."""
    # Checked when the file is read; again here, as no header may ever carry a line break (an
    # encoded word "=?…?=" in a name would even be decoded into one by the mail library).
    problem = reader_problem(recipient.email, recipient.name)
    if problem:
        raise PipelineError(problem)
    name = issue.newsletter.name
    links = unsubscribe_links(settings, recipient.email, unsubscribe_secret)
    text, page = _with_unsubscribe_footer(rendered, name, links)
    message = EmailMessage(policy=_message_policy())
    message["Subject"] = subject_for(issue)
    message["From"] = Address(settings.from_name or name, addr_spec=settings.from_address)
    message["To"] = Address(recipient.name, addr_spec=recipient.email)
    if settings.reply_to:
        message["Reply-To"] = settings.reply_to
    message["Date"] = format_datetime(now.astimezone(dt.UTC))
    message["Message-ID"] = message_id
    domain = settings.from_address.rsplit("@", 1)[1]
    message["List-Id"] = f"{name} <{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.{domain}>"
    message["List-Unsubscribe"] = f"<{links.mailto}>, <{links.https}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # quoted-printable keeps every line under 78 octets and the text greppable in the raw bytes.
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(page, subtype="html", charset="utf-8", cte="quoted-printable")
    return message


def new_message_id(date: dt.date, settings: DeliverySettings) -> str:
    return make_msgid(idstring=f"techmatin.{date.isoformat()}", domain=settings.from_address.rsplit("@", 1)[1])
