"""The C-STORE fast path: images streamed from the socket straight into their file.

Why: with pynetdicom's normal path a C-STORE costs about 4.2 ms of Python where DCMTK's storescp
needs 1.7 ms (issue 12): PDUs read in 4 kB pieces, every P-DATA decoded into objects, the command
set decoded and the file meta and the response encoded with pydicom, the message handed from
the DUL thread to the association thread and back. Here, inside the DUL thread:

1. a P-DATA-TF PDU arrives on an established association (Sta6) while no DIMSE message is being
   assembled; it holds one complete command set: a C-STORE-RQ with a dataset, for an accepted
   presentation context, with only the elements a C-STORE-RQ has;
2. the command is decoded by hand (implicit VR little endian), a ``C_STORE`` request primitive
   is filled through pynetdicom's own setters (they validate the UIDs), a temporary file is
   made in pynetdicom's temporary folder (``tempfile.gettempdir()``, which the receiver points
   into the storage folder) and the preamble and the file meta are written: byte for byte what
   ``create_file_meta`` + ``write_file_meta_info`` write (a test compares);
3. the dataset fragments of the following P-DATA-TF PDUs go from the socket (``recv_into`` a
   1 MiB buffer) into the file with ``os.write``, writeback being started every few MiB
   (``sync_file_range``) so that the final ``fdatasync`` (``receive.sync_before_ack``) finds
   little left to do; the Study and SOP Instance UIDs are peeked from the first fragment (with
   ``header_scan``'s walk, so they are what the receiver would read back from the file) for the
   "bytes arrived" hook and for the handler, with the receiver's ``FastStoreOptions.peek_tags``
   (what the Pending view shows, so that it need not open the file either);
4. after the last fragment the EVT_C_STORE handlers are called exactly as pynetdicom's storage
   SCP calls them (``event.request``, ``event.dataset_path``, ``event.context``, an exception
   answering 0xC211), with what the stream taught left on the request (``_bridge_incomplete``,
   ``_bridge_streamed``: :class:`StreamedFacts`) so the receiver neither re-reads the header
   nor syncs the file twice; the file is removed if the handler left it, and the C-STORE-RSP is
   sent from bytes encoded by hand (identical to pynetdicom's; a test compares);
5. every other PDU and message (association negotiation, C-ECHO, release, abort, a command split
   over several fragments, anything unexpected) goes to pynetdicom unchanged.

A write that fails (disk full, I/O error) does not abort: the rest of the dataset is read and
dropped and the image is answered 0xA700 (out of resources), so the PACS keeps it and retries.
A C-STORE cut off (connection lost, A-ABORT, a protocol error) deletes its partial file at once.

Because the PDUs it handles never become pynetdicom objects, EVT_DATA_RECV, EVT_PDU_RECV,
EVT_DIMSE_RECV and their *_SENT partners are not fired for them: the fast path switches itself
off for an association that has a handler bound to any of those (pynetdicom's own debug-logging
handlers excepted), so no observer is silently bypassed. The receiver therefore binds none of
them; its "bytes arrived" hook (:class:`bridge.reactor.Guards`) replaces EVT_DATA_RECV.

Dependence on pynetdicom internals (3.0.4, pinned; ``PYNETDICOM_DEPENDENCIES`` are hashed by
``tests/test_fast_path.py``): the DUL's state names and queues, ``dimse.message``,
``assoc._accepted_cx``, ``assoc._sent_release``, the C_STORE primitive's ``_dataset_path``/
``_context_id``, the storage SCP's handler contract, and the byte layout of the file meta and
the C-STORE-RSP. The hand encoding of the command set and the response, and ``recv_into``,
would be welcome upstream; the in-thread storing is the bridge's own choice.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, _config, _handlers, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from .header_scan import SCAN_BYTES, DatasetPeek, peek_dataset, scan_dataset_start
from .reactor import EventDrivenAssociation, EventDrivenDUL, _recv_exactly

LOGGER = logging.getLogger(__name__)

STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_HANDLER_FAILED = 0xC211  # what pynetdicom answers when the EVT_C_STORE handler raises
BUFFER_BYTES = 1024 * 1024
WRITEBACK_STEP = 256 * 1024  # start writeback often: a 512 kB CT image is then mostly on disk at its end
SMALL_PDU = 64 * 1024  # a C-STORE-RQ command set is a few hundred bytes

# Events whose handlers would miss what the fast path handles itself.
LOW_LEVEL_EVENTS = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_DIMSE_RECV,
                    evt.EVT_DATA_SENT, evt.EVT_PDU_SENT, evt.EVT_DIMSE_SENT)
_PYNETDICOM_LOGGING = {_handlers.standard_pdu_recv_handler, _handlers.standard_pdu_sent_handler,
                       _handlers.standard_dimse_recv_handler, _handlers.standard_dimse_sent_handler}

PYNETDICOM_DEPENDENCIES = (
    "pynetdicom.dimse_messages.DIMSEMessage.decode_msg",
    "pynetdicom.dimse_messages.DIMSEMessage.message_to_primitive",
    "pynetdicom.dimse_messages.DIMSEMessage.encode_msg",
    "pynetdicom.dimse.DIMSEServiceProvider.receive_primitive",
    "pynetdicom.service_class.StorageServiceClass.SCP",
    "pynetdicom.service_class.attempt.__exit__",
    "pynetdicom.association.Association._serve_request",
    "pynetdicom.dsutils.create_file_meta",
    "pynetdicom.fsm.DT_2",
    "pynetdicom.events.Event.dataset_path",
)


def cut_off_notice(calling: str) -> tuple[str, str]:
    """(throttle key, log-book text) for an image whose association ended before it was whole."""
    return (f"partial:{calling}", f"the association from {calling} ended in the middle of an image; its partial "
            f"file was deleted (it was never acknowledged: the sender keeps it)")


@dataclass(frozen=True)
class FastStoreOptions:
    """The receiver's choices for the fast path.

    ``peek_tags``: top-level tags to peek from each image's first fragment besides the Study and SOP
    Instance UIDs (asked per image: the answer may follow live settings), left on the request for the
    handler (:class:`StreamedFacts`).
    """

    sync_before_ack: bool = True
    peek_tags: Callable[[], frozenset[int]] = field(default=lambda: frozenset())


@dataclass(frozen=True)
class StreamedFacts:
    """What the fast path learnt while streaming an image, left on its request for the handler.

    ``identity``: raw (0008,0018)/(0020,000D) values peeked from the first fragment ({} or one of
    them missing: certainly absent at the top level), None when the peek was not certain;
    ``synced``: the file's data is on stable storage already (``receive.sync_before_ack``);
    ``peek``: the walk of the first fragment for those and ``FastStoreOptions.peek_tags`` (None for a
    deflated dataset), whatever it settled.
    """

    identity: dict[int, bytes] | None
    synced: bool
    peek: DatasetPeek | None = None


# -- encoding by hand (byte-identical to pynetdicom/pydicom; see tests/test_fast_path.py) ---------
def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _explicit(group_element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 0x0002, group_element, vr, len(value)) + value


_META_VERSION = struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"
_META_TAIL = (_explicit(0x0012, b"UI", _ui(PYNETDICOM_IMPLEMENTATION_UID))
              + _explicit(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
                          + (b" " if len(PYNETDICOM_IMPLEMENTATION_VERSION) % 2 else b"")))
PREAMBLE = b"\0" * 128 + b"DICM"


def file_meta_bytes(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, 'DICM' and the file meta pynetdicom writes for a received C-STORE."""
    body = (_META_VERSION + _explicit(0x0002, b"UI", _ui(sop_class)) + _explicit(0x0003, b"UI", _ui(sop_instance))
            + _explicit(0x0010, b"UI", _ui(transfer_syntax)) + _META_TAIL)
    return PREAMBLE + struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def _implicit(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


def pdu_header(context_id: int, control: int, size: int) -> bytes:
    """The header of a P-DATA-TF PDU carrying one PDV of ``size`` bytes (the data itself follows)."""
    return struct.pack(">BBLLBB", 0x04, 0x00, size + 6, size + 2, context_id, control)


def c_store_rsp_pdu(context_id: int, message_id: int, sop_class: str, sop_instance: str, status: int) -> bytes:
    """The P-DATA-TF PDU carrying the C-STORE-RSP pynetdicom would send."""
    command = (_implicit(0x0002, _ui(sop_class)) + _implicit(0x0100, struct.pack("<H", 0x8001))
               + _implicit(0x0120, struct.pack("<H", message_id)) + _implicit(0x0800, struct.pack("<H", 0x0101))
               + _implicit(0x0900, struct.pack("<H", status)) + _implicit(0x1000, _ui(sop_instance)))
    command = _implicit(0x0000, struct.pack("<L", len(command))) + command
    return pdu_header(context_id, 0x03, len(command)) + command


_C_STORE_RQ_ELEMENTS = frozenset({0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000, 0x1030, 0x1031})


def decode_command(data: bytes | memoryview) -> dict[int, bytes] | None:
    """A command set's elements {element number: value}; None if it is not a plain C-STORE-RQ."""
    elements: dict[int, bytes] = {}
    position, end = 0, len(data)
    while position < end:
        if position + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHL", data, position)
        position += 8
        if group != 0 or element not in _C_STORE_RQ_ELEMENTS or position + length > end:
            return None
        elements[element] = bytes(data[position:position + length])
        position += length
    if elements.get(0x0100) != b"\x01\x00" or elements.get(0x0800, b"\x01\x01") == b"\x01\x01":
        return None  # not a C-STORE-RQ, or one without a dataset
    return elements


def _text(value: bytes) -> str | None:
    try:
        text = value.decode("ascii").rstrip("\0 ")
    except UnicodeDecodeError:
        return None
    return None if "\\" in text else text


def _us(value: bytes | None) -> int | None:
    return struct.unpack("<H", value)[0] if value is not None and len(value) == 2 else None


SOP_INSTANCE_TAG, STUDY_INSTANCE_TAG = 0x00080018, 0x0020000D


IDENTITY_TAGS = frozenset({SOP_INSTANCE_TAG, STUDY_INSTANCE_TAG})


def peek_identity(data: bytes | memoryview, transfer_syntax: str) -> dict[int, bytes] | None:
    """Raw values of SOP Instance UID (0008,0018) and Study Instance UID (0020,000D) at the top level
    of a dataset's first bytes, read by ``header_scan``'s walk (so exactly what ``read_identity``
    would read from the file; a tag walked past is absent); None when ``data`` does not settle both."""
    return scan_dataset_start(bytes(data[:SCAN_BYTES]), transfer_syntax, set(IDENTITY_TAGS))


def peek_study_uid(data: bytes | memoryview, transfer_syntax: str) -> str | None:
    """Study Instance UID (0020,000D) from the start of a dataset, when it is in ``data``."""
    found = peek_identity(data, transfer_syntax)
    value = None if found is None else found.get(STUDY_INSTANCE_TAG)
    return None if value is None else _text(value)


# -- writeback ------------------------------------------------------------------------------------
def _load_sync_file_range() -> Any:
    if not hasattr(os, "posix_fadvise"):  # not Linux/BSD: fdatasync does it all at the end
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
    return function


_SYNC_FILE_RANGE = _load_sync_file_range()
SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now (no waiting), so a later fdatasync is short."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def durable(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


# -- one C-STORE in flight --------------------------------------------------------------------------
class _InFlight:
    """The C-STORE whose dataset is arriving: its file and what the response needs."""

    def __init__(self, request: C_STORE, context_id: int, transfer_syntax: str, fd: int | None, path: str,
                 writeback: bool) -> None:
        self.request = request
        self.context_id = context_id
        self.transfer_syntax = transfer_syntax
        self.fd: int | None = fd
        self.path = path
        self.written = 0
        self.written_back = 0
        self.error: OSError | None = None
        self.first_fragment = True
        self.writeback = writeback
        self.walker: Any = None  # Guards.dataset_walker's object, fed the dataset bytes
        self.incomplete: Exception | None = None
        self.identity: dict[int, bytes] | None = None  # peek_identity of the first fragment
        self.peek: DatasetPeek | None = None  # the first fragment's walk, for the handler
        self.synced = False  # fdatasync done: the receiver need not sync the file again

    def write(self, data: memoryview) -> None:
        if self.fd is None:
            return  # after a failed write: the rest is read and dropped
        try:
            while data:
                done = os.write(self.fd, data)
                data = data[done:]
                self.written += done
            if self.writeback and self.written - self.written_back >= WRITEBACK_STEP:
                start_writeback(self.fd, self.written_back, self.written - self.written_back)
                self.written_back = self.written
        except OSError as err:
            self.error = err
            self.discard()

    def feed(self, data: memoryview) -> None:
        """Dataset bytes to the completeness walker (``data`` is only valid during the call)."""
        if self.walker is None:
            return
        try:
            self.walker.feed(data)
        except Exception as err:  # noqa: BLE001 - the walker's verdict, not a transfer error
            self.incomplete, self.walker = err, None

    def finish_walk(self) -> None:
        if self.walker is None:
            return
        try:
            self.walker.finish()
        except Exception as err:  # noqa: BLE001 - the handler decides what to answer
            self.incomplete = err
        self.walker = None

    def close(self, sync: bool) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if sync and self.error is None:
                durable(fd)
                self.synced = True
        except OSError as err:
            self.error = err
        finally:
            os.close(fd)
        if self.error is not None:
            self.discard()

    def discard(self) -> None:
        """Close and delete the partial file (a cut-off C-STORE, a failed write)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def has_low_level_observers(assoc: Any) -> bool:
    """True when a handler (other than pynetdicom's debug logging) watches PDUs, DIMSE or raw data."""
    for event in LOW_LEVEL_EVENTS:
        for handler in assoc.get_handlers(event) or ():
            if handler and handler[0] not in _PYNETDICOM_LOGGING:
                return True
    return False


class FastStoreDUL(EventDrivenDUL):
    """The event-driven DUL that handles complete C-STOREs itself (see the module docstring)."""

    handled = 0  # C-STOREs this process took through the fast path (tests and benchmarks read it)

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        self._fast_allowed: bool | None = None
        self._in_flight: _InFlight | None = None
        self._buffer: bytearray | None = None
        self._study_told: str | None = None  # the last study named to the "bytes arrived" hook at once

    @property
    def options(self) -> FastStoreOptions | None:
        guards = self.guards
        return guards.fast_store if guards is not None else None

    def _fast(self) -> bool:
        if self._fast_allowed is None:
            self._fast_allowed = self.options is not None and not has_low_level_observers(self.assoc)
            if self.options is not None and not self._fast_allowed:
                LOGGER.info("C-STORE fast path off for this association: a handler watches PDUs/DIMSE messages")
        return self._fast_allowed

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._cut_off()

    def _cut_off(self) -> None:
        """The connection ended in the middle of an image: delete its partial file and say so once."""
        if self._in_flight is not None:
            LOGGER.info("C-STORE of %s cut off; partial file deleted", self._in_flight.request.AffectedSOPInstanceUID)
            self._in_flight.discard()
            self._in_flight = None
            self.study_in_flight = None
            if self.guards is not None:  # the same row as pynetdicom's path gives (receiver._association_gone)
                self.guards.report(*cut_off_notice(self.assoc.requestor.ae_title))

    # -- the hook in EventDrivenDUL._read_pdu_data -----------------------------------------------
    def _read_pdu_body(self, pdu_type: int, pdu_length: int, header: bytes | bytearray) -> bool:
        if self._in_flight is not None:
            if pdu_type == 0x04:
                self._continue(pdu_length)
                return True
            self._cut_off()  # an abort/release in the middle of an image: pynetdicom takes it from here
            return False
        if (pdu_type != 0x04 or pdu_length > SMALL_PDU or self.state_machine.current_state != "Sta6"
                or self.assoc.dimse.message is not None or not self._fast()):
            return False
        sock = cast(Any, self.socket).socket
        body = _recv_exactly(sock, pdu_length)
        if body is None:
            self.event_queue.put("Evt17")
            return True
        if not self._start(memoryview(body)):
            self._deliver(bytearray(header) + body)
        return True

    def _refuse_pdu(self, pdu_type: int, pdu_length: int) -> bool:
        refused = super()._refuse_pdu(pdu_type, pdu_length)
        if refused:
            self._cut_off()
        return refused

    def _start(self, body: memoryview) -> bool:
        """Begin a fast C-STORE from a PDU with its complete command; False: not ours, hand it on."""
        if len(body) < 6:
            return False
        pdv_length, context_id, control = struct.unpack_from(">LBB", body, 0)
        if control & 0x03 != 0x03 or 4 + pdv_length > len(body) or pdv_length < 2:
            return False  # a command split over fragments, or data first: pynetdicom's business
        assoc = cast(EventDrivenAssociation, self.assoc)
        context = assoc._accepted_cx.get(context_id)
        command = decode_command(body[6:4 + pdv_length])
        if context is None or command is None or assoc._sent_release:
            return False
        request = self._request(command, context_id)
        if request is None or not self._is_storage(cast(str, request.AffectedSOPClassUID)):
            return False
        transfer_syntax = str(context.transfer_syntax[0])
        writeback = (self.options or FastStoreOptions()).sync_before_ack
        try:
            fd, path = tempfile.mkstemp(suffix=".dcm", dir=tempfile.gettempdir())
        except OSError as err:  # answered 0xA700 once the dataset has been read
            self._in_flight = _InFlight(request, context_id, transfer_syntax, None, "", writeback)
            self._in_flight.error = err
        else:
            request._dataset_path = cast(Any, Path(path))
            self._in_flight = _InFlight(request, context_id, transfer_syntax, fd, path, writeback)
            self._in_flight.write(memoryview(file_meta_bytes(cast(str, request.AffectedSOPClassUID),
                                                             cast(str, request.AffectedSOPInstanceUID),
                                                             transfer_syntax)))
        guards = self.guards
        if guards is not None and guards.dataset_walker is not None:
            self._in_flight.walker = guards.dataset_walker(transfer_syntax)
        self._after_bytes(None)
        rest = body[4 + pdv_length:]
        if rest:  # dataset fragments in the same PDU (rare): as if they came in a PDU of their own
            self._consume_pdvs_from_memory(rest)
        return True

    def _request(self, command: dict[int, bytes], context_id: int) -> C_STORE | None:
        """The C_STORE request primitive pynetdicom would make (its setters validate)."""
        request = C_STORE()
        try:
            request.MessageID = _us(command.get(0x0110))
            request.AffectedSOPClassUID = UID(_text(command.get(0x0002, b"")) or "")
            request.AffectedSOPInstanceUID = UID(_text(command.get(0x1000, b"")) or "")
            request.Priority = _us(command.get(0x0700)) or 0
            if 0x1030 in command:
                request.MoveOriginatorApplicationEntityTitle = _text(command[0x1030])
            if 0x1031 in command:
                request.MoveOriginatorMessageID = _us(command[0x1031])
        except (ValueError, TypeError):
            return None
        if request.MessageID is None or not request.AffectedSOPClassUID or not request.AffectedSOPInstanceUID:
            return None
        request._context_id = context_id
        return request

    def _is_storage(self, sop_class: str) -> bool:
        if _config.UNRESTRICTED_STORAGE_SERVICE:
            return True
        try:
            sop_class = self.assoc.acceptor.accepted_common_extended[sop_class][0]  # type: ignore[index]
        except KeyError:
            pass
        return uid_to_service_class(sop_class) is StorageServiceClass

    # -- dataset fragments -----------------------------------------------------------------------
    def _continue(self, pdu_length: int) -> None:
        """Stream one P-DATA-TF PDU of the dataset into the file."""
        try:
            self._continue_reading(pdu_length)
        except OSError:  # the connection broke in the middle of a PDU
            self._fail_stream()

    def _continue_reading(self, pdu_length: int) -> None:
        sock = cast(Any, self.socket).socket
        remaining = pdu_length
        while remaining > 0:
            header = _recv_exactly(sock, 6) if remaining >= 6 else None
            if header is None:
                return self._fail_stream()
            pdv_length, context_id, control = struct.unpack(">LBB", header)
            remaining -= 4 + pdv_length
            if not self._fragment_fits(pdv_length, context_id, control, remaining):
                return self._protocol_error()
            if not self._stream(sock, pdv_length - 2):
                return self._fail_stream()
            if control & 0x02:
                self._finish()
                if remaining:
                    rest = _recv_exactly(sock, remaining)
                    if rest is None:
                        self.event_queue.put("Evt17")
                        return None
                    self._deliver(bytearray(struct.pack(">BBL", 4, 0, remaining)) + rest)
                return None
        self._after_bytes(None)
        return None

    def _fragment_fits(self, pdv_length: int, context_id: int, control: int, remaining: int) -> bool:
        store = cast(_InFlight, self._in_flight)
        return pdv_length >= 2 and remaining >= 0 and context_id == store.context_id and not control & 0x01

    def _stream(self, sock: Any, length: int) -> bool:
        """Copy ``length`` bytes from the socket to the file; False if the connection ended first."""
        store = cast(_InFlight, self._in_flight)
        if self._buffer is None:
            self._buffer = bytearray(BUFFER_BYTES)
        view = memoryview(self._buffer)
        while length > 0:
            try:
                got = sock.recv_into(view, min(length, BUFFER_BYTES))
            except OSError:
                return False
            if not got:
                return False
            if store.first_fragment:
                self._first_fragment(store, view[:got])
            store.write(view[:got])
            store.feed(view[:got])
            length -= got
        return True

    def _consume_pdvs_from_memory(self, data: memoryview) -> None:
        """Dataset PDVs that came in the command's PDU (already read)."""
        store = cast(_InFlight, self._in_flight)
        position = 0
        while position < len(data):
            if position + 6 > len(data):
                return self._protocol_error()
            pdv_length, context_id, control = struct.unpack_from(">LBB", data, position)
            end = position + 4 + pdv_length
            if not self._fragment_fits(pdv_length, context_id, control, len(data) - end):
                return self._protocol_error()
            fragment = data[position + 6:end]
            if store.first_fragment:
                self._first_fragment(store, fragment)
            store.write(fragment)
            store.feed(fragment)
            position = end
            if control & 0x02:
                self._finish()
                if position < len(data):
                    self._deliver(bytearray(struct.pack(">BBL", 4, 0, len(data) - position)) + data[position:])
                return None
        return None

    def _first_fragment(self, store: _InFlight, data: memoryview) -> None:
        """Peek the Study Instance UID; tell the "bytes arrived" hook at once when the study is new to the
        association (for the study of its previous image the hook knows already: the usual throttle will do)."""
        store.first_fragment = False
        options = self.options
        wanted = IDENTITY_TAGS if options is None else IDENTITY_TAGS | options.peek_tags()
        store.peek = peek_dataset(bytes(data[:SCAN_BYTES]), store.transfer_syntax, wanted)
        store.identity = None if store.peek is None else store.peek.values(IDENTITY_TAGS)
        study = None if store.identity is None else store.identity.get(STUDY_INSTANCE_TAG)
        self.study_in_flight = None if study is None else _text(study)
        if self.study_in_flight is not None and self.study_in_flight != self._study_told:
            self._study_told = self.study_in_flight
            self._after_bytes(None, at_once=True)

    def _fail_stream(self) -> None:
        self._cut_off()
        self.event_queue.put("Evt17")

    def _protocol_error(self) -> None:
        """A fragment that does not belong to the dataset in flight: abort, as pynetdicom would."""
        self._cut_off()
        self.event_queue.put("Evt19")
        self._discard_input = True

    # -- the end of a dataset ------------------------------------------------------------------------
    def _finish(self) -> None:
        store = cast(_InFlight, self._in_flight)
        FastStoreDUL.handled += 1  # under the GIL; a rare lost count only matters to a test
        self._in_flight = None
        self.study_in_flight = None
        options = self.options or FastStoreOptions()
        store.close(sync=options.sync_before_ack)
        request = store.request
        if store.walker is not None or store.incomplete is not None:
            store.finish_walk()
            request._bridge_incomplete = store.incomplete  # type: ignore[attr-defined]
        # what the receiver would otherwise read back from the file or sync again (see StreamedFacts)
        streamed = StreamedFacts(identity=store.identity, synced=store.synced, peek=store.peek)
        request._bridge_streamed = streamed  # type: ignore[attr-defined]
        status: int | None
        if store.error is not None:
            status = STATUS_OUT_OF_RESOURCES
            self._report_write_error(store)
        else:
            status = self._call_handlers(store)
            with contextlib.suppress(OSError):
                os.unlink(store.path)  # pynetdicom removes its file after the handler too
        if status is None or not self.assoc.is_established:
            return
        message_id = cast(int, request.MessageID)
        cast(Any, self.socket).send(c_store_rsp_pdu(store.context_id, message_id, str(request.AffectedSOPClassUID),
                                                    str(request.AffectedSOPInstanceUID), status))
        self._idle_timer.restart()

    def _call_handlers(self, store: _InFlight) -> int | None:
        """EVT_C_STORE as pynetdicom's storage SCP triggers it; the status, or None if sent already."""
        assoc = cast(Any, self.assoc)
        context = assoc._accepted_cx[store.context_id]
        assoc.abort = assoc._abort_nonblocking  # as pynetdicom's ``attempt``: no blocking abort in a handler
        try:
            result = evt.trigger(assoc, evt.EVT_C_STORE, {"request": store.request, "context": context.as_tuple})
        except Exception:  # noqa: BLE001 - as pynetdicom: a failing handler is answered 0xC211
            LOGGER.exception("Exception in handler bound to 'evt.EVT_C_STORE'")
            return STATUS_HANDLER_FAILED
        finally:
            assoc.abort = assoc._abort_blocking
        if isinstance(result, int):
            return result
        # a Dataset (Status plus e.g. ErrorComment): pynetdicom encodes and sends it
        response = C_STORE()
        response.MessageIDBeingRespondedTo = store.request.MessageID
        response.AffectedSOPInstanceUID = store.request.AffectedSOPInstanceUID
        response.AffectedSOPClassUID = store.request.AffectedSOPClassUID
        response = StorageServiceClass(assoc).validate_status(cast(Any, result), response)
        assoc.dimse.send_msg(response, store.context_id)
        return None

    def _report_write_error(self, store: _InFlight) -> None:
        error = cast(OSError, store.error)
        guards = self.guards
        text = (f"cannot write image {store.request.AffectedSOPInstanceUID} from {self.assoc.requestor.ae_title}: "
                f"{error.strerror or error}; answered 0xA700 so the PACS retries")
        if guards is not None:
            guards.report(f"io:{error.errno}", text)
        else:
            LOGGER.warning("%s", text)


class FastStoreAssociation(EventDrivenAssociation):
    """An event-driven association whose DUL takes the C-STORE fast path."""

    dul_class = FastStoreDUL
