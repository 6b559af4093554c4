"""A real SMTP server on loopback for the notification tests (aiosmtpd's controller)."""

from __future__ import annotations

import email
import email.policy
import queue
import ssl
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class _Collect:
    def __init__(self, inbox: queue.Queue[EmailMessage]) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802 - aiosmtpd's hook
        self.inbox.put(email.message_from_bytes(envelope.original_content or envelope.content,
                                                policy=email.policy.default))
        return "250 Message accepted"


class MailServer:
    """Collects every mail it accepts; with ``login`` it demands that user and password."""

    def __init__(self, port: int, login: tuple[str, str] | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.inbox: queue.Queue[EmailMessage] = queue.Queue()
        self.logins: list[str] = []
        options = {}
        if login is not None:
            options.update(authenticator=self._authenticator(login), auth_require_tls=False)
        if tls_context is not None:
            options.update(tls_context=tls_context, require_starttls=True)
        self.controller = Controller(_Collect(self.inbox), hostname="127.0.0.1", port=port, **options)
        self.controller.start()

    def _authenticator(self, login: tuple[str, str]):
        def check(server, session, envelope, mechanism, auth_data):  # noqa: ANN001 - aiosmtpd's hook
            ok = (isinstance(auth_data, LoginPassword)
                  and (auth_data.login.decode(), auth_data.password.decode()) == login)
            self.logins.append("ok" if ok else "refused")
            return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

        return check

    def next_mail(self, timeout: float = 60) -> EmailMessage:
        return self.inbox.get(timeout=timeout)  # raises queue.Empty: no mail came

    def mails_now(self) -> list[EmailMessage]:
        mails = []
        while not self.inbox.empty():
            mails.append(self.inbox.get_nowait())
        return mails

    def stop(self) -> None:
        self.controller.stop()


def text_of(mail: EmailMessage) -> str:
    """Headers and body as one string, for 'is this name anywhere in it' checks."""
    headers = "".join(f"{name}: {value}\n" for name, value in mail.items())
    return headers + mail.get_body(("plain",)).get_content()
