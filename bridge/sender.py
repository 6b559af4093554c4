"""The DICOM sender (Storage SCU): files to the PACS by C-STORE, as they are, plus C-ECHO.

Files are streamed from disk (``STORE_SEND_CHUNKED_DATASET``), never decoded, so each file
travels in its own transfer syntax: the association proposes exactly the (SOP class,
transfer syntax) pairs found in the files' meta, split over several associations when there
are more than 128. Warning statuses count as stored (manual §5, PACS practice). Transient
problems (refused, rejected, aborted, timed out) raise ``TransientSendError`` so the caller
can retry the files not yet delivered; a failure status for an image is final.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pydicom.filereader import read_file_meta_info
from pynetdicom import _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from .net import NAGLE_OFF
from .reactor import BridgeAE as AE  # associations with the event-driven reactors (bridge/reactor.py)
from .tls import probe_connection

log = logging.getLogger(__name__)

_config.STORE_SEND_CHUNKED_DATASET = True

MAX_CONTEXTS = 128
NETWORK_TIMEOUT_SECONDS = 30


class TransientSendError(RuntimeError):
    """The PACS could not be reached or dropped the association: worth another try later."""


class SendingInterrupted(Exception):
    """The bridge is stopping between two tries; the caller keeps the work for later."""


@dataclass(frozen=True)
class PacsTarget:
    """Where to send: the settings' host, port and AE titles."""

    host: str
    port: int
    called_ae: str
    calling_ae: str
    timeout_seconds: float = NETWORK_TIMEOUT_SECONDS
    tls: ssl.SSLContext | None = field(default=None, compare=False)  # None: plain DICOM

    @property
    def tls_args(self) -> tuple[ssl.SSLContext, str] | None:
        """pynetdicom's ``tls_args``: the host name is what the PACS certificate must name."""
        return (self.tls, self.host) if self.tls is not None else None


@dataclass(frozen=True)
class FileMeta:
    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str


@dataclass
class SendReport:
    """Per-file outcome of sending a set of files."""

    delivered: list[Path] = field(default_factory=list)
    warnings: dict[Path, int] = field(default_factory=dict)  # file -> warning status
    failed: dict[Path, str] = field(default_factory=dict)  # file -> why

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    round_trip_ms: float
    message: str


def read_meta(path: Path) -> FileMeta:
    """SOP class/instance and transfer syntax from the file meta only (no pixel data read)."""
    meta = read_file_meta_info(path)
    return FileMeta(path, str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID),
                    str(meta.TransferSyntaxUID))


def batches_by_context(metas: list[FileMeta]) -> list[list[FileMeta]]:
    """Group files so that each association needs at most 128 presentation contexts."""
    by_pair: dict[tuple[str, str], list[FileMeta]] = defaultdict(list)
    for meta in metas:
        by_pair[(meta.sop_class, meta.transfer_syntax)].append(meta)
    pairs = list(by_pair)
    return [[m for pair in pairs[i : i + MAX_CONTEXTS] for m in by_pair[pair]]
            for i in range(0, len(pairs), MAX_CONTEXTS)]


def _describe_failed_association(assoc, target: PacsTarget) -> str:  # noqa: ANN001 - pynetdicom Association
    """Why an association did not come up, in words an admin can act on."""
    if assoc.is_rejected:
        return "the PACS rejected the association (check the AE titles in the settings)"
    # pynetdicom reports a refused connection or a failed TLS handshake as an abort: look again, once
    problem = probe_connection(target.tls, target.host, target.port, min(target.timeout_seconds, 5))
    return problem or "the PACS aborted the association"


def _is_stored(status: int) -> bool:
    return status == 0x0000 or (status & 0xF000) == 0xB000


WaitForFile = Callable[[FileMeta], None]


def _no_wait(meta: FileMeta) -> None:
    """Files already on disk: nothing to wait for."""


def send_batch(target: PacsTarget, batch: list[FileMeta], report: SendReport, wait: WaitForFile = _no_wait) -> None:
    """One association for one batch; fills ``report``; raises TransientSendError.

    ``wait`` blocks until a file exists (the outbox sends while it is still unpacking).
    """
    ae = AE(ae_title=target.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_seconds
    for sop_class, syntax in dict.fromkeys((m.sop_class, m.transfer_syntax) for m in batch):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(target.host, target.port, ae_title=target.called_ae, max_pdu=0, evt_handlers=[NAGLE_OFF],
                         tls_args=target.tls_args)
    if not assoc.is_established:
        raise TransientSendError(_describe_failed_association(assoc, target))
    try:
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        done = set(report.delivered) | set(report.failed)
        for meta in batch:
            if meta.path in done:
                continue
            if (meta.sop_class, meta.transfer_syntax) not in accepted:
                report.failed[meta.path] = (f"the PACS does not accept SOP class {meta.sop_class} in transfer "
                                            f"syntax {meta.transfer_syntax}")
                continue
            wait(meta)
            response = assoc.send_c_store(meta.path)
            status = response.get("Status") if response is not None else None
            if status is None:
                raise TransientSendError("the association ended while sending (aborted or timed out)")
            if _is_stored(int(status)):
                report.delivered.append(meta.path)
                if status:
                    report.warnings[meta.path] = int(status)
            else:
                report.failed[meta.path] = f"the PACS answered status 0x{int(status):04X}"
    finally:
        if assoc.is_established:
            assoc.release()


def send_files(target: PacsTarget, metas: list[FileMeta], report: SendReport, parallel: int = 1,
               wait: WaitForFile = _no_wait) -> SendReport:
    """Send every file not yet delivered; raises TransientSendError (report keeps progress).

    With ``parallel`` > 1 the files are dealt round-robin to that many associations on their
    own threads (one Association per thread): a PACS that answers each C-STORE slowly, or
    stores on several threads, is then kept busy.
    """
    if parallel <= 1 or len(metas) < 2:
        for batch in batches_by_context(metas):
            send_batch(target, batch, report, wait)
        return report
    shares = [metas[i::parallel] for i in range(min(parallel, len(metas)))]
    reports = [SendReport(delivered=list(report.delivered)) for _ in shares]
    errors: list[Exception] = []

    def send_share(share: list[FileMeta], share_report: SendReport) -> None:
        try:
            for batch in batches_by_context(share):
                send_batch(target, batch, share_report, wait)
        except Exception as err:  # noqa: BLE001 - re-raised on the caller's thread below
            errors.append(err)

    threads = [threading.Thread(target=send_share, args=pair, name=f"send-{n}")
               for n, pair in enumerate(zip(shares, reports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    already = set(report.delivered)
    for share_report in reports:
        report.delivered.extend(p for p in share_report.delivered if p not in already)
        report.warnings.update(share_report.warnings)
        report.failed.update(share_report.failed)
    if errors:
        raise errors[0]
    return report


def echo(target: PacsTarget) -> EchoResult:
    """C-ECHO with the given target; never raises."""
    ae = AE(ae_title=target.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_seconds
    ae.add_requested_context(Verification)
    started = time.perf_counter()
    try:
        assoc = ae.associate(target.host, target.port, ae_title=target.called_ae, evt_handlers=[NAGLE_OFF],
                             tls_args=target.tls_args)
    except Exception as err:  # noqa: BLE001 - e.g. an unresolvable host name
        return EchoResult(False, 0.0, f"cannot connect to {target.host}:{target.port}: {err}")
    if not assoc.is_established:
        return EchoResult(False, (time.perf_counter() - started) * 1000,
                          f"C-ECHO failed: {_describe_failed_association(assoc, target)}")
    try:
        response = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    elapsed = (time.perf_counter() - started) * 1000
    status = response.get("Status") if response is not None else None
    if status == 0x0000:
        return EchoResult(True, elapsed, f"C-ECHO to {target.called_ae}@{target.host}:{target.port} succeeded")
    return EchoResult(False, elapsed, f"C-ECHO failed (status {status if status is not None else 'none'})")




def send_with_retries(target: PacsTarget, metas: list[FileMeta], report: SendReport, *, retries: int,
                      retry_delay_seconds: float, parallel: int = 1, wait: WaitForFile = _no_wait,
                      pause: Callable[[float], bool] = lambda seconds: bool(time.sleep(seconds))) -> SendReport:
    """``send_files`` retried on transient failures, the delay doubling each time.

    ``pause(seconds)`` waits between tries and returns True to give up (the bridge stopping),
    which raises SendingInterrupted. The last failure says how many tries were made.
    """
    delay = retry_delay_seconds
    for attempt in range(retries + 1):
        try:
            return send_files(target, metas, report, parallel, wait)
        except TransientSendError as err:
            if attempt == retries:
                raise TransientSendError(f"{err}; gave up after {attempt + 1} tries") from None
            log.warning("sending failed (%s); retry %d in %.0f s", err, attempt + 1, delay)
            if pause(delay):
                raise SendingInterrupted() from None
            delay *= 2
    return report
