"""The C-STORE send fast path (bridge/fast_send.py): pynetdicom's bytes on the wire, pynetdicom's
reading of the answers, and honest failures when the file, the peer or the connection let it down.

Peers: DCMTK storescp, a pynetdicom SCP started here, and :class:`Proxy`, a TCP relay in front of
either that cuts the connection, stops reading, or rewrites what the real SCP answers.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import logging
import os
import random
import socket
import ssl
import struct
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import data_store
import pydicom.data
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RQ, C_STORE_RSP, N_ACTION_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE, N_ACTION
from pynetdicom.dsutils import split_dataset
from pynetdicom.pdu import P_DATA_TF

from bridge import fast_send, sender
from bridge.fast_send import FastSendAE, FastSendDUL, FileUnreadable
from bridge.header_scan import SCAN_BYTES, dataset_start
from bridge.net import NAGLE_OFF
from bridge.tls import client_context

from .conftest import free_port
from .pacs import StoreSCP
from .pki import make_pki
from .studies import make_large_study, make_study

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SAMPLE_FOLDERS = (Path(pydicom.data.__file__).parent / "test_files", Path(data_store.__file__).parent / "data")
PEER_MAX_PDUS = [16384, 4096, 4103, 0]  # 0: the peer takes PDUs of any size
WAIT = 60  # seconds any single wait in these tests may take before the test fails


@functools.cache
def real_files() -> tuple[tuple[Path, str], ...]:
    """(path, transfer syntax) of every Part-10 sample pydicom and pydicom-data ship, deflated left out."""
    found = []
    for folder in SAMPLE_FOLDERS:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                meta, _offset = split_dataset(path)
            except Exception:  # noqa: BLE001, S112 - not Part 10 or not DICOM at all
                continue
            syntax = str(meta.get("TransferSyntaxUID", ""))
            if syntax and syntax != DeflatedExplicitVRLittleEndian:
                found.append((path, syntax))
    return tuple(found)


@functools.cache
def one_file_per_syntax() -> dict[str, Path]:
    """The largest sample under 1 MiB in each transfer syntax (several PDUs even at 16 kB)."""
    chosen: dict[str, Path] = {}
    for path, syntax in real_files():
        size = path.stat().st_size
        if size < 1024 * 1024 and (syntax not in chosen or size > chosen[syntax].stat().st_size):
            chosen[syntax] = path
    return chosen


def syntax_id(syntax: str) -> str:
    return UID(syntax).keyword or syntax


def big_real_file() -> Path:
    """A real sample over 1 MiB (MR2_UNCI.dcm, 2 MB, from pydicom-data)."""
    path = SAMPLE_FOLDERS[1] / "MR2_UNCI.dcm"
    assert path.stat().st_size > 1024 * 1024
    return path


# -- 1. the bytes: what pynetdicom's send_c_store would put on the wire ----------------------------
def store_request(path: Path, message_id: int = 1, priority: int = fast_send.PRIORITY_LOW,
                  move_title: str | None = None, move_id: int | None = None) -> C_STORE:
    """The request pynetdicom's ``send_c_store`` builds for the file (its own code, step by step)."""
    meta, _offset = split_dataset(path)
    request = C_STORE()
    request.MessageID = message_id
    request.Priority = priority
    request.MoveOriginatorApplicationEntityTitle = move_title
    request.MoveOriginatorMessageID = move_id
    request.AffectedSOPClassUID = meta.get("MediaStorageSOPClassUID") or CT_IMAGE  # two samples have none
    request.AffectedSOPInstanceUID = meta.get("MediaStorageSOPInstanceUID") or "1.2.3.4"
    return request


def pynetdicom_wire(path: Path, request: C_STORE, context_id: int, peer_max_pdu: int) -> bytes:
    """Every byte pynetdicom writes for the C-STORE-RQ of a file sent from disk."""
    request._dataset_path = (path, split_dataset(path)[1])
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    wire = bytearray()
    for p_data in message.encode_msg(context_id, peer_max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(p_data)
        wire += pdu.encode()
    return bytes(wire)


def fast_wire(path: Path, request: C_STORE, context_id: int, peer_max_pdu: int) -> bytes:
    """Every byte the fast path's DUL thread writes for the same request."""
    message = fast_send.outgoing_store(context_id, request, path, peer_max_pdu)
    try:
        return b"".join(bytes(piece) for piece in message.pieces())
    finally:
        message.finish()


def assert_same_wire(path: Path, request: C_STORE, context_id: int, peer_max_pdu: int) -> None:
    fast = fast_wire(path, request, context_id, peer_max_pdu)
    expected = pynetdicom_wire(path, request, context_id, peer_max_pdu)
    if fast != expected:  # say where, not two megabytes of repr
        first = next((i for i, (a, b) in enumerate(zip(fast, expected, strict=False)) if a != b),
                     min(len(fast), len(expected)))
        raise AssertionError(f"{path.name} at max PDU {peer_max_pdu}: {len(fast)} bytes vs pynetdicom's "
                             f"{len(expected)}, first difference at byte {first}")


@pytest.mark.parametrize("peer_max_pdu", PEER_MAX_PDUS)
@pytest.mark.parametrize("syntax", sorted(one_file_per_syntax()), ids=syntax_id)
def test_pieces_are_pynetdicoms_bytes_in_every_transfer_syntax(syntax, peer_max_pdu):
    path = one_file_per_syntax()[syntax]
    assert_same_wire(path, store_request(path, message_id=7), 1, peer_max_pdu)
    assert_same_wire(path, store_request(path, message_id=65535), 255, peer_max_pdu)


def test_every_sample_file_pydicom_ships_goes_out_as_pynetdicom_sends_it():
    files = real_files()
    assert len({syntax for _path, syntax in files}) >= 11 and len(files) > 200
    for number, (path, _syntax) in enumerate(files):
        assert_same_wire(path, store_request(path, message_id=number + 1), 3, 16384)


@pytest.mark.parametrize("peer_max_pdu", [1024 * 1024 + 100, 3 * 1024 * 1024, 0, 16384, 4103])
def test_a_file_over_1_mib_is_streamed_as_pynetdicom_cuts_it(peer_max_pdu, monkeypatch):
    """Larger than one 1 MiB read: with PDUs over 1 MiB (or unlimited) each PDU's data is streamed
    in pieces; with small PDUs the fragments of one read are joined. No read is over 1 MiB."""
    path = big_real_file()
    real_pread = os.pread
    reads: list[int] = []

    def recording_pread(fd: int, size: int, position: int) -> bytes:
        reads.append(size)
        return real_pread(fd, size, position)

    monkeypatch.setattr(fast_send.os, "pread", recording_pread)
    assert_same_wire(path, store_request(path), 1, peer_max_pdu)
    assert len(reads) > 1 and max(reads) <= fast_send.READ_BYTES


def meta_only_file(folder: Path, sop_instance: str = "1.2.826.0.1.3680043.2.1143.1") -> Path:
    """A Part-10 file whose dataset is empty: file meta and nothing after it."""
    data = Dataset()
    data.SOPClassUID = CT_IMAGE
    data.SOPInstanceUID = sop_instance
    data.ensure_file_meta()
    data.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / "meta-only.dcm"
    data.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    cut = dataset_start(raw)
    assert cut is not None
    path.write_bytes(raw[:cut])
    return path


@pytest.mark.parametrize("peer_max_pdu", [*PEER_MAX_PDUS, 2 * 1024 * 1024])
def test_an_empty_dataset_is_one_empty_last_fragment_as_pynetdicom_sends(tmp_path, peer_max_pdu):
    path = meta_only_file(tmp_path)
    assert_same_wire(path, store_request(path), 1, peer_max_pdu)
    last_pdu = struct.pack(">BBLLBB", 0x04, 0, 6, 2, 1, 0x02)  # one PDV: no data, "dataset, last"
    assert fast_wire(path, store_request(path), 1, peer_max_pdu).endswith(last_pdu)


@pytest.mark.parametrize("move", [(None, None), ("MOVESCU", 17), ("A", 1), ("ODD", 65535),
                                  ("SIXTEEN_CHARS_AE", 0), ("WITH SPACE", None), (None, 9)])
@pytest.mark.parametrize("priority", [0, 1, 2])
@pytest.mark.parametrize("uids", [(CT_IMAGE, "1.2.3"), ("1.2.840.10008.5.1.4.1.1.4", "1.23"),
                                  ("1.2.840.10008.5.1.4.1.1.7", "1.2.826.0.1.3680043.8.498.1234567890123456789")])
def test_the_command_set_is_pynetdicoms_with_move_originator_fields(move, priority, uids):
    request = C_STORE()
    request.MessageID = 4242
    request.Priority = priority
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = uids
    request.MoveOriginatorApplicationEntityTitle, request.MoveOriginatorMessageID = move
    sample = one_file_per_syntax()[ExplicitVRLittleEndian]
    request._dataset_path = (sample, split_dataset(sample)[1])  # a dataset follows, as in every C-STORE-RQ
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    command, _dataset = list(message.encode_msg(1, 0))
    ((_context_id, data),) = command.presentation_data_value_list
    assert fast_send.c_store_rq_command(request) == data[1:]  # after the control byte


@pytest.mark.parametrize("peer_max_pdu", [128, 100])
def test_a_peer_taking_tiny_pdus_gets_the_command_in_fragments_as_pynetdicom_cuts_it(tmp_path, peer_max_pdu):
    """No PDU longer than the peer said it takes: a long command set is cut too (PS3.8 9.3.1)."""
    path = make_study(tmp_path, count=1).files[0]
    request = store_request(path, move_title="SIXTEEN_CHARS_AE", move_id=3)
    assert len(fast_send.c_store_rq_command(request)) > peer_max_pdu
    assert_same_wire(path, request, 1, peer_max_pdu)


# -- where the dataset starts: as pynetdicom's split_dataset finds it -----------------------------
def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"UN"):
        return struct.pack("<HH2sHL", 2, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def _ui(text: str) -> bytes:
    raw = text.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def crafted_file(path: Path, extra_meta: bytes, dataset: bytes) -> Path:
    body = (_meta_element(0x0001, b"OB", b"\0\1") + _meta_element(0x0002, b"UI", _ui(CT_IMAGE))
            + _meta_element(0x0003, b"UI", _ui("1.2.3.4")) + _meta_element(0x0010, b"UI", _ui(ExplicitVRLittleEndian))
            + _meta_element(0x0012, b"UI", _ui("1.2.3")) + extra_meta)
    path.write_bytes(b"\0" * 128 + b"DICM" + _meta_element(0x0000, b"UL", struct.pack("<L", len(body))) + body
                     + dataset)
    return path


PATIENT_NAME = b"\x10\x00\x10\x00PN\x06\x00DOE^J "


def test_the_dataset_starts_where_pynetdicom_splits_every_sample_file():
    for path, _syntax in real_files():
        message = fast_send.outgoing_store(1, store_request(path), path, 16384)
        message.finish()
        assert message.offset == split_dataset(path)[1], path.name


@pytest.mark.parametrize("gap", range(9))
def test_a_file_meta_ending_at_the_edge_of_the_first_64_kb_is_split_as_pynetdicom_does(tmp_path, gap):
    """The fast scan reads 64 kB: a group-0002 element starting in its last 8 bytes must not be
    taken for the dataset's start (nor must the file be refused)."""
    base = len(crafted_file(tmp_path / "probe.dcm", b"", b"").read_bytes())
    filler = _meta_element(0x0031, b"OB", bytes(SCAN_BYTES - gap - base - 12))
    path = crafted_file(tmp_path / "edge.dcm", filler + _meta_element(0x0100, b"UI", _ui("1.2.3.4.5")),
                        PATIENT_NAME * 1000)
    assert_same_wire(path, store_request(path), 1, 16384)


@pytest.mark.parametrize("tail", [b"\x08", b"\x08\x00\x05", b"\x08\x00\x05\x00CS\x00"])
def test_a_few_stray_bytes_after_the_file_meta_are_treated_as_pynetdicom_does(tmp_path, tail):
    path = crafted_file(tmp_path / "stray.dcm", b"", tail)
    assert_same_wire(path, store_request(path), 1, 16384)


# -- 2. reading responses: as pynetdicom reads them, or not at all --------------------------------
def encoded(message: DIMSEMessage, primitive: object, context_id: int = 1) -> bytes:
    """The P-DATA-TF PDU pynetdicom sends for a response primitive."""
    message.primitive_to_message(primitive)  # type: ignore[arg-type]
    (p_data,) = list(message.encode_msg(context_id, 16382))
    pdu = P_DATA_TF()
    pdu.from_primitive(p_data)
    return pdu.encode()


def store_response(status: int, message_id: int = 1, sop_class: str | None = CT_IMAGE,
                   sop_instance: str | None = "1.2.3.4", **extra: object) -> C_STORE:
    response = C_STORE()
    response.MessageIDBeingRespondedTo = message_id
    response.Status = status
    if sop_class is not None:
        response.AffectedSOPClassUID = sop_class
    if sop_instance is not None:
        response.AffectedSOPInstanceUID = sop_instance
    for name, value in extra.items():
        setattr(response, name, value)
    return response


def pynetdicom_decode(pdu: bytes) -> tuple[int, object] | None:
    """(context ID, primitive) as pynetdicom's DIMSE reads one P-DATA-TF PDU, None if it cannot."""
    decoded = P_DATA_TF()
    decoded.decode(pdu)
    p_data = decoded.to_primitive()
    message = DIMSEMessage()
    try:
        if not message.decode_msg(p_data):
            return None
        return message.context_id, message.message_to_primitive()
    except Exception:  # noqa: BLE001 - pynetdicom could not read it either
        return None


RESPONSE_FIELDS = ("MessageIDBeingRespondedTo", "Status", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
                   "OffendingElement", "ErrorComment")


def assert_read_as_pynetdicom_reads(pdu: bytes) -> bool:
    """The fast reading of a PDU (body after the 6-byte header) is None or pynetdicom's; True if read."""
    fast = fast_send.c_store_response(memoryview(pdu[6:]))
    if fast is None:
        return False
    reference = pynetdicom_decode(pdu)
    assert reference is not None, "read by hand what pynetdicom cannot read"
    (fast_context, fast_response), (context, response) = fast, reference
    assert isinstance(response, C_STORE) and response.is_valid_response
    assert fast_context == context
    for name in RESPONSE_FIELDS:
        assert getattr(fast_response, name) == getattr(response, name), name
    return True


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xA700, 0xC000, 0x0107, 0xFE00])
@pytest.mark.parametrize(("context_id", "message_id"), [(1, 1), (3, 7), (255, 65535)])
@pytest.mark.parametrize("uids", [(CT_IMAGE, "1.2.3.4"), (None, None), (CT_IMAGE, None),
                                  ("1.2.840.10008.5.1.4.1.1.4", "1.2.826.0.1.3680043.8.498.12345678901")])
def test_a_plain_c_store_rsp_is_read_as_pynetdicom_reads_it(status, context_id, message_id, uids):
    pdu = encoded(C_STORE_RSP(), store_response(status, message_id, *uids), context_id)
    assert assert_read_as_pynetdicom_reads(pdu)
    _context, response = fast_send.c_store_response(memoryview(pdu[6:]))  # type: ignore[misc]
    assert (response.Status, response.MessageIDBeingRespondedTo) == (status, message_id)


def _command(elements: list[tuple[int, bytes]], group_length: bool = True) -> bytes:
    body = b"".join(struct.pack("<HHL", 0, element, len(value)) + value for element, value in elements)
    return (struct.pack("<HHL", 0, 0, 4) + struct.pack("<L", len(body)) if group_length else b"") + body


def _pdu(*pdvs: tuple[int, int, bytes]) -> bytes:
    items = b"".join(struct.pack(">LBB", len(data) + 2, context_id, control) + data
                     for context_id, control, data in pdvs)
    return struct.pack(">BBL", 4, 0, len(items)) + items


US = functools.partial(struct.pack, "<H")
PLAIN = [(0x0002, _ui(CT_IMAGE)), (0x0100, US(0x8001)), (0x0120, US(5)), (0x0800, US(0x0101)),
         (0x0900, US(0)), (0x1000, _ui("1.2.3.4"))]


def _with(elements: list[tuple[int, bytes]], **changes: bytes | None) -> list[tuple[int, bytes]]:
    """PLAIN with elements replaced (``e0900=b"..."``), removed (``None``) or added."""
    wanted = {int(name[1:], 16): value for name, value in changes.items()}
    changed = [(element, wanted.get(element, value)) for element, value in elements if wanted.get(element, 1)]
    known = {element for element, _ in elements}
    extra = [(element, value) for element, value in wanted.items() if element not in known and value is not None]
    return sorted(changed + extra)  # type: ignore[arg-type]


def _echo_response() -> C_ECHO:
    response = C_ECHO()
    response.MessageIDBeingRespondedTo, response.Status, response.AffectedSOPClassUID = 5, 0, "1.2.840.10008.1.1"
    return response


def _action_response() -> N_ACTION:
    response = N_ACTION()
    response.MessageIDBeingRespondedTo, response.Status = 5, 0
    response.AffectedSOPClassUID, response.AffectedSOPInstanceUID = "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1"
    return response


def _with_pdv_length(pdu: bytes, change: int) -> bytes:
    (length,) = struct.unpack_from(">L", pdu, 6)
    return pdu[:6] + struct.pack(">L", length + change) + pdu[10:]


GOOD = _pdu((1, 3, _command(PLAIN)))
FALLS_BACK = {
    "error comment": encoded(C_STORE_RSP(), store_response(0xB000, ErrorComment="coerced")),
    "offending element": encoded(C_STORE_RSP(), store_response(0xC000, OffendingElement=[0x00100010])),
    "dataset follows": _pdu((1, 3, _command(_with(PLAIN, e0800=US(0x0102))))),
    "dataset type 0": _pdu((1, 3, _command(_with(PLAIN, e0800=US(0x0000))))),
    "no dataset type": _pdu((1, 3, _command(_with(PLAIN, e0800=None)))),
    "c-echo-rsp": encoded(C_ECHO_RSP(), _echo_response()),
    "n-action-rsp": encoded(N_ACTION_RSP(), _action_response()),
    "c-store-rq": _pdu((1, 3, _command(_with(PLAIN, e0100=US(0x0001))))),
    "no command field": _pdu((1, 3, _command(_with(PLAIN, e0100=None)))),
    "no status": _pdu((1, 3, _command(_with(PLAIN, e0900=None)))),
    "no message id": _pdu((1, 3, _command(_with(PLAIN, e0120=None)))),
    "status of 4 bytes": _pdu((1, 3, _command(_with(PLAIN, e0900=b"\0\0\0\0")))),
    "message id of 0 bytes": _pdu((1, 3, _command(_with(PLAIN, e0120=b"")))),
    "trailing junk": _pdu((1, 3, _command(PLAIN) + b"\x00\x00\x01")),
    "a trailing element of another group": _pdu((1, 3, _command(PLAIN) + b"\x08\x00\x16\x00\x02\x00\x31\x00")),
    "duplicated status": _pdu((1, 3, _command([*PLAIN, (0x0900, US(0xC000))]))),
    "duplicated message id": _pdu((1, 3, _command([(0x0120, US(9)), *PLAIN]))),
    "element longer than the pdv": _pdu((1, 3, _command(PLAIN)[:-12] + struct.pack("<L", 40) + _ui("1.2.3.4"))),
    "undefined length": _pdu((1, 3, _command(PLAIN)[:-12] + b"\xff\xff\xff\xff" + _ui("1.2.3.4"))),
    "pdv length past the pdu": _with_pdv_length(GOOD, 2),
    "pdv length short of the pdu": _with_pdv_length(GOOD, -2),
    "pdv of one byte": struct.pack(">BBLLB", 4, 0, 5, 1, 1),
    "command not last (split over two pdvs)": _pdu((1, 1, _command(PLAIN))),
    "two pdvs in one pdu": _pdu((1, 1, _command(PLAIN)[:40]), (1, 3, _command(PLAIN)[40:])),
    "dataset pdv": _pdu((1, 2, _command(PLAIN))),
    "empty body": struct.pack(">BBL", 4, 0, 0),
}


def test_the_hand_made_plain_response_is_read():
    assert assert_read_as_pynetdicom_reads(GOOD)
    assert assert_read_as_pynetdicom_reads(_pdu((1, 3, _command(PLAIN, group_length=False))))


@pytest.mark.parametrize("case", sorted(FALLS_BACK))
def test_anything_but_a_plain_c_store_rsp_is_left_to_pynetdicom(case):
    assert fast_send.c_store_response(memoryview(FALLS_BACK[case][6:])) is None


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the mangled UIDs it reads
def test_mangled_responses_are_read_as_pynetdicom_reads_them_or_left_to_it():
    """Thousands of byte flips, cuts and splices of a plain response: whatever the hand reader
    accepts, pynetdicom reads the same (and some are still accepted: the test sees both sides)."""
    chance = random.Random(14)
    bases = [GOOD, encoded(C_STORE_RSP(), store_response(0xB000, 9, None, "1.2.3")),
             encoded(C_STORE_RSP(), store_response(0xA700, 65535, CT_IMAGE, None), 7)]
    accepted = 0
    for _ in range(4000):
        pdu = bytearray(chance.choice(bases))
        for _ in range(chance.randint(1, 3)):
            where = chance.randrange(6, len(pdu))
            kind = chance.random()
            if kind < 0.6:
                pdu[where] = chance.randrange(256)
            elif kind < 0.8:
                del pdu[where:where + chance.randint(1, 8)]
            else:
                pdu[where:where] = bytes(chance.randrange(256) for _ in range(chance.randint(1, 8)))
        pdu[2:6] = struct.pack(">L", len(pdu) - 6)
        accepted += assert_read_as_pynetdicom_reads(bytes(pdu))
    assert 50 < accepted < 4000


# -- peers ------------------------------------------------------------------------------------------
Answer = Callable[[evt.Event], "int | Dataset"]


class PynetdicomSCP:
    """pynetdicom's own storage SCP (not the bridge's reactors), keeping every file it receives."""

    aet = "PYSCP"

    def __init__(self, answer: Answer = lambda event: 0x0000, contexts: dict[str, list[str]] | None = None,
                 max_pdu: int = 16382) -> None:
        self.port = free_port()
        self.answer = answer
        self.files: list[bytes] = []  # each received file as pynetdicom wrote it (its file meta, then the dataset)
        self.aborted = threading.Event()
        ae = AE(ae_title=self.aet)
        ae.maximum_pdu_size = max_pdu
        for context in AllStoragePresentationContexts if contexts is None else ():
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        for sop_class, syntaxes in (contexts or {}).items():
            ae.add_supported_context(sop_class, syntaxes)
        self.ae = ae
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store),
                                                    (evt.EVT_ABORTED, lambda event: self.aborted.set())])

    def _store(self, event: evt.Event) -> int | Dataset:
        self.files.append(Path(event.dataset_path).read_bytes())
        return self.answer(event)

    @property
    def datasets(self) -> list[bytes]:
        return [dataset_part(raw) for raw in self.files]

    def stop(self) -> None:
        self.server.shutdown()


def dataset_part(raw: bytes) -> bytes:
    start = dataset_start(raw)
    assert start is not None
    return raw[start:]


def received_by_storescp(scp: StoreSCP) -> list[bytes]:
    return [dataset_part(path.read_bytes()) for path in sorted(scp.folder.iterdir()) if path.is_file()]


def digests(datasets: list[bytes]) -> Counter[str]:
    return Counter(hashlib.sha256(data).hexdigest() for data in datasets)


class Proxy:
    """A TCP relay in front of a real SCP that misbehaves on cue.

    ``cut_after``: once the sender has sent that many bytes, ``close`` both connections, or
    ``stall``: read nothing more (the sender's writes back up once the buffers are full).
    ``rewrite``: every P-DATA-TF PDU the SCP sends is replaced by what it returns.
    """

    def __init__(self, upstream_port: int, cut_after: int | None = None, mode: str = "close",
                 rewrite: Callable[[bytes], bytes] | None = None) -> None:
        self.upstream_port, self.cut_after, self.mode, self.rewrite = upstream_port, cut_after, mode, rewrite
        self.cut = threading.Event()
        self.stopped = threading.Event()
        self.listener = socket.socket()
        if mode == "stall":  # small buffers (inherited by accepted sockets): the stall shows after a few MB
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, name="proxy-accept", daemon=True)]
        self.threads[0].start()

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name="proxy-pump", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=WAIT)
            except OSError:
                return  # stop() closed the listener
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            self._start(self._requests, client, upstream)
            self._start(self._answers, upstream, client)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        total = 0
        try:
            while data := client.recv(65536):
                if self.cut_after is not None and total + len(data) > self.cut_after:
                    upstream.sendall(data[:self.cut_after - total])
                    self.cut.set()
                    if self.mode == "stall":
                        self.stopped.wait(4 * WAIT)  # read nothing more until the test ends
                    break
                upstream.sendall(data)
                total += len(data)
        except OSError:
            pass
        _close(client, upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket) -> None:
        pending = b""
        try:
            while data := upstream.recv(65536):
                if self.rewrite is None:
                    client.sendall(data)
                    continue
                pending += data
                while len(pending) >= 6 and len(pending) >= 6 + struct.unpack_from(">L", pending, 2)[0]:
                    size = 6 + struct.unpack_from(">L", pending, 2)[0]
                    pdu, pending = pending[:size], pending[size:]
                    client.sendall(self.rewrite(pdu) if pdu[0] == 0x04 else pdu)
        except OSError:
            pass
        _close(client, upstream)

    def stop(self) -> None:
        self.stopped.set()
        _close(self.listener, *self.sockets)
        for thread in self.threads:
            thread.join(WAIT)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


@pytest.fixture
def temp_in(tmp_path, monkeypatch):
    """pynetdicom's SCP writes incoming datasets into the test's folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.fixture
def scp(temp_in):
    peer = PynetdicomSCP()
    yield peer
    peer.stop()


def target_for(port: int, aet: str, timeout: float = 30, tls: ssl.SSLContext | None = None) -> sender.PacsTarget:
    return sender.PacsTarget("127.0.0.1", port, aet, "BRIDGE", network_timeout_seconds=timeout, tls=tls)


class Counts:
    """How far FastSendDUL's counters moved since the start."""

    def __init__(self) -> None:
        self.sent, self.responses = FastSendDUL.sent, FastSendDUL.responses

    def moved(self) -> tuple[int, int]:
        return FastSendDUL.sent - self.sent, FastSendDUL.responses - self.responses


def in_thread(work: Callable[[], object]) -> object:
    """Run ``work`` on its own thread; its result or exception, failing the test if it hangs."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome.append(err)

    thread = threading.Thread(target=run, name="test-send", daemon=True)
    thread.start()
    thread.join(4 * WAIT)
    assert not thread.is_alive(), "the send hangs"
    return outcome[0]


def assert_no_association_threads_left() -> None:
    """Every sending association and its DUL thread ended (bounded joins)."""
    from bridge.fast_send import FastSendAssociation

    for thread in threading.enumerate():
        if isinstance(thread, (FastSendAssociation, FastSendDUL)):
            thread.join(WAIT)
            assert not thread.is_alive(), f"{thread.name} is still running"


def send(target: sender.PacsTarget, files: list[Path], convert_into: Path | None = None) -> sender.SendReport:
    report = sender.SendReport()
    sender.send_batch(target, [sender.read_meta(path) for path in files], report, convert_into=convert_into)
    return report


# -- 3. end to end: real peers get the file's own bytes ---------------------------------------------
def test_every_transfer_syntax_reaches_storescp_and_pynetdicom_byte_for_byte(tmp_path, scp):
    files = [*one_file_per_syntax().values(), big_real_file(), meta_only_file(tmp_path)]
    sources = digests([dataset_part(path.read_bytes()) for path in files])
    storescp = StoreSCP(tmp_path / "storescp", extra_args=("+B", "+uf"))  # bit-preserving: the dataset as received
    try:
        for peer_port, aet in ((storescp.port, storescp.aet), (scp.port, scp.aet)):
            counts = Counts()
            report = send(target_for(peer_port, aet), files)
            assert report.ok and len(report.delivered) == len(files), report.failed
            assert counts.moved() == (len(files), len(files))
    finally:
        storescp.stop()
    assert digests(received_by_storescp(storescp)) == sources
    assert digests(scp.datasets) == sources


@pytest.mark.parametrize("max_pdu", [4103, 0])
def test_a_peer_taking_odd_sized_or_unlimited_pdus_gets_the_files_intact(temp_in, max_pdu):
    """Unlimited: each dataset in one PDU, a 2 MB one streamed into it in 1 MiB pieces."""
    peer = PynetdicomSCP(max_pdu=max_pdu)
    files = [big_real_file(), *make_study(temp_in / "s", count=2).files, meta_only_file(temp_in)]
    try:
        counts = Counts()
        report = send(target_for(peer.port, peer.aet), files)
    finally:
        peer.stop()
    assert report.ok and report.delivered == files
    assert counts.moved() == (4, 4)
    assert peer.datasets == [dataset_part(path.read_bytes()) for path in files]


def test_statuses_reach_the_sender_with_or_without_an_error_comment(temp_in):
    """0xB000 with an ErrorComment (read by pynetdicom), 0xA700 (deferred) and success (read by hand)."""
    answers = {1: Dataset(), 2: 0xA700, 3: 0x0000}
    answers[1].Status, answers[1].ErrorComment = 0xB000, "Patient name coerced"
    peer = PynetdicomSCP(lambda event: answers[len(peer.files)])
    try:
        files = make_study(temp_in / "study", count=3).files
        counts = Counts()
        report = send(target_for(peer.port, peer.aet), files)
    finally:
        peer.stop()
    assert report.delivered == [files[0], files[2]] and report.warnings == {files[0]: 0xB000}
    assert list(report.deferred) == [files[1]] and "0xA700" in report.deferred[files[1]]
    assert counts.moved() == (3, 2)  # all three sent by the fast path; the commented answer read by pynetdicom


def test_converted_and_deflated_files_go_through_pynetdicom_in_the_same_batch(temp_in, monkeypatch):
    from pydicom.data import get_testdata_file
    from pynetdicom import _config

    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", False)  # the peer refuses RLE for MR
    peer = PynetdicomSCP(contexts={CT_IMAGE: [ExplicitVRLittleEndian],
                                   "1.2.840.10008.5.1.4.1.1.4": [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                                   "1.2.840.10008.5.1.4.1.1.7": [DeflatedExplicitVRLittleEndian]})
    plain = make_study(temp_in / "study", count=1).files[0]
    rle, deflated = Path(get_testdata_file("MR_small_RLE.dcm")), Path(get_testdata_file("image_dfl.dcm"))
    try:
        counts = Counts()
        report = send(target_for(peer.port, peer.aet), [plain, rle, deflated], convert_into=temp_in / "converted")
    finally:
        peer.stop()
    assert report.ok and report.delivered == [plain, rle, deflated], report.failed
    assert list(report.converted) == [rle]
    assert counts.moved() == (1, 3)  # one C-STORE by the fast path; every plain answer read by hand
    assert peer.datasets[0] == dataset_part(plain.read_bytes())
    uids = [str(dcmread(io.BytesIO(raw), stop_before_pixels=True).SOPInstanceUID) for raw in peer.files]
    assert uids == [str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in (plain, rle, deflated)]


class CountingCheckpoint(threading.Event):
    """An association's reactor checkpoint that counts how often the reactor is let go on."""

    def __init__(self) -> None:
        super().__init__()
        self.resumed = 0
        super().set()

    def set(self) -> None:
        self.resumed += 1
        super().set()


def test_the_reactor_stays_parked_from_one_image_to_the_next(temp_in, monkeypatch):
    """Resuming the association's reactor after every image woke its thread once per image; it is
    let go only after a file pynetdicom sent (its send_c_store resumes it) and when the batch ends."""
    from pynetdicom import _config

    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", False)  # the peer refuses RLE for MR
    checkpoints: list[CountingCheckpoint] = []
    keep = sender.keep_responses_from_reactor

    def counting(assoc) -> None:  # noqa: ANN001
        checkpoints.append(CountingCheckpoint())
        assoc._reactor_checkpoint = checkpoints[-1]
        keep(assoc)

    monkeypatch.setattr(sender, "keep_responses_from_reactor", counting)
    peer = PynetdicomSCP(contexts={CT_IMAGE: [ExplicitVRLittleEndian],
                                   "1.2.840.10008.5.1.4.1.1.4": [ExplicitVRLittleEndian, ImplicitVRLittleEndian]})
    plain = make_study(temp_in / "study", count=6).files
    rle = Path(pydicom.data.get_testdata_file("MR_small_RLE.dcm"))
    try:
        report = send(target_for(peer.port, peer.aet), [*plain[:3], rle, *plain[3:]],
                      convert_into=temp_in / "converted")
    finally:
        peer.stop()
    assert report.ok and len(report.delivered) == 7, report.failed
    (checkpoint,) = checkpoints
    assert checkpoint.resumed <= 4  # after the converted file, at the end, by release() and kill(); was 9


# -- 4. faults: the file, the connection and the peer let the sender down -------------------------
def associate(port: int, aet: str, *syntaxes: str, **options: object):  # noqa: ANN201
    ae = FastSendAE(ae_title="BRIDGE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for syntax in syntaxes or (ExplicitVRLittleEndian,):
        ae.add_requested_context(CT_IMAGE, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, max_pdu=0, **options)
    assert assoc.is_established
    return assoc


def big_ct(folder: Path, side: int = 1024) -> Path:
    """A CT of side×side 16-bit noise: 2 MB at 1024 (several 1 MiB reads), 12.5 MB at 2500."""
    return make_large_study(folder, count=1, side=side).files[0]


@pytest.mark.parametrize("fault", ["shrinks", "read error"])
def test_a_file_that_shrinks_or_fails_mid_send_aborts_and_raises(scp, temp_in, monkeypatch, fault):
    path, again = big_ct(temp_in / "big"), big_ct(temp_in / "again")
    victim = [path]  # the file being sent
    real_pread = os.pread
    reads: list[int] = []

    def pread_failing_after_the_first(fd: int, size: int, position: int) -> bytes:
        reads.append(size)
        if len(reads) > 1 and fault == "shrinks":
            os.truncate(victim[0], position + 100)  # another program cuts the file while it is sent
        elif len(reads) > 1:
            raise OSError(errno.EIO, "Input/output error")
        return real_pread(fd, size, position)

    with monkeypatch.context() as patch:
        patch.setattr(fast_send.os, "pread", pread_failing_after_the_first)
        assoc = associate(scp.port, scp.aet)
        meta = sender.read_meta(path)
        context_id = fast_send.usable_context(assoc, meta.sop_class, meta.transfer_syntax)
        assert context_id is not None
        with pytest.raises(FileUnreadable, match="could not be read|ended .* early"):
            fast_send.send_c_store(assoc, context_id, path, meta.sop_class, meta.sop_instance, 1)
        assert assoc.is_aborted and not assoc.is_established
        assert scp.aborted.wait(WAIT)
        assoc.join(WAIT)
        assert_no_association_threads_left()
        reads.clear()
        victim[0] = again
        failure = in_thread(lambda: send(target_for(scp.port, scp.aet), [again]))
        assert isinstance(failure, FileUnreadable) and isinstance(failure, OSError)
    assert_no_association_threads_left()
    assert scp.files == []  # nothing half-sent was stored
    report = send(target_for(scp.port, scp.aet), make_study(temp_in / "next", count=2).files)
    assert report.ok and len(scp.files) == 2  # the peer takes the next association


def test_a_peer_closing_mid_dataset_is_a_transient_failure(scp, temp_in):
    proxy = Proxy(scp.port, cut_after=300_000, mode="close")
    try:
        outcome = in_thread(lambda: send(target_for(proxy.port, scp.aet, timeout=5), [big_ct(temp_in / "big")]))
        assert proxy.cut.is_set()
    finally:
        proxy.stop()
    assert isinstance(outcome, sender.TransientSendError), outcome
    assert_no_association_threads_left()
    assert send(target_for(scp.port, scp.aet), make_study(temp_in / "next", count=1).files).ok


def test_a_peer_that_stops_reading_mid_dataset_is_a_transient_failure_not_a_hang(scp, temp_in):
    """The PACS accepts the association and then reads nothing more: once the socket buffers
    are full the sender's writes block; the network timeout must still end the association."""
    proxy = Proxy(scp.port, cut_after=200_000, mode="stall")
    try:
        outcome = in_thread(lambda: send(target_for(proxy.port, scp.aet, timeout=2), [big_ct(temp_in / "big", 2500)]))
        assert proxy.cut.is_set()
    finally:
        proxy.stop()
    assert isinstance(outcome, sender.TransientSendError), outcome
    assert_no_association_threads_left()


def test_a_write_on_a_socket_closed_by_an_abort_fails_as_a_lost_connection():
    """abort() closes the socket from the sending thread; the DUL's next write must end in Evt17
    (pynetdicom's AssociationSocket.send catches it), not in an exception from the timeout."""
    closed = socket.socket()
    closed.close()
    with fast_send._write_timeout(closed, 2):
        pass
    connected, peer = socket.socketpair()
    try:
        connected.settimeout(None)
        with fast_send._write_timeout(connected, 2):
            assert connected.gettimeout() == 2
        assert connected.gettimeout() is None
    finally:
        connected.close()
        peer.close()


def test_a_peer_that_never_answers_is_aborted_after_the_dimse_timeout(temp_in):
    release = threading.Event()
    peer = PynetdicomSCP(lambda event: 0x0000 if release.wait(4 * WAIT) else 0xA700)
    try:
        counts = Counts()
        files = make_study(temp_in / "s", count=1).files
        outcome = in_thread(lambda: send(target_for(peer.port, peer.aet, timeout=2), files))
        release.set()
        assert peer.aborted.wait(WAIT)  # the sender aborted the association
    finally:
        release.set()
        peer.stop()
    assert isinstance(outcome, sender.TransientSendError) and "timed out" in str(outcome), outcome
    assert counts.moved() == (1, 0)
    assert_no_association_threads_left()


# -- answers that are not what was asked for --------------------------------------------------------
def _elements(pdu: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """(context ID, command elements but the group length) of a PDU holding one whole command."""
    _length, context_id, control = struct.unpack_from(">LBB", pdu, 6)
    assert control == 0x03
    data, position, elements = pdu[12:], 0, []
    while position < len(data):
        _group, element, length = struct.unpack_from("<HHL", data, position)
        if element:
            elements.append((element, data[position + 8:position + 8 + length]))
        position += 8 + length
    return context_id, elements


def _rebuilt(pdu: bytes, **changes: bytes | None) -> bytes:
    context_id, elements = _elements(pdu)
    return _pdu((context_id, 3, _command(_with(elements, **changes))))


def _split_before_the_command_field(pdu: bytes) -> bytes:
    """The command in two PDUs; the second alone looks like a whole plain C-STORE-RSP."""
    context_id, elements = _elements(pdu)
    command = _command(elements)
    cut = 12 + 8 + len(dict(elements)[0x0002])
    return _pdu((context_id, 1, command[:cut])) + _pdu((context_id, 3, command[cut:]))


def _message_id_plus_100(pdu: bytes) -> bytes:
    (message_id,) = struct.unpack("<H", dict(_elements(pdu)[1])[0x0120])
    return _rebuilt(pdu, e0120=US(message_id + 100))


MISANSWERS: dict[str, Callable[[bytes], bytes]] = {
    "another message id": _message_id_plus_100,
    "answered twice": lambda pdu: pdu + pdu,
    "a c-echo-rsp": lambda pdu: _rebuilt(pdu, e0100=US(0x8030), e0002=_ui("1.2.840.10008.1.1"), e1000=None),
    "no status": lambda pdu: _rebuilt(pdu, e0900=None),
}


@pytest.mark.parametrize("misanswer", sorted(MISANSWERS))
def test_an_answer_to_another_request_is_not_taken_for_stored(scp, temp_in, misanswer):
    """Only a valid C-STORE-RSP to this very request counts (DCMTK checks the message ID too):
    the file is not reported stored, the association is aborted, the send is tried again later."""
    proxy = Proxy(scp.port, rewrite=MISANSWERS[misanswer])
    files = make_study(temp_in / "s", count=2).files
    report = sender.SendReport()
    try:
        outcome = in_thread(lambda: sender.send_batch(target_for(proxy.port, scp.aet, timeout=5),
                                                      [sender.read_meta(path) for path in files], report))
    finally:
        proxy.stop()
    assert isinstance(outcome, sender.TransientSendError), outcome
    assert report.delivered == ([files[0]] if misanswer == "answered twice" else [])
    assert_no_association_threads_left()


def test_an_answer_naming_another_sop_instance_is_believed_by_its_message_id(scp, temp_in):
    """As DCMTK's storescu: the message ID ties a response to its request; a PACS echoing another
    SOP Instance UID is sloppy, and refusing its answers would send the file again for ever."""
    proxy = Proxy(scp.port, rewrite=lambda pdu: _rebuilt(pdu, e1000=_ui("1.2.3.999")))
    files = make_study(temp_in / "s", count=2).files
    try:
        report = send(target_for(proxy.port, scp.aet, timeout=5), files)
    finally:
        proxy.stop()
    assert report.ok and report.delivered == files


def test_an_answer_split_over_two_pdus_is_read_by_pynetdicom(scp, temp_in):
    proxy = Proxy(scp.port, rewrite=_split_before_the_command_field)
    files = make_study(temp_in / "s", count=3).files
    try:
        counts = Counts()
        report = send(target_for(proxy.port, scp.aet, timeout=5), files)
    finally:
        proxy.stop()
    assert report.ok and report.delivered == files and not report.warnings
    assert counts.moved() == (3, 0)


# -- 5. an observer of PDUs or DIMSE messages switches the fast path off ---------------------------
@pytest.mark.parametrize("event", [evt.EVT_PDU_SENT, evt.EVT_DIMSE_SENT, evt.EVT_DATA_SENT, evt.EVT_PDU_RECV,
                                   evt.EVT_DIMSE_RECV], ids=lambda event: event.name)
def test_a_handler_watching_pdus_or_messages_switches_the_fast_path_off(scp, temp_in, event):
    path = make_study(temp_in / "s", count=1).files[0]
    seen: list[evt.Event] = []
    assoc = associate(scp.port, scp.aet, evt_handlers=[(event, seen.append), NAGLE_OFF])
    try:
        counts = Counts()
        assert fast_send.usable_context(assoc, CT_IMAGE, ExplicitVRLittleEndian) is None
        assert assoc.send_c_store(path).Status == 0x0000
        assert counts.moved() == (0, 0) and seen
    finally:
        assoc.release()
    assert scp.datasets == [dataset_part(path.read_bytes())]


def test_a_handler_bound_after_the_first_c_store_sees_every_later_pdu(scp, temp_in):
    first, second = make_study(temp_in / "s", count=2).files
    assoc = associate(scp.port, scp.aet)
    received: list[evt.Event] = []
    try:
        counts = Counts()
        context_id = fast_send.usable_context(assoc, CT_IMAGE, ExplicitVRLittleEndian)
        assert context_id is not None
        meta = sender.read_meta(first)
        assert fast_send.send_c_store(assoc, context_id, first, meta.sop_class, meta.sop_instance, 1) == 0x0000
        assoc.bind(evt.EVT_PDU_RECV, received.append)
        assert fast_send.usable_context(assoc, CT_IMAGE, ExplicitVRLittleEndian) is None
        assert assoc.send_c_store(second, msg_id=2).Status == 0x0000
        assert counts.moved() == (1, 1)
    finally:
        assoc.release()
    assert any(type(event.pdu).__name__ == "P_DATA_TF" for event in received)  # the answer to the second


def test_while_pynetdicom_logs_each_message_its_own_path_sends_and_logs_them(scp, temp_in, caplog):
    """``dicombridge send -v`` shows pynetdicom's line per C-STORE request and response, as before."""
    caplog.set_level(logging.INFO, logger="pynetdicom")
    files = make_study(temp_in / "s", count=2).files
    counts = Counts()
    report = send(target_for(scp.port, scp.aet), files)
    assert report.ok and counts.moved() == (0, 0)
    lines = [record.getMessage() for record in caplog.records]
    assert sum(line.startswith("Sending Store Request") for line in lines) == 2
    assert lines.count("Received Store Response (Status: 0x0000 - Success)") == 2


def test_without_observers_the_fast_path_is_taken(scp, temp_in):
    assoc = associate(scp.port, scp.aet, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                      evt_handlers=[NAGLE_OFF])
    try:
        assert fast_send.usable_context(assoc, CT_IMAGE, ExplicitVRLittleEndian) == 1
        assert [cx.transfer_syntax[0] for cx in assoc.accepted_contexts][1] == DeflatedExplicitVRLittleEndian
        assert fast_send.usable_context(assoc, CT_IMAGE, DeflatedExplicitVRLittleEndian) is None  # odd lengths
        assert fast_send.usable_context(assoc, CT_IMAGE, ImplicitVRLittleEndian) is None  # not agreed
        assert fast_send.usable_context(assoc, "1.2.840.10008.5.1.4.1.1.4", ExplicitVRLittleEndian) is None
    finally:
        assoc.release()


# -- 6. TLS: the DUL thread alone reads and writes the TLS socket ---------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_the_fast_path_over_tls_to_storescp(tmp_path, pki, monkeypatch):
    users: list[threading.Thread] = []
    for name in ("send", "sendall", "recv", "recv_into", "read", "write"):
        original = getattr(ssl.SSLSocket, name)

        def recording(self, *args, _original=original, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            users.append(threading.current_thread())
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ssl.SSLSocket, name, recording)
    storescp = StoreSCP(tmp_path / "scp", extra_args=("+B", "+uf", "+tls", str(pki.server.key), str(pki.server.cert),
                                                      "+cf", str(pki.ca)))
    files = [*make_study(tmp_path / "s", count=2).files, big_ct(tmp_path / "big")]
    tls = client_context(True, str(pki.ca), str(pki.client.cert), str(pki.client.key))
    try:
        counts = Counts()
        report = send(target_for(storescp.port, storescp.aet, tls=tls), files)
    finally:
        storescp.stop()
    assert report.ok and report.delivered == files
    assert counts.moved() == (3, 3)
    assert digests(received_by_storescp(storescp)) == digests([dataset_part(p.read_bytes()) for p in files])
    assert users and all(isinstance(thread, FastSendDUL) for thread in users), {t.name for t in users}


def test_a_peer_that_stops_reading_a_file_pynetdicom_sends_is_a_transient_failure_not_a_hang(scp, temp_in):
    """The same stall for a deflated file (re-deflated and sent by pynetdicom's send_c_store)."""
    data = dcmread(big_ct(temp_in / "big", 2500))
    data.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated = temp_in / "deflated.dcm"
    data.save_as(deflated, enforce_file_format=True)  # noise: the deflated file is as large
    assert deflated.stat().st_size > 10 * 1024 * 1024
    proxy = Proxy(scp.port, cut_after=200_000, mode="stall")
    try:
        counts = Counts()
        outcome = in_thread(lambda: send(target_for(proxy.port, scp.aet, timeout=2), [deflated]))
        assert proxy.cut.is_set()
    finally:
        proxy.stop()
    assert isinstance(outcome, sender.TransientSendError), outcome
    assert counts.moved() == (0, 0)
    assert_no_association_threads_left()
