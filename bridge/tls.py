"""DICOM over TLS: SSL contexts built from the settings' PEM files, and handshake diagnostics.

Plain DICOM stays the default; TLS is on when a certificate is configured (receiving) or
``send.tls`` is true (sending). Contexts require TLS 1.2 or newer (BCP 195). Private keys
must be unencrypted PEM files protected by file permissions: the bridge runs unattended and
has nobody to type a pass phrase. Key material is never logged, only file names.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pynetdicom import evt

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_SECONDS = 15.0
EXPIRY_WARNING_DAYS = 30
AFTER_HANDSHAKE_SECONDS = 1.0  # TLS 1.3 servers refuse a client certificate after the handshake


class TlsSetupError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file and the fix."""


class _HandshakeOnConnectionThread(ssl.SSLContext):
    """A server context whose sockets do not shake hands inside ``accept``.

    pynetdicom wraps each accepted socket in the listener's only thread; a default
    ``wrap_socket`` would run the handshake there, so one silent client would stop every
    other sender from connecting. :func:`finish_server_handshake` does it on the
    connection's own thread instead, where a failure can also be logged.
    """

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, *args, **kwargs):  # noqa: ANN001
        return super().wrap_socket(sock, server_side, False, *args, **kwargs)


def _path(value: str, setting: str) -> str:
    path = Path(value).expanduser()
    if not path.is_file():
        raise TlsSetupError(f"{setting}: {path} does not exist or is not a file")
    return str(path)


def _load_chain(context: ssl.SSLContext, cert: str, key: str, prefix: str) -> None:
    certfile = _path(cert, f"{prefix}.tls_cert")
    keyfile = _path(key, f"{prefix}.tls_key") if key else None
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except (ssl.SSLError, OSError, TypeError) as err:
        raise TlsSetupError(
            f"{prefix}.tls_cert/{prefix}.tls_key: cannot load {certfile}"
            f"{' with ' + keyfile if keyfile else ''} ({_reason(err)}); both must be PEM, the key unencrypted "
            f"and belonging to the certificate") from None


def _no_password() -> bytes:
    raise TypeError("the private key is encrypted")


def _load_ca(context: ssl.SSLContext, ca: str, setting: str) -> None:
    cafile = _path(ca, setting)
    try:
        context.load_verify_locations(cafile=cafile)
    except (ssl.SSLError, OSError) as err:
        raise TlsSetupError(f"{setting}: cannot load CA certificates from {cafile} ({_reason(err)})") from None


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext | None:
    """The receiver's context, or None for plain DICOM (no certificate configured).

    With ``ca`` set, senders must present a certificate signed by it.
    """
    if not cert:
        if key or ca:
            raise TlsSetupError("receive.tls_key/receive.tls_ca are set but receive.tls_cert is empty: "
                                "set the certificate too, or clear them for plain DICOM")
        return None
    context = _HandshakeOnConnectionThread(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key, "receive")
    if ca:
        _load_ca(context, ca, "receive.tls_ca")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(enabled: bool, ca: str, cert: str, key: str) -> ssl.SSLContext | None:
    """The sender's context, or None for plain DICOM.

    The PACS certificate is checked against ``ca`` alone (or, when empty, the system's trusted
    CAs) and must name the host in ``send.host``.
    """
    if not enabled:
        return None
    if ca:  # only this CA: a practice's own PACS certificate should not be trusted by chance
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
        _load_ca(context, ca, "send.tls_ca")
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        _load_chain(context, cert, key, "send")
    elif key:
        raise TlsSetupError("send.tls_key is set but send.tls_cert is empty")
    return context


def _reason(err: BaseException) -> str:
    if isinstance(err, ssl.SSLError) and err.reason:
        reason = err.reason.replace("_", " ").lower()
        verify = getattr(err, "verify_message", "")  # e.g. "certificate has expired"
        return f"{reason} ({verify})" if verify else reason
    return str(err) or type(err).__name__


def explain_handshake_error(err: BaseException, peer: str, *, we_are_server: bool) -> str:
    """One sentence an admin can act on, for a failed TLS handshake."""
    reason = _reason(err)
    text = reason.lower()
    if "wrong version number" in text or "http request" in text or "unknown protocol" in text or \
            "record layer failure" in text:
        hint = ("the sender spoke plain DICOM to the TLS port (configure TLS at the sender, or clear "
                "receive.tls_cert)" if we_are_server else "the PACS port does not speak TLS (clear send.tls?)")
    elif "expired" in text and "alert" in text:
        hint = ("the sender says our certificate (receive.tls_cert) has expired: renew it" if we_are_server
                else "the PACS says our client certificate (send.tls_cert) has expired: renew it")
    elif "expired" in text:
        hint = ("the sender's certificate has expired" if we_are_server
                else "the PACS certificate has expired (the PACS must renew it)")
    elif "peer did not return a certificate" in text or "certificate required" in text:
        if not we_are_server:
            hint = "the PACS requires a client certificate: set send.tls_cert and send.tls_key"
        else:
            hint = "the sender presented no client certificate, which receive.tls_ca requires"
    elif "alert" in text and ("ca" in text.split() or "certificate" in text):
        hint = ("the sender does not trust our certificate (receive.tls_cert): give it our CA" if we_are_server
                else "the PACS does not accept our client certificate (send.tls_cert)")
    elif "certificate verify failed" in text:
        hint = ("the sender's certificate is not signed by receive.tls_ca" if we_are_server
                else "the PACS certificate is not signed by send.tls_ca (or a system CA), or does not name send.host")
    elif isinstance(err, (socket.timeout, TimeoutError)):
        hint = "no TLS handshake within the timeout"
    else:
        hint = "check the certificates at both ends"
    return f"TLS handshake with {peer} failed: {reason}; {hint}"


def finish_server_handshake(event: evt.Event, on_failure: Callable[[str, str], None]) -> None:
    """EVT_CONN_OPEN handler of the receiver: complete TLS on this connection's thread.

    On failure the connection is closed before any DICOM is read and ``on_failure`` gets
    the peer's address and the explanation (the receiver logs it).
    """
    transport = event.assoc.dul.socket
    sock = getattr(transport, "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        return
    previous = sock.gettimeout()
    sock.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
    try:
        sock.do_handshake()
        sock.settimeout(previous)
    except (ssl.SSLError, OSError) as err:
        peer = event.address[0] if event.address else "?"  # type: ignore[attr-defined]  # set for EVT_CONN_OPEN
        on_failure(peer, explain_handshake_error(err, peer, we_are_server=True))
        transport.close()  # type: ignore[union-attr]  # the socket above belongs to it


def probe_connection(context: ssl.SSLContext | None, host: str, port: int, timeout: float) -> str | None:
    """Connect to the PACS (and shake hands, with a TLS context); None when that works, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            if context is not None:
                with context.wrap_socket(raw, server_hostname=host) as tls:
                    return _refused_after_handshake(tls, host, port)
    except ssl.SSLError as err:
        return explain_handshake_error(err, f"{host}:{port}", we_are_server=False)
    except OSError as err:
        return f"no connection to the PACS at {host}:{port} ({err.strerror or err})"
    return None


def _refused_after_handshake(tls: ssl.SSLSocket, host: str, port: int) -> str | None:
    """With TLS 1.3 a PACS refuses our client certificate only after the handshake: listen briefly."""
    tls.settimeout(AFTER_HANDSHAKE_SECONDS)
    try:
        data = tls.recv(1)
    except ssl.SSLError as err:
        return explain_handshake_error(err, f"{host}:{port}", we_are_server=False)
    except OSError:
        return None  # silence: the PACS is waiting for our association request, as it should
    if data:
        return None
    return (f"the PACS at {host}:{port} closed the TLS connection right after the handshake "
            "(does it accept our client certificate, send.tls_cert?)")


def certificate_warnings(files: dict[str, str], now: float | None = None) -> list[str]:
    """Warnings for our own certificates (setting name -> PEM file) that expired or expire soon."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)  # the stdlib's own PEM reader
    if decode is None:
        return []
    now = time.time() if now is None else now
    warnings = []
    for setting, path in files.items():
        if not path:
            continue
        try:
            expires = ssl.cert_time_to_seconds(decode(str(Path(path).expanduser()))["notAfter"])
        except (OSError, ValueError, KeyError, ssl.SSLError):
            continue  # unreadable files are refused by the settings check, with a clearer message
        days = (expires - now) / 86400
        ending = time.strftime("%Y-%m-%d", time.localtime(expires))
        if days < 0:
            warnings.append(f"{setting} {path} expired on {ending}: peers will refuse it; renew the certificate")
        elif days < EXPIRY_WARNING_DAYS:
            warnings.append(f"{setting} {path} expires on {ending} (in {days:.0f} days): renew the certificate")
    return warnings
