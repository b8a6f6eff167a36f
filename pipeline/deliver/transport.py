"""SMTP transport: credentials from the environment, one reused connection, and the three
ways a transaction can end badly (refused, no connection, uncertain after the data was handed over)."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pipeline.errors import PipelineError
from pipeline.models import DeliverySettings

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Credentials:
    user: str = field(repr=False)
    password: str = field(repr=False)

    def __repr__(self) -> str:  # never show a secret, even in a traceback's locals
        return "Credentials(<hidden>)"


def credentials_from_env(settings: DeliverySettings, env: Mapping[str, str]) -> Credentials | None:
    """SMTP credentials from the environment variables named in the config; None if unset."""
    user = env.get(settings.username_env, "")
    password = env.get(settings.password_env, "")
    if not user and not password:
        return None
    if not user or not password:
        missing = settings.username_env if not user else settings.password_env
        raise PipelineError(f"environment variable {missing} is not set (both {settings.username_env} and "
                            f"{settings.password_env} are needed to log in to the SMTP server)")
    if settings.security == "none" and settings.smtp_host not in LOOPBACK_HOSTS:
        raise PipelineError(f"refusing to send SMTP credentials unencrypted to {settings.smtp_host}: set "
                            "delivery.security to starttls or tls")
    return Credentials(user=user, password=password)


class Refused(Exception):
    """The server answered no for this recipient: 5xx (permanent) or 4xx (temporary)."""

    def __init__(self, code: int, reply: str):
        super().__init__(reply)
        self.code = code
        self.reply = reply

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600


class ConnectionTrouble(Exception):
    """No usable connection (refused, reset, timeout, 421) before the message was handed over."""


class Uncertain(Exception):
    """The connection broke after the end of the data was sent: accepted or not, we cannot know."""


def _reply(code: int, text: bytes | str) -> str:
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(words.split())}"


def _dot_stuffed(payload: bytes) -> bytes:
    """The DATA section of RFC 5321 §4.5.2: CRLF lines, leading dots doubled, ended by CRLF.CRLF."""
    data = re.sub(rb"\r?\n", b"\r\n", payload)
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class SmtpTransport:
    """One SMTP connection reused for every message of a send, reopened after trouble.

    smtplib's sendmail() is not used: it hides the moment the end of the data is written, and
    that moment is what tells a safe retry from a possible duplicate."""

    def __init__(self, settings: DeliverySettings, credentials: Credentials | None):
        self.settings = settings
        self._credentials = credentials
        self._smtp: smtplib.SMTP | None = None
        self._local_name = socket.getfqdn()
        self.connections = 0  # how many times a connection was opened (reuse is measurable)

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.settings.tls_ca_file:
            context.load_verify_locations(cafile=str(self.settings.tls_ca_file))
        return context

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.smtp_host, s.port, local_hostname=self._local_name,
                                                      timeout=s.timeout, context=self._tls_context())
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.port, local_hostname=self._local_name, timeout=s.timeout)
            smtp.ehlo()
            if s.security == "starttls":
                if not smtp.has_extn("starttls"):
                    smtp.close()
                    raise PipelineError(f"SMTP server {s.smtp_host}:{s.port} does not offer STARTTLS "
                                        "(delivery.security: starttls)")
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
        except ssl.SSLError as exc:
            raise PipelineError(f"TLS with {s.smtp_host}:{s.port} failed: {exc.reason or exc}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise ConnectionTrouble(f"cannot connect to {s.smtp_host}:{s.port}: {_describe(exc)}") from None
        if self._credentials is not None:
            try:
                smtp.login(self._credentials.user, self._credentials.password)
            except smtplib.SMTPAuthenticationError as exc:
                smtp.close()
                # The reply is the server's; the credentials themselves are never part of a message.
                raise PipelineError(f"SMTP server {s.smtp_host}:{s.port} refused the credentials of "
                                    f"${s.username_env} / ${s.password_env}: {_reply(exc.smtp_code, exc.smtp_error)}"
                                    ) from None
            except smtplib.SMTPNotSupportedError:
                smtp.close()
                raise PipelineError(f"SMTP server {s.smtp_host}:{s.port} does not offer AUTH; unset "
                                    f"${s.username_env} / ${s.password_env} or use another server") from None
            except (OSError, smtplib.SMTPException) as exc:
                smtp.close()
                raise ConnectionTrouble(f"login to {s.smtp_host}:{s.port} failed: {_describe(exc)}") from None
        self.connections += 1
        return smtp

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def _reset(self) -> None:
        """End a refused transaction so that the next one starts clean."""
        if self._smtp is None:
            return
        try:
            self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    def send(self, sender: str, recipient: str, payload: bytes, on_handover: Callable[[], None]) -> str:
        """One SMTP transaction; returns the server's acceptance reply. Calls `on_handover` just
        before the end of the data is written. Raises Refused, ConnectionTrouble or Uncertain."""
        if self._smtp is None:
            self._smtp = self._connect()
        smtp = self._smtp
        try:
            for command, argument in (("mail", sender), ("rcpt", recipient)):
                code, text = smtp.mail(argument) if command == "mail" else smtp.rcpt(argument)
                if code == 421:
                    self._drop()
                    raise ConnectionTrouble(_reply(code, text))
                if not 200 <= code < 300:
                    self._reset()
                    if command == "mail" and 500 <= code < 600:
                        raise PipelineError(f"SMTP server refused the sender {sender}: {_reply(code, text)}")
                    raise Refused(code, _reply(code, text))
            code, text = smtp.docmd("data")
            if code == 421:
                self._drop()
                raise ConnectionTrouble(_reply(code, text))
            if code != 354:
                self._reset()
                raise Refused(code, _reply(code, text))
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            raise ConnectionTrouble(_describe(exc)) from None
        on_handover()
        try:
            smtp.send(_dot_stuffed(payload))
            code, text = smtp.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            raise Uncertain(_describe(exc)) from None
        if 200 <= code < 300:
            return _reply(code, text)
        if code == 421:
            self._drop()
        raise Refused(code, _reply(code, text))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
