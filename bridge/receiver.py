"""The DICOM receiver (Storage SCP): every storage SOP class, every transfer syntax, C-ECHO.

pynetdicom streams each C-STORE straight into a file (``STORE_RECV_CHUNKED_DATASET``), so
the dataset is never decoded and re-encoded: what the PACS sent is what we keep. The handler
does as little as possible (the GIL is shared by all associations): check that the dataset is
whole (a walk over its element headers), read its Study and SOP Instance UIDs, rename the file
into its study's spool folder, answer. Success is answered only after the rename, so an
acknowledged instance is always on disk and complete; otherwise 0xA700 and the PACS keeps the
image and retries, or a failure status for an image that will never be acceptable.

Bytes arriving on an association keep the studies it feeds open (``_bytes_arrived``); an
association that ends mid-image leaves no partial file behind (``_discard_partial``).
"""

from __future__ import annotations

import errno
import logging
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from .aggregator import Aggregator, safe_key
from .commitment import CommitmentLedger, accept_reports
from .dataset_check import DatasetWalker, IncompleteDataset, check_file
from .events import EventBus, InstanceStored, ReceiverStateChanged
from .fast_store import FastStoreAssociation, FastStoreOptions, StreamedFacts, cut_off_notice
from .instance import ImageFacts, MissingStudyUid, facts_from_peek, identity_from_values, image_fact_tags, read_identity
from .layout import StorageLayout, free_megabytes
from .logbook import FAILED, RECEIVE, WARNING, LogBook, LogEntry
from .net import NAGLE_OFF
from .reactor import AssociationLimit, EventDrivenAssociation, Guards, start_server
from .settings import Settings
from .tls import finish_server_handshake

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
# Storage service failures (PS3.4 B.2.3). Both are permanent: the PACS does not resend the same
# bytes, which would fail the same way. An incomplete or unparsable dataset "cannot be understood"
# (0xC000); a readable one that lacks the Study Instance UID, a Type 1 attribute of every storage
# IOD, "does not match the SOP class" (0xA900), which tells the sender's admin it is the content.
STATUS_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
NOTICE_INTERVAL_SECONDS = 60.0
MAX_PDU_BYTES = 1024 * 1024  # large PDUs mean fewer Python round trips per image


class ReceiverStartError(RuntimeError):
    """The listener could not be opened; the message says how to fix it."""


def explain_bind_error(err: OSError, port: int) -> str:
    if isinstance(err, PermissionError) or err.errno == errno.EACCES:
        return (f"cannot listen on port {port}: ports below 1024 need privileges on Linux. "
                f"Use a port of 1024 or above (e.g. 11112) and point the PACS at it, or grant the "
                f"capability: sudo setcap 'cap_net_bind_service=+ep' $(readlink -f $(which python3)), "
                f"or run under systemd with AmbientCapabilities=CAP_NET_BIND_SERVICE")
    if err.errno == errno.EADDRINUSE:
        return (f"cannot listen on port {port}: it is already in use by another program "
                f"(another DICOM receiver or a second bridge?). Find it with: ss -ltnp 'sport = :{port}'")
    return f"cannot listen on port {port}: {err.strerror or err}"


_NOT_WALKED = object()  # no completeness verdict came with the request: check the file


@dataclass
class _Throttle:
    """Log a repeated refusal once a minute, not once per image."""

    last: dict[str, float]

    def due(self, reason: str) -> bool:
        now = time.monotonic()
        if now - self.last.get(reason, -NOTICE_INTERVAL_SECONDS) >= NOTICE_INTERVAL_SECONDS:
            self.last[reason] = now
            return True
        return False


class Receiver:
    """Owns the pynetdicom AE and its listening socket."""

    # C-STOREs streamed straight into files (bridge/fast_store.py); it switches itself off for an
    # association with a handler on PDU/DIMSE/raw-data events, so bind none of those here.
    fast_path = True

    def __init__(self, *, layout: StorageLayout, aggregator: Aggregator, logbook: LogBook, bus: EventBus,
                 settings: Callable[[], Settings], bind_address: str = "",
                 ssl_context: ssl.SSLContext | None = None, heartbeat: Callable[[], None] = lambda: None,
                 commitment: CommitmentLedger | None = None) -> None:
        """``settings`` returns the settings in force: the listener's are read at :meth:`start`
        (changing one re-opens it), the rest (free-space floor) at every image. ``heartbeat``
        is called each time round the accept loop (about twice a second), for the watchdog.
        ``commitment`` takes the storage commitment reports a PACS sends to us (the outbox waits there)."""
        self.layout = layout
        self.aggregator = aggregator
        self.logbook = logbook
        self.bus = bus
        self.settings = settings
        at_start = settings()
        self.ae_title = at_start.receive_ae_title
        self.port = at_start.receive_port
        self.bind_address = bind_address
        self.allowed_calling_ae_titles = at_start.receive_allowed_calling_ae_titles
        self.allowed_hosts = at_start.receive_allowed_hosts
        self.check_called_ae_title = at_start.receive_check_called_ae_title
        self.ssl_context = ssl_context
        self.heartbeat = heartbeat
        self.commitment = commitment or CommitmentLedger()
        self._server: ThreadedAssociationServer | None = None
        self._ae: AE | None = None
        self._throttle = _Throttle({})
        self._active = 0
        self._active_lock = threading.Condition()
        self.guards: Guards | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        ae = self.application_entity()
        settings = self.settings()
        self.guards = Guards(limit=AssociationLimit(settings.receive_max_associations),
                             report=lambda key, text: self._refuse(key, text),
                             bytes_arrived=self._bytes_streaming, association_ended=self._connection_ended,
                             fast_store=self._fast_store_options(settings) if self.fast_path else None,
                             dataset_walker=DatasetWalker)  # the completeness walk, fed as fragments stream
        self.aggregator.sync_on_store = settings.receive_sync_before_ack  # durable before acknowledged
        # No handler on PDU/DIMSE/raw-data events: one would switch the fast path off (the reactor's
        # bytes-arrived hook above keeps studies open instead of EVT_DATA_RECV).
        handlers: list[Any] = [
            (evt.EVT_REJECTED, self._association_rejected),
            (evt.EVT_CONN_OPEN, finish_server_handshake, [self._handshake_failed]),
            NAGLE_OFF,
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_C_ECHO, lambda event: STATUS_SUCCESS),
            (evt.EVT_N_EVENT_REPORT, self.commitment.handle_event_report),  # an intervention event: fast path stays on
            (evt.EVT_ESTABLISHED, self._association_started),
            (evt.EVT_RELEASED, self._association_ended),
            (evt.EVT_ABORTED, self._association_ended),
            (evt.EVT_RELEASED, self._association_gone),
            (evt.EVT_ABORTED, self._association_gone),
            (evt.EVT_CONN_CLOSE, self._association_gone),
        ]
        try:
            server = start_server(ae, (self.bind_address, self.port), self.guards, evt_handlers=handlers,
                                  ssl_context=self.ssl_context, association_class=self.association_class)
        except OSError as err:
            message = explain_bind_error(err, self.port)
            self.bus.publish(ReceiverStateChanged(listening=False, port=self.port, error=message))
            raise ReceiverStartError(message) from None
        self._server = server
        server.service_actions = _also_calling(self.heartbeat, server.service_actions)  # type: ignore[method-assign]
        if self.allowed_hosts:
            allowed_addresses = resolve_hosts(self.allowed_hosts)
            # socketserver's hook: False closes the connection at once
            server.verify_request = (  # type: ignore[method-assign,assignment]
                lambda request, client_address: self._host_allowed(client_address[0], allowed_addresses))
        self._ae = ae
        log.info("receiver listening on port %d as %s%s", self.port, self.ae_title,
                 " (DICOM over TLS)" if self.ssl_context else "")
        self.bus.publish(ReceiverStateChanged(listening=True, port=self.port))

    def _fast_store_options(self, settings: Settings) -> FastStoreOptions:
        """Durable before acknowledged as set; the Pending view's values peeked as images stream in
        (for the CRID element in force when each image starts), so that it need not read the files."""
        return FastStoreOptions(settings.receive_sync_before_ack,
                                peek_tags=lambda: image_fact_tags(self.settings().crid_tag))

    def application_entity(self) -> AE:
        """The AE as it listens (also read by ``bridge.conformance`` for the conformance statement)."""
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = MAX_PDU_BYTES
        # pynetdicom counts every connected socket (even one that never asks for an association)
        # against maximum_associations; the bridge's own limit (reactor.AssociationLimit, from
        # receive.max_associations) counts associations only, so pynetdicom's is set out of the way.
        ae.maximum_associations = 100_000
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        ae.acse_timeout = 30
        ae.add_supported_context(Verification)
        accept_reports(ae)  # storage commitment reports for what the outbox sent (bridge.commitment)
        ae.require_calling_aet = list(self.allowed_calling_ae_titles)  # rejected: "calling AE not recognised"
        ae.require_called_aet = self.check_called_ae_title
        return ae

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting; let running associations finish for a while, then abort them."""
        if self._server is None:
            return
        self._server.shutdown()  # closes the listening socket; no new associations
        deadline = time.monotonic() + grace_seconds
        with self._active_lock:
            while self._active > 0 and time.monotonic() < deadline:
                self._active_lock.wait(max(0.0, deadline - time.monotonic()))
        if self._ae is not None:
            self._ae.shutdown()  # aborts what is left; unacknowledged images are resent by the PACS
        self._server = None
        self.bus.publish(ReceiverStateChanged(listening=False, port=self.port))

    @property
    def listening(self) -> bool:
        return self._server is not None

    # -- event handlers (run on pynetdicom's association threads) -----------------------------
    def _association_started(self, event: evt.Event) -> None:
        with self._active_lock:
            self._active += 1

    def _host_allowed(self, address: str, allowed: set[str]) -> bool:
        if address in allowed:
            return True
        self._refuse(f"host:{address}", f"connection from {address} refused: not in receive.allowed_hosts")
        return False

    def _handshake_failed(self, address: str, explanation: str) -> None:
        self._refuse(f"tls:{address}:{explanation}", f"connection from {address} refused: {explanation}")

    @property
    def association_class(self) -> type[EventDrivenAssociation]:
        return FastStoreAssociation if self.fast_path else EventDrivenAssociation

    def _bytes_streaming(self, assoc: object, study_uid: str | None) -> None:
        """The reactor saw bytes arrive (at most every 0.2 s; with the in-flight image's Study UID
        once it could be peeked from the first fragment): the studies it feeds stay open."""
        self.aggregator.association_active(id(assoc), study_uid)

    def _connection_ended(self, assoc: object) -> None:
        """The reactor's connection is gone (also rejected or bare ones: the aggregator ignores those)."""
        self.aggregator.association_ended(id(assoc))

    def _association_rejected(self, event: evt.Event) -> None:
        requestor = event.assoc.requestor
        calling, address = requestor.ae_title, requestor.address
        called = getattr(requestor.primitive, "called_ae_title", "?")
        reason = self._rejection_reason(event.assoc)
        self._refuse(f"rejected:{calling}:{called}:{address}:{reason}",
                     f"association from {calling} at {address} (called {called}) rejected: {reason}")

    def _rejection_reason(self, assoc: object) -> str:
        """Why pynetdicom or the bridge rejected an association, naming only settings in force."""
        detail = getattr(assoc, "rejection_detail", None)
        if detail:
            return str(detail)
        answer = getattr(getattr(assoc, "acceptor", None), "primitive", None)
        source, diagnostic = getattr(answer, "result_source", None), getattr(answer, "diagnostic", None)
        if (source, diagnostic) == (0x01, 0x03):
            return "the calling AE title is not in receive.allowed_calling_ae_titles"
        if (source, diagnostic) == (0x01, 0x07):
            return f"the called AE title is not {self.ae_title} (receive.check_called_ae_title is on)"
        if (source, diagnostic) == (0x03, 0x02):
            return "too many associations at once"
        return f"rejection source {source}, reason {diagnostic}"

    def _association_ended(self, event: evt.Event) -> None:
        with self._active_lock:
            self._active = max(0, self._active - 1)
            self._active_lock.notify_all()

    def _association_gone(self, event: evt.Event) -> None:
        """Released, aborted or connection closed: forget the association, drop its partial image."""
        self.aggregator.association_ended(id(event.assoc))
        partial = _discard_partial(event.assoc)
        if partial is not None:
            self._refuse(*cut_off_notice(event.assoc.requestor.ae_title))

    def _handle_store(self, event: evt.Event) -> int:
        received = Path(event.dataset_path)
        command_sop_uid = str(event.request.AffectedSOPInstanceUID or "")  # type: ignore[union-attr]  # a C-STORE
        calling = event.assoc.requestor.ae_title
        settings = self.settings()
        min_free_mb = settings.min_free_mb
        if min_free_mb and free_megabytes(self.layout.root) < min_free_mb:
            self._refuse("disk", f"free space on {self.layout.root} is below {min_free_mb} MB; "
                         f"images are refused (0xA700) so the PACS keeps and retries them", needs_attention=True)
            return STATUS_OUT_OF_RESOURCES
        walked = getattr(event.request, "_bridge_incomplete", _NOT_WALKED)  # the fast path's verdict
        streamed: StreamedFacts | None = getattr(event.request, "_bridge_streamed", None)
        try:
            if walked is _NOT_WALKED:
                check_file(received)  # pynetdicom's path: walk the file now
            elif isinstance(walked, BaseException):
                raise walked
            peeked = streamed.identity if streamed is not None else None  # None: pynetdicom's path, or unsure
            identity = identity_from_values(peeked) if peeked is not None else read_identity(received)
        except IncompleteDataset as err:
            return self._keep_refused(received, command_sop_uid, calling,
                                      f"is not readable DICOM, it is incomplete: {err}", STATUS_CANNOT_UNDERSTAND)
        except MissingStudyUid:
            return self._keep_refused(received, command_sop_uid, calling,
                                      "has no Study Instance UID (0020,000D), so it belongs to no study",
                                      STATUS_DOES_NOT_MATCH_SOP_CLASS, folder_prefix="no_study_uid")
        except Exception as err:  # noqa: BLE001 - any unreadable dataset is refused, kept visible
            return self._keep_refused(received, command_sop_uid, calling, f"is not readable DICOM ({err})",
                                      STATUS_CANNOT_UNDERSTAND)
        sop_uid = identity.sop_uid or command_sop_uid
        try:
            stored = self.aggregator.store(identity.study_uid, sop_uid, received, association=id(event.assoc),
                                           synced=streamed is not None and streamed.synced)
        except OSError as err:
            self._refuse(f"io:{err.errno}", f"cannot store an image from {calling} in the spool: "
                         f"{err.strerror or err}; answered 0xA700 so the PACS retries")
            return STATUS_OUT_OF_RESOURCES
        if not event.assoc.is_established:  # it ended while we stored: forget it again
            self.aggregator.association_ended(id(event.assoc))
        if stored.renamed:
            self.logbook.add(LogEntry(
                action=RECEIVE, status=WARNING,
                detail=f"two different images from {calling} carry the same SOP Instance UID {sop_uid} "
                       f"(study {identity.study_uid}); both are kept, the later one as {stored.sop_key}.dcm"))
        facts = _pending_facts(streamed, settings.crid_tag, first=stored.study.image_count == 1)
        self.bus.publish(InstanceStored(study_key=stored.study.key, pending_images=stored.study.image_count,
                                        sender=f"{calling}@{event.assoc.requestor.address}",
                                        file=str(stored.study.files[stored.sop_key]), facts=facts))
        return STATUS_SUCCESS

    def _refuse(self, reason_key: str, detail: str, needs_attention: bool = False) -> None:
        if self._throttle.due(reason_key):
            self.logbook.add(LogEntry(action=RECEIVE, status=WARNING, detail=detail, needs_attention=needs_attention))

    def _keep_refused(self, received: Path, sop_uid: str, calling: str, why: str, status: int,
                      folder_prefix: str = "unreadable") -> int:
        """Copy a refused dataset to Inbox_Failed (once per SOP UID) with a reason.txt, log it; the status."""
        folder = self.layout.inbox_failed / f"{folder_prefix}_{safe_key(sop_uid or received.name)}"
        detail = f"image {sop_uid or '?'} from {calling} {why}; refused with 0x{status:04X}, a copy is in {folder}"
        try:
            folder.mkdir(exist_ok=True)
            shutil.copyfile(received, folder / "received.dcm")
            (folder / "reason.txt").write_text(detail + "\n", encoding="utf-8")
        except OSError as copy_err:
            detail += f" (copy failed: {copy_err})"
        self.logbook.add(LogEntry(action=RECEIVE, status=FAILED, detail=detail, target=str(folder)))
        return status


def _pending_facts(streamed: StreamedFacts | None, crid_tag: int | None, first: bool) -> ImageFacts | None:
    """What the Pending view shows of the image, from the fast path's peek; None (it reads the file) when
    the peek did not settle it. The image is stored already: nothing here may change its answer."""
    if streamed is None or streamed.peek is None:
        return None
    try:
        return facts_from_peek(streamed.peek, crid_tag, with_study=first)
    except Exception:  # noqa: BLE001 - odd bytes pydicom will not decode: the view reads the file instead
        log.debug("image facts not settled from the peek", exc_info=True)
        return None


def _discard_partial(assoc: object) -> Path | None:
    """Delete the file of a C-STORE still in progress on a finished association; its path, if any.

    pynetdicom (chunked mode) writes an incoming dataset into a NamedTemporaryFile held by the
    DIMSE message being decoded (``assoc.dimse.message._data_set_file``) and forgets it once the
    message is complete; what is still there when the association ends is a cut-off image.
    """
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return None
    path = Path(partial.name)
    try:
        partial.close()
    except Exception:  # noqa: BLE001 - a file half closed by pynetdicom: still delete it
        pass
    path.unlink(missing_ok=True)
    return path


def _also_calling(first: Callable[[], None], then: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        first()
        then()

    return both


def resolve_hosts(hosts: tuple[str, ...]) -> set[str]:
    """IP addresses of the allowed hosts (names resolved once, when the listener starts)."""
    addresses: set[str] = set()
    for host in hosts:
        try:
            addresses.update(str(info[4][0]) for info in socket.getaddrinfo(host, None))
        except OSError:
            log.warning("allowed host %s does not resolve; ignored", host)
    return addresses


@dataclass(frozen=True)
class IncomingFiled:
    """What start-up found in ``incoming/``: images filed into their studies, partial files deleted."""

    filed: int
    removed: int
    kept: dict[str, str]  # file name -> why it could be neither filed nor removed (tried again at the next start)


def file_incoming(layout: StorageLayout, aggregator: Aggregator) -> IncomingFiled:
    """File the whole images an earlier run left in ``incoming/``; delete the partial ones.

    Why: with ``receive.sync_before_ack`` the answer waits for the image's data (fdatasync), not
    for its rename into the study's spool folder: the rename becomes durable with the file
    system's next journal commit (the next image's sync, the ZIP's). After a power cut an
    acknowledged image is therefore either in its study folder or still here, whole and synced,
    and must be filed, not deleted. Whole but never acknowledged (cut between the last byte and
    the answer) is filed too: the PACS sends it again and an identical resend is stored once.
    """
    filed = removed = 0
    kept: dict[str, str] = {}
    for leftover in sorted(layout.incoming.iterdir()):
        try:
            regular = leftover.is_file() and not leftover.is_symlink()  # a link is never followed into a study
            if regular and _file_whole_image(leftover, aggregator):
                filed += 1
                continue
            leftover.unlink() if regular or leftover.is_symlink() else shutil.rmtree(leftover)
            removed += 1
        except OSError as err:
            log.warning("cannot file or remove leftover %s: %s", leftover, err)
            kept[leftover.name] = err.strerror or str(err)
    return IncomingFiled(filed=filed, removed=removed, kept=kept)


def _file_whole_image(path: Path, aggregator: Aggregator) -> bool:
    """Into its study's spool folder if it is a whole image with a Study Instance UID (as the
    receiver files it); False: partial or unreadable, never acknowledged."""
    try:
        check_file(path)
        identity = read_identity(path)
    except Exception:  # noqa: BLE001 - partial or unreadable: the receiver would have refused it
        return False
    aggregator.store(identity.study_uid, identity.sop_uid or path.stem, path)
    return True
