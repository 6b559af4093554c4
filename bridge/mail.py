"""Handing one e-mail to the practice's mail server (SMTP), as the settings say.

The password comes from the environment variable ``DICOMBRIDGE_SMTP_PASSWORD``, else from
``notify.smtp_password_file``, else from ``notify.smtp_password``; it is passed to smtplib
only and never appears in a message this module produces.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from .settings import Settings

PASSWORD_VARIABLE = "DICOMBRIDGE_SMTP_PASSWORD"
SMTP_TIMEOUT_SECONDS = 20


class MailError(RuntimeError):
    """The mail could not be handed over; the message says why (never containing secrets)."""


def smtp_password(settings: Settings) -> str:
    if os.environ.get(PASSWORD_VARIABLE):
        return os.environ[PASSWORD_VARIABLE]
    if settings.notify_smtp_password_file:
        path = Path(settings.notify_smtp_password_file).expanduser()
        try:
            return next(iter(path.read_text(encoding="utf-8").splitlines()), "")  # first line; empty file: ""
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or err
            raise MailError(f"cannot read notify.smtp_password_file {path}: {reason}") from None
    return settings.notify_smtp_password


def new_message(settings: Settings, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.notify_sender
    message["To"] = ", ".join(settings.notify_recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=settings.notify_sender.rsplit("@", 1)[-1])
    message.set_content(body)
    return message


def _login(server: smtplib.SMTP, user: str, password: str) -> None:
    """One AUTH PLAIN when offered (smtplib's login() would try the wrong password again with
    every other mechanism, which counts towards account lock-outs); else smtplib's choice."""
    server.ehlo_or_helo_if_needed()
    if "plain" in server.esmtp_features.get("auth", "").lower().split():
        server.user, server.password = user, password
        server.auth("PLAIN", server.auth_plain)
    else:
        server.login(user, password)


def send_mail(settings: Settings, message: EmailMessage, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
    """Deliver ``message`` to the configured server; raises MailError."""
    host, port, security = settings.notify_smtp_host, settings.notify_smtp_port, settings.notify_smtp_security
    where = f"mail server {host}:{port}"
    if not host:
        raise MailError("notify.smtp_host is not set")
    try:
        password = smtp_password(settings)
        context = ssl.create_default_context()
        if security == "ssl":
            server: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            server = smtplib.SMTP(host, port, timeout=timeout)
        with server:
            if security == "starttls":
                server.starttls(context=context)
            if settings.notify_smtp_user:
                _login(server, settings.notify_smtp_user, password)
            server.send_message(message)
    except smtplib.SMTPAuthenticationError as err:
        raise MailError(f"{where} refused the login of {settings.notify_smtp_user!r} ({err.smtp_code}); "
                        f"check notify.smtp_user and the password") from None
    except smtplib.SMTPNotSupportedError:
        raise MailError(f"{where} does not offer STARTTLS or login; check notify.smtp_security") from None
    except smtplib.SMTPRecipientsRefused as err:
        raise MailError(f"{where} refused the recipients {', '.join(err.recipients)}") from None
    except smtplib.SMTPResponseException as err:
        answer = err.smtp_error.decode(errors="replace") if isinstance(err.smtp_error, bytes) else err.smtp_error
        raise MailError(f"{where} answered {err.smtp_code} {answer}") from None
    except ssl.SSLError as err:
        raise MailError(f"TLS with {where} failed ({err.reason or err}); check notify.smtp_security/port") from None
    except (TimeoutError, smtplib.SMTPException, OSError) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise MailError(f"cannot reach {where} ({reason})") from None
