"""The C-STORE fast path for sending: a file's bytes framed into P-DATA-TF PDUs by hand.

Why: with pynetdicom's path each C-STORE of a file costs the sender about 5 ms of Python (issue
14): the file meta read back with pydicom (``split_dataset``), the command set built and encoded
with pydicom, every 16 kB fragment made into a ``P_DATA`` primitive, queued, turned into a
``P_DATA_TF`` PDU by the state machine and encoded, and the response decoded with pydicom again.
DCMTK's storescu needs about 2.4 ms per image in all. Here:

1. the sending thread encodes the C-STORE-RQ command set by hand (implicit VR little endian,
   byte-identical to pynetdicom's, a test compares), with the values set through pynetdicom's
   own ``C_STORE`` setters (so a UID it would refuse is refused alike), finds where the file's
   dataset starts (the Part-10 file meta is walked; pydicom's ``split_dataset`` decides when the
   walk cannot be sure) and queues one :class:`OutgoingStore` for the association's DUL thread,
   then waits for the response as pynetdicom's ``send_c_store`` does (reactor paused,
   ``dimse.get_msg`` with the DIMSE timeout); only a response to this very request (its message
   ID, as DCMTK checks) counts: a late or repeated one aborts the association;
2. the DUL thread (:class:`FastSendDUL`, the only one that touches the socket, so TLS works the
   same) writes the command PDU and then the dataset, read in 1 MiB pieces and cut into exactly
   the fragments pynetdicom would send (one PDV per PDU, ``max PDU - 6`` bytes each). Its writes,
   pynetdicom's included, end the association after the network timeout without progress (a
   peer that stops reading would otherwise hold the DUL thread, and ``abort()``, for ever);
3. a P-DATA-TF PDU holding a whole plain C-STORE-RSP (status, message ID, UIDs, nothing else) is
   decoded by hand in the DUL thread into pynetdicom's ``C_STORE`` response primitive and put on
   the DIMSE queue, where ``get_msg`` finds it as usual; any other PDU (a response with an error
   comment, a split command, anything unexpected) goes through pynetdicom unchanged.

Files whose own transfer syntax was not accepted as it is, and deflated files (their raw stream
may be odd-length), keep using pynetdicom's ``send_c_store``. An association with a handler bound
to the low-level events (EVT_DATA_SENT, EVT_PDU_SENT, EVT_DIMSE_SENT and their *_RECV partners,
pynetdicom's own debug logging excepted) does not take the fast path, so no observer misses a PDU;
nor does any association while pynetdicom's log shows each message (``dicombridge send -v``
prints one line per C-STORE request and response, as DCMTK's ``-v`` does).

A file that cannot be read any more once its command is on the wire aborts the association (a
half-sent message cannot be taken back) and raises the ``OSError`` to the caller.

Dependence on pynetdicom internals (3.0.4, pinned; ``PYNETDICOM_DEPENDENCIES`` are hashed by
``tests/test_fast_path.py``): the DUL's queues and state names, ``_process_recv_primitive``, the
association's pause handshake (``_reactor_checkpoint``/``_is_paused``), ``_handle_no_response``,
``_check_received_status``'s idea of a valid response, and the byte layout ``encode_msg`` gives.
The hand encoding and the batched writes would be welcome upstream.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

try:  # POSIX: the socket's unacknowledged bytes (SIOCOUTQ == TIOCOUTQ on Linux)
    import fcntl
    import termios
except ImportError:  # Windows: the DIMSE timeout counts from the end of the writing
    fcntl = None  # type: ignore[assignment]
    termios = None  # type: ignore[assignment]

from pydicom.filereader import read_dataset, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom.dimse_primitives import C_STORE

from .fast_store import SMALL_PDU, _implicit, _text, _ui, _us, has_low_level_observers, pdu_header
from .header_scan import SCAN_BYTES, dataset_start
from .reactor import BridgeAE, EventDrivenAssociation, EventDrivenDUL, _recv_exactly

LOGGER = logging.getLogger(__name__)
PYNETDICOM_LOGGER = logging.getLogger("pynetdicom")

READ_BYTES = 1024 * 1024  # the dataset is read and written in pieces of about this size
PRIORITY_LOW = 2  # pynetdicom's default for send_c_store
PAUSE_POLL_SECONDS = 0.0001  # as pynetdicom's send_c_store waits for its reactor to park
_COUNTING = threading.Lock()  # FastSendDUL's counters: several associations' DUL threads add to them
HELD = "_bridge_reactor_held"  # set by reactor_held: _exchange leaves the reactor parked
PROGRESS_POLL_SECONDS = 1.0  # while waiting for a response: how often to look whether bytes still flow

PYNETDICOM_DEPENDENCIES = (
    "pynetdicom.dul.DULServiceProvider._process_recv_primitive",
    "pynetdicom.dul.DULServiceProvider._send",
    "pynetdicom.fsm.DT_1",
    "pynetdicom.dimse.DIMSEServiceProvider.send_msg",
    "pynetdicom.dimse.DIMSEServiceProvider.get_msg",
    "pynetdicom.dsutils.split_dataset",
    "pynetdicom.association.Association._get_valid_context",
    "pynetdicom.association.Association._check_received_status",
    "pynetdicom.association.Association._handle_no_response",
    "pynetdicom.transport.AssociationSocket.send",
)

_C_STORE_RSP_ELEMENTS = frozenset({0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900, 0x1000})


class FileUnreadable(OSError):
    """The file being sent could not be read to its end; the association was aborted."""


# -- encoding by hand (byte-identical to pynetdicom's; see tests/test_fast_send.py) ----------------
def c_store_rq_command(request: C_STORE) -> bytes:
    """The C-STORE-RQ command set pynetdicom encodes for a file (a dataset follows)."""
    body = (_implicit(0x0002, _ui(cast(str, request.AffectedSOPClassUID)))
            + _implicit(0x0100, b"\x01\x00")
            + _implicit(0x0110, struct.pack("<H", request.MessageID))
            + _implicit(0x0700, struct.pack("<H", request.Priority))
            + _implicit(0x0800, b"\x01\x00")
            + _implicit(0x1000, _ui(cast(str, request.AffectedSOPInstanceUID))))
    if request.MoveOriginatorApplicationEntityTitle is not None:
        title = request.MoveOriginatorApplicationEntityTitle.encode("ascii")
        body += _implicit(0x1030, title + (b" " if len(title) % 2 else b""))
    if request.MoveOriginatorMessageID is not None:
        body += _implicit(0x1031, struct.pack("<H", request.MoveOriginatorMessageID))
    return _implicit(0x0000, struct.pack("<L", len(body))) + body


def fragment_bytes(peer_max_pdu: int, length: int) -> int:
    """How many dataset bytes go into one PDV: ``max PDU - 6``, the whole dataset if unlimited."""
    return peer_max_pdu - 6 if peer_max_pdu else max(length, 1)  # as pynetdicom's encode_msg


@dataclass
class OutgoingStore:
    """One C-STORE-RQ for the DUL thread to write: the command, then the file (or ``data``, the
    file's bytes held in memory) from ``offset``."""

    context_id: int
    command: bytes
    source: BinaryIO | None
    offset: int
    length: int
    fragment: int
    command_fragment: int = 0  # the command's PDVs hold at most this many bytes; 0: the peer takes any PDU
    error: OSError | None = None
    done: threading.Event = field(default_factory=threading.Event)
    data: bytes | None = None
    label: str = ""  # the file's name, for errors

    def pieces(self) -> Iterator[bytes | memoryview]:
        """The bytes to write, in order: the command PDU, then the dataset PDUs (read ≤ 1 MiB at a time)."""
        step = self.command_fragment or len(self.command)  # a peer taking PDUs shorter than the command
        for start in range(0, len(self.command), step):
            part = self.command[start:start + step]
            yield pdu_header(self.context_id, 0x03 if start + step >= len(self.command) else 0x01, len(part)) + part
        fragment, left, position = self.fragment, self.length, self.offset
        count = max(1, -(-left // fragment))  # pynetdicom sends one empty last fragment for an empty dataset
        per_read = max(1, READ_BYTES // fragment)
        index = 0
        while index < count:
            if fragment > READ_BYTES:  # a peer taking huge PDUs: each one's data streamed in pieces
                size = min(fragment, left)
                index += 1
                yield pdu_header(self.context_id, 0x02 if index == count else 0x00, size)
                for piece_start in range(0, size, READ_BYTES):
                    yield self._read(position + piece_start, min(READ_BYTES, size - piece_start))
            else:
                batch = min(per_read, count - index)
                size = min(batch * fragment, left)
                data = memoryview(self._read(position, size))
                parts: list[bytes | memoryview] = []
                for start in range(0, max(size, 1), fragment):
                    index += 1
                    piece = data[start:start + fragment]
                    parts += (pdu_header(self.context_id, 0x02 if index == count else 0x00, len(piece)), piece)
                yield b"".join(parts)
            position += size
            left -= size

    def _read(self, position: int, size: int) -> bytes | memoryview:
        if self.data is not None:
            return memoryview(self.data)[position:position + size]
        source = cast(BinaryIO, self.source)
        try:
            if not size:
                data = b""
            elif hasattr(os, "pread"):
                data = os.pread(source.fileno(), size, position)
            else:  # Windows: only the DUL thread reads this file, so a seek cannot race
                source.seek(position)
                data = source.read(size)
        except OSError as err:
            raise FileUnreadable(f"{self.label} could not be read: {err}") from None
        if len(data) != size:
            raise FileUnreadable(f"{self.label} ended {size - len(data)} bytes early (it changed while being sent)")
        return data

    def finish(self, error: OSError | None = None) -> None:
        self.error = self.error or error
        if self.source is not None:
            self.source.close()
        self.data = None
        self.done.set()


class FastSendDUL(EventDrivenDUL):
    """The event-driven DUL that writes :class:`OutgoingStore` messages and decodes plain C-STORE-RSPs."""

    sent = 0  # C-STOREs this process sent through the fast path (tests and benchmarks read it)
    responses = 0  # C-STORE-RSPs it decoded by hand

    # -- writing -----------------------------------------------------------------------------------
    def _process_recv_primitive(self) -> bool:
        try:
            item = self.to_provider_queue.queue[0]
        except IndexError:
            return False
        if not isinstance(item, OutgoingStore):
            return super()._process_recv_primitive()
        self.to_provider_queue.get(False)
        if self.state_machine.current_state != "Sta6":  # aborted or closed while it waited
            item.finish()
            return True
        self._write(item)
        return True

    def _write(self, message: OutgoingStore) -> None:
        transport = cast(Any, self.socket)
        sock = transport.socket if transport is not None else None
        if sock is None:
            message.finish()
            self.event_queue.put("Evt17")
            return
        try:
            with _write_timeout(sock, self.assoc.network_timeout):
                for data in message.pieces():
                    _send_all(sock, data)
        except FileUnreadable as err:
            message.finish(err)
            self.assoc.dimse.msg_queue.put((None, None))  # the sender aborts and raises the error
            return
        except OSError:  # the connection, or a peer that stopped reading (TLS errors are OSErrors too)
            message.finish()
            self.event_queue.put("Evt17")  # as pynetdicom's AssociationSocket.send
            return
        with _COUNTING:
            FastSendDUL.sent += 1
        message.finish()

    def _send(self, pdu: Any) -> None:
        """pynetdicom's PDUs (converted and deflated files, release, abort) under the same write timeout."""
        sock = getattr(self.socket, "socket", None)
        if sock is None:
            super()._send(pdu)
            return
        with _write_timeout(sock, self.assoc.network_timeout):
            super()._send(pdu)  # a timeout is an OSError: AssociationSocket.send queues Evt17

    # -- reading the response ---------------------------------------------------------------------
    def _read_pdu_body(self, pdu_type: int, pdu_length: int, header: bytes | bytearray) -> bool:
        if (pdu_type != 0x04 or pdu_length > SMALL_PDU or not self.assoc.is_requestor
                or self.state_machine.current_state != "Sta6" or self.assoc.dimse.message is not None
                or watched(self.assoc)):  # asked each time: a handler may be bound later
            return False
        body = _recv_exactly(cast(Any, self.socket).socket, pdu_length)
        if body is None:
            self.event_queue.put("Evt17")
            return True
        response = c_store_response(memoryview(body))
        if response is None:
            self._deliver(bytearray(header) + body)
        else:
            with _COUNTING:
                FastSendDUL.responses += 1
            self.assoc.dimse.msg_queue.put(response)
        return True


def c_store_response(body: memoryview) -> tuple[int, C_STORE] | None:
    """(context ID, C_STORE response primitive) from a PDU body holding one plain C-STORE-RSP, else None."""
    if len(body) < 6:
        return None
    pdv_length, context_id, control = struct.unpack_from(">LBB", body, 0)
    if control != 0x03 or 4 + pdv_length != len(body) or pdv_length < 2:
        return None
    elements: dict[int, bytes] = {}
    data, position, end = body[6:], 0, pdv_length - 2
    while position < end:
        if position + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHL", data, position)
        position += 8
        if group != 0 or element not in _C_STORE_RSP_ELEMENTS or position + length > end or element in elements:
            return None
        elements[element] = bytes(data[position:position + length])
        position += length
    if elements.get(0x0100) != b"\x01\x80" or elements.get(0x0800) != b"\x01\x01":
        return None
    response = C_STORE()
    try:
        response.MessageIDBeingRespondedTo = _us(elements.get(0x0120))
        response.Status = _us(elements.get(0x0900))
        for element, name in ((0x0002, "AffectedSOPClassUID"), (0x1000, "AffectedSOPInstanceUID")):
            if element in elements:
                text = _text(elements[element])
                if text is None:  # not plain ASCII: pynetdicom reads it its own way
                    return None
                setattr(response, name, UID(text))
    except (ValueError, TypeError):
        return None
    if not response.is_valid_response:
        return None
    return context_id, response


class FastSendAssociation(EventDrivenAssociation):
    """A requested association whose DUL takes the sending fast path."""

    dul_class = FastSendDUL


class FastSendAE(BridgeAE):
    """The sender's AE: its associations are :class:`FastSendAssociation`."""

    association_class = FastSendAssociation


# -- the sending thread --------------------------------------------------------------------------------
def watched(assoc: Any) -> bool:
    """Someone sees pynetdicom's PDUs or messages: a handler bound to the low-level events, or
    pynetdicom's log (``dicombridge send -v``, ``-vv`` every PDU), which its own path writes."""
    return has_low_level_observers(assoc) or PYNETDICOM_LOGGER.isEnabledFor(logging.INFO)


def usable_context(assoc: Any, sop_class: str, transfer_syntax: str) -> int | None:
    """The context ID the fast path sends a file on, or None to use pynetdicom's ``send_c_store``.

    The first accepted context for the SOP class with exactly the file's own syntax (what
    pynetdicom picks without converting), on an association made with :class:`FastSendDUL`.
    """
    if transfer_syntax == DeflatedExplicitVRLittleEndian or not isinstance(assoc.dul, FastSendDUL) or watched(assoc):
        return None
    for context in assoc.accepted_contexts:
        if context.abstract_syntax == sop_class and context.transfer_syntax[0] == transfer_syntax and context.as_scu:
            return cast(int, context.context_id)
    return None


def send_c_store(assoc: Any, context_id: int, path: Path, sop_class: str, sop_instance: str,
                 message_id: int, data: bytes | None = None) -> int | None:
    """Send the file's dataset as it is (``data``: the file's bytes, already in memory); the
    response's status, or None when none came.

    As pynetdicom's ``send_c_store``: RuntimeError when the association is not established, the
    association aborted when no valid response arrives within the DIMSE timeout. Raises
    ``OSError`` when the file cannot be read (``FileUnreadable`` once part of it was sent).
    """
    if not assoc.is_established:
        raise RuntimeError("The association with a peer SCP must be established before sending a C-STORE request")
    request = C_STORE()  # pynetdicom's setters check the values as for its own send_c_store
    request.MessageID = message_id
    request.Priority = PRIORITY_LOW
    request.AffectedSOPClassUID = UID(sop_class)
    request.AffectedSOPInstanceUID = UID(sop_instance)
    message = outgoing_store(context_id, request, path, assoc.acceptor.maximum_length, data)
    response = _exchange(assoc, message)
    if message.error is not None:
        assoc.abort()
        raise message.error
    if response is None:
        assoc._handle_no_response()
        return None
    if not (isinstance(response, C_STORE) and response.is_valid_response):
        LOGGER.error("Received an invalid C-STORE response from the peer")
        assoc.abort()
        return None
    if response.MessageIDBeingRespondedTo != message_id:
        # a late or repeated answer to an earlier request says nothing about this file (DCMTK checks it too)
        LOGGER.error("The peer answered C-STORE message %d with a response to message %s", message_id,
                     response.MessageIDBeingRespondedTo)
        assoc.abort()
        return None
    return cast(int, response.Status)


def outgoing_store(context_id: int, request: C_STORE, path: Path, peer_max_pdu: int,
                   data: bytes | None = None) -> OutgoingStore:
    """The message for the DUL thread: the request's command, then the file's dataset as pynetdicom
    cuts it; from ``data`` (the file's bytes, already in memory) when given."""
    source: BinaryIO | None = None
    if data is not None:
        offset, size = dataset_offset(io.BytesIO(data), path), len(data)
    else:
        source = open(path, "rb")  # noqa: SIM115 - the DUL thread closes it when written (OutgoingStore.finish)
        try:
            offset, size = dataset_offset(source, path), os.fstat(source.fileno()).st_size
        except BaseException:
            source.close()
            raise
    return OutgoingStore(context_id, c_store_rq_command(request), source, offset, size - offset,
                         fragment_bytes(peer_max_pdu, size - offset), peer_max_pdu - 6 if peer_max_pdu else 0,
                         data=data, label=path.name)


def dataset_offset(source: BinaryIO, path: Path) -> int:
    """Where the file's dataset starts, as pynetdicom's ``split_dataset`` finds it.

    The fast scan is trusted when it saw the first element header after the file meta, or the
    whole file; a file meta reaching into the last bytes of the 64 kB scanned, or a few stray
    bytes after it, are read by pydicom as pynetdicom reads them.
    """
    head = source.read(SCAN_BYTES)
    offset = dataset_start(head)
    if offset is not None and (offset + 8 <= len(head) or offset == len(head) < SCAN_BYTES):
        return offset
    try:  # pynetdicom's split_dataset, on the open file (or the bytes in memory)
        source.seek(0)
        read_preamble(source, False)
        read_dataset(source, is_implicit_VR=False, is_little_endian=True, stop_when=_not_file_meta)
        return source.tell()
    except Exception as err:  # noqa: BLE001 - pydicom's InvalidDicomError and friends
        raise ValueError(f"{path.name} has no readable DICOM file meta ({err})") from None


def _not_file_meta(tag: Any, _vr: str | None, _length: int) -> bool:
    return bool(tag.group != 2)


@contextmanager
def _write_timeout(sock: Any, seconds: float | None) -> Iterator[None]:
    """A peer that stops reading ends the association after ``seconds`` without progress.

    The requestor's socket has no timeout once connected (pynetdicom), and a blocked write would
    hold the DUL thread, and ``abort()`` waiting for it, for as long as the peer keeps the
    connection open. Only the DUL thread uses the socket, so the timeout is set around writes.
    """
    try:
        previous = sock.gettimeout()
        sock.settimeout(seconds)
    except OSError:  # closed by an abort: the write fails and is handled as any lost connection
        yield
        return
    try:
        yield
    finally:
        try:
            sock.settimeout(previous)
        except OSError:  # closed meanwhile
            pass


def _send_all(sock: Any, data: bytes | memoryview) -> None:
    """``sendall`` whose timeout counts from the last progress, not from the start (a slow link is
    not a stalled one); TLS sockets too."""
    view = memoryview(data)
    while view:
        view = view[sock.send(view):]


def _exchange(assoc: EventDrivenAssociation, message: OutgoingStore) -> Any:
    """Queue the message and wait for the response, the association's reactor paused meanwhile.

    The DIMSE timeout counts from when the image's last bytes left, as DCMTK's counts from the
    end of the sending: an image that takes longer than the timeout to cross a slow link is not
    given up while bytes still flow (the DUL's writes end on their own when the peer takes
    nothing for the network timeout; see :func:`_wait_for_response` for the bytes still queued).
    """
    slice_seconds = assoc.dimse.dimse_timeout or 60
    held = getattr(assoc, HELD, False)
    assoc._reactor_checkpoint.clear()
    try:
        deadline = time.monotonic() + slice_seconds
        while not assoc._is_paused:  # bounded, unlike pynetdicom's: a dead reactor never parks
            if time.monotonic() > deadline or not assoc.is_alive():
                message.finish()
                return None
            time.sleep(PAUSE_POLL_SECONDS)
        assoc.dul.to_provider_queue.put(cast(Any, message))  # FastSendDUL takes it off before pynetdicom looks
        while not message.done.wait(slice_seconds):
            if not assoc.dul.is_alive():
                return None
        return _wait_for_response(assoc)
    finally:
        if not held:
            assoc._reactor_checkpoint.set()


@contextmanager
def reactor_held(assoc: Any) -> Iterator[None]:
    """Keep the association's reactor parked from one C-STORE to the next, not resumed after each.

    Why: resuming it after every image (as pynetdicom's ``send_c_store`` does) wakes its thread
    once per image, and on a 2-core machine that thread takes the interpreter lock from the
    sending thread just as it prepares the next image (one association to storescp: ≈ 0.1 ms per
    image). The reactor of an association the bridge requested has nothing to serve between the
    bridge's own requests; it runs again when the images are sent (release, abort checks).
    pynetdicom's own ``send_c_store`` (converted files) still resumes it afterwards: the next
    fast C-STORE parks it again.
    """
    setattr(assoc, HELD, True)
    try:
        yield
    finally:
        setattr(assoc, HELD, False)
        assoc._reactor_checkpoint.set()


def _wait_for_response(assoc: EventDrivenAssociation) -> Any:
    """The next DIMSE message, or None after the DIMSE timeout without an answer *or* progress.

    Written is not sent: the kernel may hold megabytes of the image in the socket's buffers
    while a slow WAN link carries them. Where the bytes still unacknowledged by the peer can be
    read (Linux), the timeout restarts while their number falls; elsewhere it counts from the
    end of the writing.
    """
    timeout = assoc.dimse.dimse_timeout
    if timeout is None:
        return assoc.dimse.get_msg(block=True)[1]
    transport = cast(Any, assoc.dul.socket)
    sock = transport.socket if transport is not None else None
    unsent = _unacknowledged_bytes(sock)
    quiet_since = time.monotonic()
    while True:
        try:
            return assoc.dimse.msg_queue.get(timeout=min(PROGRESS_POLL_SECONDS, timeout))[1]
        except queue.Empty:
            pass
        now, before, unsent = time.monotonic(), unsent, _unacknowledged_bytes(sock)
        if unsent is not None and before is not None and unsent < before:
            quiet_since = now  # the link is still carrying the image
        if now - quiet_since >= timeout:
            return None


def _unacknowledged_bytes(sock: Any) -> int | None:
    """Bytes in the socket's send queue the peer has not acknowledged (Linux SIOCOUTQ), else None."""
    if sock is None or fcntl is None or not hasattr(termios, "TIOCOUTQ"):
        return None
    try:
        return cast(int, struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except (OSError, ValueError):
        return None
