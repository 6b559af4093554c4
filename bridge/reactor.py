"""Event-driven pynetdicom reactors, with the guards a listener on a hospital network needs.

pynetdicom 3.0.4 runs two polling loops per association: the DUL thread sleeps 1 ms whenever
it has nothing to do and the association thread sleeps 1 ms every turn. On a C-STORE that is
about 1.35 ms of every cycle spent asleep. Here both wait for real work instead:

- :class:`EventDrivenDUL` waits in ``select()`` on the peer's socket plus a wake-up socket that
  every put into its queues writes to (the queues are :class:`WakingQueue`);
- :class:`EventDrivenAssociation` waits on a :class:`threading.Event` that the DUL sets when it
  hands the association something (a DIMSE message, an ACSE primitive) or ends.

These are subclasses used only where the bridge makes its associations (the receiver's request
handler from :func:`request_handler_class`, the sender's :class:`BridgeAE`): nothing in
pynetdicom is patched. The event-driven waits and ``recv_into`` are generic and belong upstream
(pynetdicom's own TODO in ``DULServiceProvider.__init__`` asks for it); they are kept apart from
the bridge's policy (:class:`Guards`) so they could be offered as they are.

The guards (issue 11): a PDU longer than the maximum we negotiated is answered with an A-ABORT;
an A-ASSOCIATE-RQ claiming more than :data:`MAX_ASSOCIATE_RQ_BYTES` closes the connection
before anything is buffered; a connection that sends no complete A-ASSOCIATE-RQ within
:attr:`Guards.request_deadline_seconds` is closed; at most ``max_associations`` associations
are negotiated or established at once (bare TCP connections do not count). Each refusal is
reported to ``Guards.report`` with a key for throttling and a sentence for the log book.

Every pynetdicom method copied or overridden here is listed in ``PYNETDICOM_DEPENDENCIES`` and
its source hashed by ``tests/test_fast_path.py``, which fails when pynetdicom changes.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

LOGGER = logging.getLogger(__name__)

MAX_ASSOCIATE_RQ_BYTES = 1024 * 1024  # real requests are a few kB; 128 contexts with many syntaxes < 64 kB
MAX_CONTROL_PDU_BYTES = 1024 * 1024  # A-ASSOCIATE-AC/RJ, A-RELEASE, A-ABORT: all tiny in practice
REQUEST_DEADLINE_SECONDS = 5.0
TIMER_POLL_SECONDS = 0.5  # longest wait without looking at the ARTIM/idle timers and the kill flag
HEADER = struct.Struct(">BBL")
PDU_TYPES = frozenset(range(1, 8))

# pynetdicom code this module copies or relies on (hashed by a test; see the module docstring)
PYNETDICOM_DEPENDENCIES = (
    "pynetdicom.dul.DULServiceProvider.run_reactor",
    "pynetdicom.dul.DULServiceProvider._read_pdu_data",
    "pynetdicom.dul.DULServiceProvider._is_transport_event",
    "pynetdicom.dul.DULServiceProvider.kill_dul",
    "pynetdicom.dul.DULServiceProvider.stop_dul",
    "pynetdicom.timer.Timer.remaining",
    "pynetdicom.timer.Timer.expired",
    "pynetdicom.dul.DULServiceProvider.__init__",
    "pynetdicom.association.Association._run_reactor",
    "pynetdicom.association.Association.run_reactor",
    "pynetdicom.association.Association.__init__",
    "pynetdicom.association.Association.kill",
    "pynetdicom.association.Association.release",
    "pynetdicom.association.Association.send_c_store",
    "pynetdicom.acse.ACSE.negotiate_association",
    "pynetdicom.acse.ACSE._negotiate_as_acceptor",
    "pynetdicom.acse.ACSE.send_reject",
    "pynetdicom.transport.RequestHandler._create_association",
    "pynetdicom.transport.RequestHandler.handle",
    "pynetdicom.ae.ApplicationEntity.associate",
    "pynetdicom.ae.ApplicationEntity._create_socket",
    "pynetdicom.ae.ApplicationEntity.make_server",
    "pynetdicom.ae.ApplicationEntity.start_server",
    "pynetdicom.fsm.AA_8",
)


class WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue that calls ``wake()`` after every put, so its consumer can sleep until then."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


# -- the bridge's policy ------------------------------------------------------------------------
Report = Callable[[str, str], None]  # (throttle key, log-book sentence)
AssociationHook = Callable[[Association], None]
BytesHook = Callable[[Association, "str | None"], None]


def _ignore_report(key: str, text: str) -> None:
    LOGGER.warning("%s", text)


class AssociationLimit:
    """At most ``limit`` associations negotiated or established at once (not bare connections)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()

    def acquire(self) -> int | None:
        """Take a place; None when taken, else the number already open (the request is refused)."""
        with self._lock:
            if self._open >= self.limit:
                return self._open
            self._open += 1
            return None

    def release(self) -> None:
        with self._lock:
            self._open = max(0, self._open - 1)

    @property
    def open(self) -> int:
        return self._open


@dataclass
class Guards:
    """What the receiver enforces and where it reports, shared by its associations."""

    limit: AssociationLimit | None = None
    request_deadline_seconds: float = REQUEST_DEADLINE_SECONDS
    report: Report = _ignore_report
    # hooks for the aggregator: "bytes arrived" (at most every BYTES_HOOK_INTERVAL while data
    # streams, with the in-flight image's Study Instance UID when known) and "association ended"
    bytes_arrived: BytesHook | None = None
    association_ended: AssociationHook | None = None
    fast_store: Any = None  # bridge.fast_store.FastStoreOptions: None keeps pynetdicom's C-STORE path
    # fast path only: ``dataset_walker(transfer_syntax)`` -> an object with ``feed(bytes)`` and
    # ``finish()`` (raising when the dataset is incomplete), fed every dataset fragment as it
    # streams; the outcome is left on the request as ``_bridge_incomplete`` (None: complete)
    dataset_walker: Callable[[str], Any] | None = None


BYTES_HOOK_INTERVAL = 0.2


def peer_address(assoc: Association) -> str:
    try:
        return str(assoc.requestor.address)
    except Exception:  # noqa: BLE001 - only for messages
        return "?"


# -- the DUL: select() instead of 1 ms sleeps, guards on PDU sizes --------------------------------
class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL provider, waiting in ``select()`` instead of sleeping (upstream material)."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self.event_queue = WakingQueue(self.wake)
        self.to_provider_queue = WakingQueue(self.wake)
        notify = getattr(assoc, "notify_activity", None)
        if notify is not None:  # the association thread sleeps until it has something to do
            self.to_user_queue = WakingQueue(notify)
        self._started_at = time.monotonic()
        self._last_bytes_hook = 0.0
        self.study_in_flight: str | None = None  # set by the fast path when it could peek it

    # wake-ups ---------------------------------------------------------------------------------
    def wake(self) -> None:
        """Make the reactor look at its queues now (any thread)."""
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self._wake_w.send(b"\0")
        except OSError:  # closed: the reactor has ended, or a full buffer: it is awake anyway
            pass

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        """pynetdicom's ``stop_dul``, waking the reactor instead of waiting for its next poll."""
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self.wake()
        if self is not threading.current_thread() and self.is_alive():
            self.join()
        return True

    def _drain_wake(self) -> None:
        # Drain first, then clear the flag: the other order can swallow a wake-up byte while the
        # flag says one is pending, and the next put would then not wake the reactor at all.
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:  # BlockingIOError: drained
            pass
        self._wake_pending = False

    def _wait_for_work(self) -> None:
        """Sleep until the socket is readable, something is queued, or a timer may have expired."""
        if not self.event_queue.empty() or not self.to_provider_queue.empty():
            return
        watched: list[Any] = [self._wake_r]
        transport = self.socket
        sock = transport.socket if transport is not None and transport._is_connected else None
        if sock is not None:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return
            watched.append(sock)
        timeout = TIMER_POLL_SECONDS
        if self.artim_timer._start_time is not None and self.artim_timer._end_time is None \
                and self.artim_timer.timeout is not None:
            timeout = max(0.0, min(timeout, self.artim_timer.remaining))
        try:
            readable, _, _ = select.select(watched, [], [], timeout)
        except (OSError, ValueError):  # the socket was closed under us: the next turn notices
            return
        if self._wake_r in readable:
            self._drain_wake()

    # the reactor (pynetdicom's run_reactor with the sleep replaced by _wait_for_work) -----------
    def run_reactor(self) -> None:
        try:
            self._run_event_driven()
        finally:
            self._wake_w.close()
            self._wake_r.close()
            notify = getattr(self.assoc, "notify_activity", None)
            if notify is not None:
                notify()  # the association thread checks dul.is_alive()

    def _run_event_driven(self) -> None:
        self._started_at = time.monotonic()  # the request deadline counts from here, after any TLS handshake
        self._idle_timer.start()
        self.socket = cast(AssociationSocket, self.socket)
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            self._check_request_deadline()
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                LOGGER.error("Exception in DUL.run(), aborting association")
                LOGGER.exception("DUL failure")
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                self._wait_for_work()
                continue
            self.state_machine.do_action(event)

    # guards -----------------------------------------------------------------------------------
    @property
    def guards(self) -> Guards | None:
        return getattr(self.assoc, "guards", None)

    def _check_request_deadline(self) -> None:
        """An acceptor closes a connection that sent no A-ASSOCIATE-RQ in time."""
        guards = self.guards
        if guards is None or not self.assoc.is_acceptor or self.state_machine.current_state != "Sta2":
            return
        if time.monotonic() - self._started_at < guards.request_deadline_seconds:
            return
        address = peer_address(self.assoc)
        guards.report(f"idle:{address}", f"connection from {address} closed: no association request within "
                                          f"{guards.request_deadline_seconds:g} s (a port scanner or health check?)")
        self._close_connection()

    def _close_connection(self) -> None:
        waiting_for_request = self.assoc.is_acceptor and self.state_machine.current_state == "Sta2"
        if self.socket is not None:
            self.socket.close()  # Evt17: the state machine ends the connection
        if waiting_for_request:  # end the association thread now, as if its wait had timed out
            self.to_user_queue.put(cast(Any, None))

    def _largest_pdu_we_accept(self, pdu_type: int) -> int:
        """The largest PDU body this side will read (0: no limit)."""
        if pdu_type == 0x01:
            return MAX_ASSOCIATE_RQ_BYTES
        if pdu_type != 0x04:
            return MAX_CONTROL_PDU_BYTES
        ours = self.assoc.acceptor if self.assoc.is_acceptor else self.assoc.requestor
        maximum = int(ours.maximum_length or 0)
        return maximum + 6 if maximum else 0  # peers disagree whether the 6-byte PDV headers count

    def _refuse_pdu(self, pdu_type: int, pdu_length: int) -> bool:
        """Act on a PDU longer than we accept; True when it was refused (nothing more is read)."""
        limit = self._largest_pdu_we_accept(pdu_type)
        if not limit or pdu_length <= limit:
            return False
        address = peer_address(self.assoc)
        guards = self.guards
        report = guards.report if guards is not None else _ignore_report
        state = self.state_machine.current_state
        if pdu_type == 0x04 and state in ("Sta6", "Sta7", "Sta8", "Sta10", "Sta11", "Sta12"):
            report(f"pdu-abort:{address}", f"association from {address} aborted: it sent a PDU of {pdu_length} bytes, "
                                     f"more than the {limit - 6} bytes negotiated")
            self.event_queue.put("Evt19")  # AA-8: A-ABORT to the peer, A-P-ABORT to the association
            self._discard_input = True
            return True
        what = "an association request" if pdu_type == 0x01 else f"a PDU of type 0x{pdu_type:02X}"
        report(f"pdu-close:{address}", f"connection from {address} closed: {what} claiming {pdu_length} bytes "
                                 f"(more than {limit})")
        self._close_connection()
        return True

    _discard_input = False

    def _read_pdu_data(self) -> None:
        """pynetdicom's ``_read_pdu_data`` with the size guards and ``recv_into``."""
        transport = cast(AssociationSocket, self.socket)
        sock = transport.socket
        if sock is None:
            self.event_queue.put("Evt17")
            return
        if self._discard_input:  # after an abort for an oversized PDU: close rather than read it
            self._close_connection()
            return
        deadline_mode = self.assoc.is_acceptor and self.state_machine.current_state == "Sta2" and \
            self.guards is not None
        previous_timeout = sock.gettimeout()
        if deadline_mode:  # the whole request must arrive before the deadline
            guards = cast(Guards, self.guards)
            left = guards.request_deadline_seconds - (time.monotonic() - self._started_at)
            sock.settimeout(max(0.01, left))
        try:
            header = _recv_exactly(sock, 6)
            if header is None:
                self.event_queue.put("Evt17")
                return
            pdu_type, _, pdu_length = HEADER.unpack(header)
            if pdu_type not in PDU_TYPES:
                LOGGER.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
                self.event_queue.put("Evt19")
                return
            if self._refuse_pdu(pdu_type, pdu_length):
                return
            if self._read_pdu_body(pdu_type, pdu_length, header):
                return
            pdu_bytes = bytearray(6 + pdu_length)
            pdu_bytes[:6] = header
            if not _recv_into(sock, memoryview(pdu_bytes)[6:]):
                LOGGER.error("The received PDU is shorter than expected")
                self.event_queue.put("Evt17")
                return
        except (OSError, TimeoutError) as exc:
            if deadline_mode and isinstance(exc, (TimeoutError, socket.timeout)):
                self._check_request_deadline()
                return
            LOGGER.error("Connection closed before the entire PDU was received")
            self.event_queue.put("Evt17")
            return
        finally:
            if deadline_mode and transport.socket is not None:
                try:
                    sock.settimeout(previous_timeout)
                except OSError:
                    pass
        self._deliver(pdu_bytes)

    def _deliver(self, pdu_bytes: bytearray) -> None:
        """Decode a whole PDU and queue its event, as pynetdicom's reader does."""
        self._after_bytes(None)
        try:
            pdu, event = self._decode_pdu(pdu_bytes)
        except Exception:  # noqa: BLE001 - as upstream: an undecodable PDU is Evt19
            LOGGER.exception("Unable to decode the received PDU data")
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _read_pdu_body(self, pdu_type: int, pdu_length: int, header: bytes | bytearray) -> bool:
        """Hook for a subclass that handles some PDUs itself (the fast path); True when done."""
        return False

    def _after_bytes(self, study_uid: str | None, at_once: bool = False) -> None:
        """Call the "bytes arrived" hook, at most every BYTES_HOOK_INTERVAL seconds (unless ``at_once``)."""
        guards = self.guards
        if guards is None or guards.bytes_arrived is None:
            return
        now = time.monotonic()
        if now - self._last_bytes_hook < BYTES_HOOK_INTERVAL and not at_once:
            return
        self._last_bytes_hook = now
        try:
            guards.bytes_arrived(self.assoc, study_uid or self.study_in_flight)
        except Exception:
            LOGGER.exception("bytes_arrived hook failed")


def _recv_exactly(sock: socket.socket, length: int) -> bytearray | None:
    """Read exactly ``length`` bytes (None: the peer closed first)."""
    buffer = bytearray(length)
    return buffer if _recv_into(sock, memoryview(buffer)) else None


def _recv_into(sock: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from the socket with ``recv_into`` (no 4 kB reads, no copies); False: closed first."""
    got, length = 0, len(view)
    while got < length:
        n = sock.recv_into(view[got:], length - got)
        if not n:
            return False
        got += n
    return True


# -- ACSE: the association limit ----------------------------------------------------------------
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)  # rejected-transient, presentation related, local limit


class GuardedACSE(ACSE):
    """Refuses a request beyond the association limit, saying so (before any negotiation)."""

    def negotiate_association(self) -> None:
        assoc = self.assoc
        guards: Guards | None = getattr(assoc, "guards", None)
        if assoc.is_acceptor and guards is not None and guards.limit is not None:
            already = guards.limit.acquire()
            if already is not None:
                assoc.rejection_detail = (  # type: ignore[attr-defined]  # read by the receiver's log row
                    f"{already} associations already open; limit receive.max_associations = {guards.limit.limit}")
                self.requestor.ae_title = cast(Any, self.requestor.primitive).calling_ae_title
                LOGGER.info("Rejecting Association: %s", assoc.rejection_detail)  # type: ignore[attr-defined]
                self.send_reject(*LOCAL_LIMIT_EXCEEDED)
                evt.trigger(assoc, evt.EVT_REJECTED, {})
                assoc.kill()
                return
            assoc.holds_slot = True  # type: ignore[attr-defined]  # released when the association ends
        super().negotiate_association()


# -- the association: waits on an Event ---------------------------------------------------------
class EventDrivenAssociation(Association):
    """pynetdicom's Association whose reactor waits on an Event instead of 1 ms sleeps.

    The pause handshake with ``send_c_*`` / ``release`` (they clear ``_reactor_checkpoint`` and
    spin until ``_is_paused``) is made race-free: ``_is_paused`` is read and written under a
    lock and the reactor only leaves its parking place when the checkpoint is still set, so a
    response can never be taken by the reactor while a ``send_c_*`` waits for it.
    """

    dul_class: type[EventDrivenDUL] = EventDrivenDUL
    guards: Guards | None = None
    rejection_detail: str | None = None
    holds_slot = False

    def __init__(self, ae: Any, mode: str) -> None:
        self._park_lock = threading.RLock()
        super().__init__(ae, mode)
        self._install()

    @classmethod
    def adopt(cls, assoc: Association) -> EventDrivenAssociation:
        """Turn a freshly made (not started, no socket) pynetdicom Association into this class."""
        if assoc.dul.socket is not None or assoc.is_alive():
            raise RuntimeError("only an association that has not started can be adopted")
        paused = assoc.__dict__.pop("_is_paused", False)
        assoc.__class__ = cls
        adopted = cast(EventDrivenAssociation, assoc)
        adopted._park_lock = threading.RLock()
        adopted._is_paused = paused
        adopted._install()
        return adopted

    def _install(self) -> None:
        self._activity = threading.Event()
        self.dul = self.dul_class(self)
        self.dimse.msg_queue = WakingQueue(self.notify_activity)
        self.acse = GuardedACSE(self)

    @property  # type: ignore[override]
    def _is_paused(self) -> bool:
        with self._park_lock:
            return bool(self.__dict__.get("_paused_flag", False))

    @_is_paused.setter
    def _is_paused(self, value: bool) -> None:
        with self._park_lock:
            self.__dict__["_paused_flag"] = value

    def notify_activity(self) -> None:
        self._activity.set()

    def kill(self) -> None:
        self._kill = True
        self._activity.set()
        super().kill()

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._ended()

    def _ended(self) -> None:
        guards = self.guards
        if self.holds_slot and guards is not None and guards.limit is not None:
            self.holds_slot = False
            guards.limit.release()
        if guards is not None and guards.association_ended is not None:
            try:
                guards.association_ended(self)
            except Exception:
                LOGGER.exception("association_ended hook failed")

    def _park(self) -> None:
        """Wait until there is something to do and nobody holds the reactor paused."""
        self._is_paused = True
        idle = self.dul._idle_timer
        timeout = TIMER_POLL_SECONDS
        if idle.timeout is not None:
            timeout = max(0.0, min(timeout, idle.remaining))
        self._activity.wait(timeout)
        self._activity.clear()
        while not self._kill:
            self._reactor_checkpoint.wait()
            with self._park_lock:
                if self._reactor_checkpoint.is_set():
                    self.__dict__["_paused_flag"] = False
                    return

    def _run_reactor(self) -> None:
        """pynetdicom's ``_run_reactor`` with the 1 ms sleep replaced by :meth:`_park`."""
        self._is_paused = False
        while not self._kill:
            self._park()
            if self._kill:
                return
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                self._activity.set()  # more may be queued
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                LOGGER.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                LOGGER.info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                LOGGER.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


# -- where the classes get used -------------------------------------------------------------------
def request_handler_class(guards: Guards, association_class: type[EventDrivenAssociation] = EventDrivenAssociation
                          ) -> type[RequestHandler]:
    """A RequestHandler for ``ae.start_server(..., request_handler=...)`` making our associations."""

    class BridgeRequestHandler(RequestHandler):
        def _create_association(self) -> Association:
            """pynetdicom's ``_create_association`` with our Association class and guards."""
            assoc = association_class(self.ae, MODE_ACCEPTOR)
            assoc.guards = guards
            assoc._server = self.server
            timestamp = datetime.strftime(datetime.now(), "%Y%m%d%H%M%S")
            assoc.name = f"AcceptorThread@{timestamp}"
            sock = AssociationSocket(assoc, client_socket=self.request)
            assoc.set_socket(sock)
            assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
            assoc.acceptor.ae_title = self.server.ae_title
            assoc.acceptor.address_info = self.local
            assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
            assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
            assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)
            assoc.requestor.address_info = self.remote
            for event in self.server._handlers:
                if event.is_intervention and self.server._handlers[event]:
                    assoc.bind(event, *self.server._handlers[event])
                elif isinstance(event, evt.NotificationEvent):
                    for handler in self.server._handlers[event]:
                        handler = cast(evt._HandlerBase, handler)
                        assoc.bind(event, handler[0], handler[1])
            return assoc

    return BridgeRequestHandler


def start_server(ae: AE, address: tuple[str, int], guards: Guards, *, ssl_context: ssl.SSLContext | None,
                 evt_handlers: list[Any], association_class: type[EventDrivenAssociation] = EventDrivenAssociation
                 ) -> ThreadedAssociationServer:
    """``ae.start_server(block=False)`` through ``ae.make_server`` with our request handler."""
    server = ae.make_server(address, ssl_context=ssl_context, evt_handlers=evt_handlers,
                            server_class=ThreadedAssociationServer,
                            request_handler=request_handler_class(guards, association_class))
    thread = threading.Thread(target=server.serve_forever, name=f"AcceptorServer@{address[1]}", daemon=True)
    thread.start()
    ae._servers.append(server)
    return cast(ThreadedAssociationServer, server)


class BridgeAE(AE):
    """An AE whose requested associations (``associate``) use the event-driven reactors.

    ``associate`` makes a plain Association and hands it to ``_create_socket`` before anything
    else touches it; that is where it becomes an :class:`EventDrivenAssociation`.
    """

    association_class: type[EventDrivenAssociation] = EventDrivenAssociation

    def _create_socket(self, assoc: Association, address: Any, tls_args: Any) -> AssociationSocket:
        if not isinstance(assoc, self.association_class):
            assoc = self.association_class.adopt(assoc)
        return super()._create_socket(assoc, address, tls_args)
