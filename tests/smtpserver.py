"""A real SMTP server on 127.0.0.1 (aiosmtpd) for the tests that send mail: it records every
message as raw bytes and can refuse given addresses permanently (550) or temporarily (451),
require a login, or hold a message's reply so that a real `python -m pipeline send` process can
be SIGKILLed at a known point. The `smtp` fixture of conftest.py starts one per test."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.helpers import free_port


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    peer: Any

    def parsed(self) -> EmailMessage:
        message = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(message, EmailMessage)
        return message


class Inbox:
    """aiosmtpd handler: records messages, refuses addresses on demand, can hold one reply."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.rcpt_attempts: Counter[str] = Counter()
        self.permanent: set[str] = set()
        self.temporary: dict[str, int] = {}  # address -> how many more times to answer 451
        self.hold_at: int | None = None  # hold the reply to this (1-based) message
        self.reached = threading.Event()
        self.release = threading.Event()
        self.logins: list[tuple[bytes, bytes]] = []
        self.expected_login: tuple[bytes, bytes] | None = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        self.rcpt_attempts[address] += 1
        if address in self.permanent:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        if self.temporary.get(address, 0) > 0:
            self.temporary[address] -= 1
            return f"451 4.2.0 <{address}>: mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                      session.peer))
        if self.hold_at is not None and len(self.messages) == self.hold_at:
            self.reached.set()
            # Wait in a thread so the server's event loop keeps running.
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        return f"250 2.0.0 Ok: queued as {len(self.messages)}"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        ok = (auth_data.login, auth_data.password) == self.expected_login
        # handled=False: the server answers 535 itself on a refusal.
        return AuthResult(success=ok, handled=ok)

    def recipients(self) -> list[str]:
        """Every recipient of every message, in the order the messages came."""
        return [address for message in self.messages for address in message.rcpt_tos]

    def by_recipient(self) -> Counter[str]:
        return Counter(self.recipients())


@dataclasses.dataclass
class SmtpServer:
    inbox: Inbox
    port: int
    controller: Controller

    def stop(self) -> None:
        self.inbox.release.set()  # a held reply must not keep the server's thread waiting
        self.controller.stop()


def start_server(auth: tuple[bytes, bytes] | None = None, port: int | None = None) -> SmtpServer:
    """A server on `port` (default: a free one), started; with `auth`, it requires that login
    and password."""
    inbox = Inbox()
    kwargs: dict[str, Any] = {}
    if auth is not None:
        inbox.expected_login = auth
        kwargs = {"authenticator": inbox.authenticate, "auth_required": True, "auth_require_tls": False}
    port = free_port() if port is None else port
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return SmtpServer(inbox, port, controller)
