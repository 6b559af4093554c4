"""The DICOM sender (Storage SCU): files to the PACS by C-STORE, as they are, plus C-ECHO.

Files are streamed from disk (``STORE_SEND_CHUNKED_DATASET``), never decoded, so each file
travels in its own transfer syntax: the association proposes the (SOP class, transfer syntax)
pairs found in the files' meta and, per pair, a second context with the syntaxes the file can
be converted to without loss (``transcode.fallback_syntaxes``), split over several associations
past 128 contexts. A file whose own syntax is refused is converted and the copy sent. Deflated
files are read and re-deflated by pynetdicom (their raw stream may be odd-length).
Warning statuses count as stored (README "What happens to a ZIP in
Outbox_Auto", PACS practice). Transient
problems (refused, rejected, aborted, timed out) raise ``TransientSendError`` so the caller
can retry the files not yet delivered; ``PacsUnreachable`` (no association at all) tells the
outbox to wait the outage out rather than retry at once. 0xA7xx (out of resources) is transient
too: those images are sent again later. Any other failure status for an image is final.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from . import fast_send
from .fast_send import FastSendAE as AE  # event-driven reactors (bridge/reactor.py), the fast path
from .layout import write_whole
from .net import NAGLE_OFF
from .tls import probe_connection
from .transcode import ConversionError, convert, fallback_syntaxes

log = logging.getLogger(__name__)


MAX_CONTEXTS = 128
_copy_numbers = itertools.count(1)  # names of converted copies, unique across sending threads
NETWORK_TIMEOUT_SECONDS = 30


# Why an association or a message exchange failed (the CLI's exit codes tell them apart)
NO_CONNECTION = "no connection"  # nothing listening, unknown host, TLS handshake failed
REJECTED = "rejected"  # the PACS answered A-ASSOCIATE-RJ
ASSOCIATION_ABORTED = "aborted"  # aborted, ended or timed out; or a failure status to C-ECHO


class TransientSendError(RuntimeError):
    """The PACS could not be reached or dropped the association: worth another try later."""

    def __init__(self, message: str, failure: str = ASSOCIATION_ABORTED) -> None:
        super().__init__(message)
        self.failure = failure


class PacsUnreachable(TransientSendError):
    """No association came up (refused, rejected, no route, TLS): nothing was sent this time."""


class SendingInterrupted(Exception):
    """The bridge is stopping between two tries; the caller keeps the work for later."""


@dataclass(frozen=True)
class PacsTarget:
    """Where to send: the settings' host, port and AE titles."""

    host: str
    port: int
    called_ae: str
    calling_ae: str
    network_timeout_seconds: float = NETWORK_TIMEOUT_SECONDS  # ACSE, DIMSE and socket: one wait at a time
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
    label: str = ""  # what a person knows the file by (its name in the ZIP); the path if empty

    @property
    def name(self) -> str:
        return self.label or self.path.name


# One table of status texts (PS3.4 Annex B and C.4.2.1.4), for reasons an admin can act on.
STATUS_TEXTS: dict[int, str] = {
    0x0000: "success", 0x0001: "success (warning: attribute list error)",
    0x0107: "warning: attribute list error", 0x0110: "processing failure", 0x0111: "duplicate SOP instance",
    0x0117: "invalid object instance", 0x0122: "SOP class not supported", 0x0124: "not authorised",
    0x0210: "duplicate invocation", 0x0211: "unrecognised operation", 0x0212: "mistyped argument",
    0x0213: "resource limitation", 0xA700: "out of resources", 0xA900: "data set does not match SOP class",
    0xB000: "warning: coercion of data elements", 0xB006: "warning: elements discarded",
    0xB007: "warning: data set does not match SOP class", 0xC000: "cannot understand",
}
STATUS_RANGES: tuple[tuple[int, int, str], ...] = (  # ranges the standard leaves to the PACS
    (0xA700, 0xA7FF, "out of resources"), (0xA900, 0xA9FF, "data set does not match SOP class"),
    (0xC000, 0xCFFF, "cannot understand"),
)


def describe_status(status: int) -> str:
    """``0xA700 out of resources``: the code and what it means."""
    text = STATUS_TEXTS.get(status) or next((t for low, high, t in STATUS_RANGES if low <= status <= high),
                                            "unknown status")
    return f"0x{status:04X} {text}"


def is_out_of_resources(status: int) -> bool:
    """0xA7xx: the PACS asks us to try again later (the bridge's own receiver answers it when full)."""
    return 0xA700 <= status <= 0xA7FF


@dataclass
class SendReport:
    """Per-file outcome of sending a set of files."""

    delivered: list[Path] = field(default_factory=list)
    warnings: dict[Path, int] = field(default_factory=dict)  # file -> warning status
    failed: dict[Path, str] = field(default_factory=dict)  # file -> why
    deferred: dict[Path, str] = field(default_factory=dict)  # file -> why it is worth another try (0xA700)
    converted: dict[Path, str] = field(default_factory=dict)  # file -> "from X to Y (why)", sent as a copy

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    round_trip_ms: float
    message: str
    failure: str = ""  # NO_CONNECTION, REJECTED or ASSOCIATION_ABORTED when not ok


def read_meta(path: Path) -> FileMeta:
    """SOP class/instance and transfer syntax from the file meta only (no pixel data read)."""
    meta = read_file_meta_info(path)
    return FileMeta(path, str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID),
                    str(meta.TransferSyntaxUID))


def contexts_for(sop_class: str, transfer_syntax: str) -> list[list[str]]:
    """The file's own syntax, then (as DCMTK storescu does) one context with its lossless fallbacks."""
    fallbacks = [ts for ts in fallback_syntaxes(transfer_syntax) if ts != transfer_syntax]
    return [[transfer_syntax], fallbacks] if fallbacks else [[transfer_syntax]]


def batches_by_context(metas: list[FileMeta]) -> list[list[FileMeta]]:
    """Group files so that each association needs at most 128 presentation contexts."""
    by_pair: dict[tuple[str, str], list[FileMeta]] = defaultdict(list)
    for meta in metas:
        by_pair[(meta.sop_class, meta.transfer_syntax)].append(meta)
    batches: list[list[FileMeta]] = []
    used = MAX_CONTEXTS
    for pair, files in by_pair.items():
        needed = len(contexts_for(*pair))
        if used + needed > MAX_CONTEXTS:
            batches.append([])
            used = 0
        batches[-1].extend(files)
        used += needed
    return batches


def syntax_name(transfer_syntax: str) -> str:
    """``JPEG 2000 Image Compression`` for a known UID, the UID itself otherwise."""
    name = UID(transfer_syntax).name
    return name if name != transfer_syntax else transfer_syntax


def sop_class_name(sop_class: str) -> str:
    name = UID(sop_class).name
    return name if name != sop_class else f"SOP class {sop_class}"


def refusal(sop_class: str, syntaxes: list[str]) -> str:
    """Why nothing could be agreed for a file: its SOP class and every syntax the PACS refused."""
    return (f"the PACS accepts {sop_class_name(sop_class)} in none of the transfer syntaxes the bridge can send "
            f"it in ({', '.join(syntax_name(ts) for ts in syntaxes)})")


def _describe_failed_association(assoc, target: PacsTarget) -> tuple[str, str]:  # noqa: ANN001 - Association
    """Why an association did not come up: (failure class, words an admin can act on)."""
    if assoc.is_rejected:
        return REJECTED, "the PACS rejected the association (check the AE titles in the settings)"
    # pynetdicom reports a refused connection or a failed TLS handshake as an abort: look again, once
    problem = probe_connection(target.tls, target.host, target.port, min(target.network_timeout_seconds, 5))
    return (NO_CONNECTION, problem) if problem else (ASSOCIATION_ABORTED, "the PACS aborted the association")


def _is_stored(status: int) -> bool:
    return status == 0x0000 or (status & 0xF000) == 0xB000


# Blocks until a file can be sent; returns its bytes when they are held in memory, None when
# they are in ``FileMeta.path`` (the outbox sends while it is still unpacking: safe_unzip.UnpackedMembers).
WaitForFile = Callable[[FileMeta], "bytes | None"]


def _no_wait(meta: FileMeta) -> None:
    """Files already on disk: nothing to wait for."""


def send_batch(target: PacsTarget, batch: list[FileMeta], report: SendReport, wait: WaitForFile = _no_wait,
               convert_into: Path | None = None) -> None:
    """One association for one batch; fills ``report``; raises TransientSendError.

    ``wait`` blocks until a file can be sent (the outbox sends while it is still unpacking) and
    may hand its bytes over instead of leaving them in the file. A file whose own syntax the PACS
    refuses is converted to an accepted fallback into ``convert_into`` (``transcode``) and the
    copy is sent; without a folder it fails with the refusal.
    """
    ae = AE(ae_title=target.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.network_timeout_seconds
    pairs = list(dict.fromkeys((m.sop_class, m.transfer_syntax) for m in batch))
    for sop_class, syntax in pairs:
        for syntaxes in contexts_for(sop_class, syntax):
            ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate(target.host, target.port, ae_title=target.called_ae, max_pdu=0, evt_handlers=[NAGLE_OFF],
                         tls_args=target.tls_args)
    if not assoc.is_established:
        if assoc.rejected_contexts and not assoc.accepted_contexts:  # pynetdicom aborts: nothing agreed
            for meta in batch:
                if meta.path not in report.delivered:
                    report.failed[meta.path] = refusal(meta.sop_class, [
                        ts for group in contexts_for(meta.sop_class, meta.transfer_syntax) for ts in group])
            return
        failure, why = _describe_failed_association(assoc, target)
        raise PacsUnreachable(why, failure)
    keep_responses_from_reactor(assoc)
    try:
        with fast_send.reactor_held(assoc):
            _store_batch(assoc, batch, wait, convert_into, report)
    finally:
        if assoc.is_established:
            assoc.release()


def _store_batch(assoc, batch: list[FileMeta], wait: WaitForFile,  # noqa: ANN001 - pynetdicom Association
                 convert_into: Path | None, report: SendReport) -> None:
    """The C-STOREs of one association, in order (files already in ``report`` skipped); each result
    goes into ``report``."""
    accepted: dict[str, set[str]] = defaultdict(set)
    for cx in assoc.accepted_contexts:
        accepted[str(cx.abstract_syntax)].add(str(cx.transfer_syntax[0]))
    done = set(report.delivered) | set(report.failed)
    for message_id, meta in enumerate(batch, start=1):
        if meta.path in done:
            continue
        data = wait(meta)
        to_send: Path | Dataset = meta.path
        fast_context = fast_send.usable_context(assoc, meta.sop_class, meta.transfer_syntax) \
            if assoc.is_established else None  # set: the file goes as it is, through the fast path
        if data is not None and fast_context is None:
            write_whole(meta.path, data)  # pynetdicom and the converter read files; a later try finds it
            data = None
        if meta.transfer_syntax not in accepted[meta.sop_class]:
            converted = _converted_copy(meta, accepted[meta.sop_class], convert_into, report)
            if converted is None:
                continue
            to_send = converted
        elif meta.transfer_syntax == DeflatedExplicitVRLittleEndian:
            dataset = _deflated_dataset(meta, report)  # pynetdicom re-deflates it, padded to even length
            if dataset is None:
                continue
            to_send = dataset
        if not assoc.is_established:  # e.g. a PACS closing idle associations while we unpacked
            raise TransientSendError("the PACS closed the association while the bridge was unpacking")
        try:
            status = _store(assoc, to_send, meta, message_id % 0x10000 or 1, fast_context, data)
        except RuntimeError as err:  # pynetdicom: "association ... must be established"
            raise TransientSendError(f"the association ended while sending ({err})") from None
        if status is None:
            raise TransientSendError("the association ended while sending (aborted or timed out)")
        if _is_stored(int(status)):
            report.delivered.append(meta.path)
            report.deferred.pop(meta.path, None)
            if status:
                report.warnings[meta.path] = int(status)
        elif is_out_of_resources(int(status)):
            report.deferred[meta.path] = f"the PACS answered {describe_status(int(status))}"
        else:
            report.failed[meta.path] = f"the PACS answered {describe_status(int(status))}"


def _store(assoc, to_send: Path | Dataset, meta: FileMeta, message_id: int,  # noqa: ANN001
           fast_context: int | None, data: bytes | None) -> int | None:
    """One C-STORE: the file (or ``data``, its bytes) as it is through the fast path on
    ``fast_context`` (its own syntax was accepted: ``fast_send.usable_context``), else
    ``to_send`` through pynetdicom's ``send_c_store``; the status, None if none came."""
    if fast_context is not None:
        return fast_send.send_c_store(assoc, fast_context, meta.path, meta.sop_class, meta.sop_instance,
                                      message_id, data)
    response = assoc.send_c_store(to_send, msg_id=message_id)
    status = response.get("Status") if response is not None else None
    return int(status) if status is not None else None


def _converted_copy(meta: FileMeta, accepted: set[str], folder: Path | None, report: SendReport) -> Path | None:
    """A copy of ``meta``'s file in a syntax the PACS accepted, or None (the reason is in ``report.failed``)."""
    choice = next((ts for ts in fallback_syntaxes(meta.transfer_syntax) if ts in accepted), None)
    if choice is None or folder is None:
        report.failed[meta.path] = refusal(meta.sop_class, [meta.transfer_syntax, *fallback_syntaxes(
            meta.transfer_syntax)])
        return None
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / f"{next(_copy_numbers):08d}.dcm"
    try:
        convert(meta.path, choice, destination)
    except ConversionError as err:
        report.failed[meta.path] = f"the PACS does not accept {syntax_name(meta.transfer_syntax)} and {err}"
        return None
    report.converted[meta.path] = (f"from {syntax_name(meta.transfer_syntax)} to {syntax_name(choice)} (the PACS "
                                   f"does not accept {syntax_name(meta.transfer_syntax)} for "
                                   f"{sop_class_name(meta.sop_class)})")
    return destination


def _deflated_dataset(meta: FileMeta, report: SendReport) -> Dataset | None:
    """A deflated file as a dataset: its raw stream may be odd-length, which PS3.5 A.5 forbids on the wire."""
    try:
        return dcmread(meta.path)
    except Exception as err:  # noqa: BLE001 - a damaged deflate stream
        report.failed[meta.path] = f"the deflated data set cannot be read ({err})"
        return None


def keep_responses_from_reactor(assoc) -> None:  # noqa: ANN001 - pynetdicom Association
    """Let only the sending thread take DIMSE responses off the association's queue.

    pynetdicom 3.0.4 pauses its reactor around ``send_c_store`` with a flag the reactor sets
    *before* it blocks on the checkpoint; a sender that clears the checkpoint just after the
    reactor passed it sees the stale flag, sends, and the reactor then takes the C-STORE-RSP
    off the queue itself ("Received unexpected C-STORE service message"): the sender waits
    its full timeout and sends that image again. The outbox hit this window in 2 of 3 large
    sends because it waits for each unpacked file between two C-STOREs. The reactor of an
    association we requested has nothing to serve, so its non-blocking reads now leave
    responses in the queue for the sender's blocking read.
    """
    dimse = assoc.dimse
    blocking_get = dimse.get_msg

    def get_msg(block: bool = False):  # noqa: ANN202 - pynetdicom's (context id, message) pair
        if not block:
            _context_id, message = dimse.peek_msg()
            if message is None or not message.is_valid_request:
                return None, None
        return blocking_get(block)

    dimse.get_msg = get_msg


def send_files(target: PacsTarget, metas: list[FileMeta], report: SendReport, parallel: int = 1,
               wait: WaitForFile = _no_wait, convert_into: Path | None = None) -> SendReport:
    """Send every file not yet delivered; raises TransientSendError (report keeps progress).

    With ``parallel`` > 1 the files are dealt round-robin to that many associations on their
    own threads (one Association per thread): a PACS that answers each C-STORE slowly, or
    stores on several threads, is then kept busy.
    """
    report.deferred.clear()  # a new try for what the PACS could not take last time
    if parallel <= 1 or len(metas) < 2:
        for batch in batches_by_context(metas):
            send_batch(target, batch, report, wait, convert_into)
        return _check_deferred(report, metas)
    shares = [metas[i::parallel] for i in range(min(parallel, len(metas)))]
    reports = [SendReport(delivered=list(report.delivered), failed=dict(report.failed)) for _ in shares]
    errors: list[Exception] = []

    def send_share(share: list[FileMeta], share_report: SendReport) -> None:
        try:
            for batch in batches_by_context(share):
                send_batch(target, batch, share_report, wait, convert_into)
        except Exception as err:  # noqa: BLE001 - re-raised on the caller's thread below
            errors.append(err)

    threads = [threading.Thread(target=send_share, args=pair, name=f"send-{n}")
               for n, pair in enumerate(zip(shares, reports, strict=True))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    already = set(report.delivered)
    for share_report in reports:
        report.delivered.extend(p for p in share_report.delivered if p not in already)
        report.warnings.update(share_report.warnings)
        report.failed.update(share_report.failed)
        report.deferred.update(share_report.deferred)
        report.converted.update(share_report.converted)
    for path in report.delivered:
        report.deferred.pop(path, None)
    if errors:
        raise errors[0]
    return _check_deferred(report, metas)


def _check_deferred(report: SendReport, metas: list[FileMeta]) -> SendReport:
    """Images the PACS asked us to send later (0xA700) make the whole send worth another try."""
    if report.deferred:
        names = {m.path: m.name for m in metas}
        raise TransientSendError(f"{len(report.deferred)} image(s) not stored yet: " + images_and_reasons(
            report.deferred, names))
    return report


def images_and_reasons(why: dict[Path, str], names: dict[Path, str], limit: int = 10) -> str:
    """``a.dcm, b.dcm: the PACS answered 0xC000 cannot understand; …`` grouped by reason."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for path, reason in why.items():
        by_reason[reason].append(names.get(path, path.name))
    parts = []
    for reason, files in sorted(by_reason.items()):
        shown = ", ".join(sorted(files)[:limit]) + (f" and {len(files) - limit} more" if len(files) > limit else "")
        parts.append(f"{shown}: {reason}")
    return "; ".join(parts)


def echo(target: PacsTarget) -> EchoResult:
    """C-ECHO with the given target; never raises."""
    ae = AE(ae_title=target.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.network_timeout_seconds
    ae.add_requested_context(Verification)
    started = time.perf_counter()
    try:
        assoc = ae.associate(target.host, target.port, ae_title=target.called_ae, evt_handlers=[NAGLE_OFF],
                             tls_args=target.tls_args)
    except Exception as err:  # noqa: BLE001 - e.g. an unresolvable host name
        return EchoResult(False, 0.0, f"cannot connect to {target.host}:{target.port}: {err}", NO_CONNECTION)
    if not assoc.is_established:
        failure, why = _describe_failed_association(assoc, target)
        return EchoResult(False, (time.perf_counter() - started) * 1000, f"C-ECHO failed: {why}", failure)
    try:
        response = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    elapsed = (time.perf_counter() - started) * 1000
    status = response.get("Status") if response is not None else None
    if status == 0x0000:
        return EchoResult(True, elapsed, f"C-ECHO to {target.called_ae}@{target.host}:{target.port} succeeded")
    return EchoResult(False, elapsed, f"C-ECHO failed (status {status if status is not None else 'none'})",
                      ASSOCIATION_ABORTED)


def _sleep(seconds: float) -> bool:
    """The default pause between tries: sleep, never give up."""
    time.sleep(seconds)
    return False


def send_with_retries(target: PacsTarget, metas: list[FileMeta], report: SendReport, *, retries: int,
                      retry_delay_seconds: float, parallel: int = 1, wait: WaitForFile = _no_wait,
                      pause: Callable[[float], bool] | None = None, retry_unreachable: bool = True,
                      convert_into: Path | None = None) -> SendReport:
    """``send_files`` retried on transient failures, the delay doubling each time.

    ``pause(seconds)`` waits between tries and returns True to give up (the bridge stopping),
    which raises SendingInterrupted. The last failure says how many tries were made. With
    ``retry_unreachable`` false a PACS that takes no association ends the tries at once (the
    outbox then waits the outage out with C-ECHO probes).
    """
    pause = pause or _sleep
    delay = retry_delay_seconds
    for attempt in range(retries + 1):
        try:
            return send_files(target, metas, report, parallel, wait, convert_into)
        except TransientSendError as err:
            if isinstance(err, PacsUnreachable) and not retry_unreachable:
                raise
            if attempt == retries:
                raise type(err)(f"{err}; gave up after {attempt + 1} tries", err.failure) from None
            log.warning("sending failed (%s); retry %d in %.0f s", err, attempt + 1, delay)
            if pause(delay):
                raise SendingInterrupted() from None
            delay *= 2
    return report


def conversion_summary(converted: dict[Path, str]) -> str:
    """``3 converted from JPEG 2000 … to Explicit VR Little Endian (the PACS does not accept …)``, grouped."""
    counts: dict[str, int] = defaultdict(int)
    for how in converted.values():
        counts[how] += 1
    return "; ".join(f"{count} converted {how}" for how, count in sorted(counts.items()))
