"""Receiving you can trust (issue 11, items 1, 2, 5, 9, 10), against real and misbehaving peers.

- nothing incomplete is acknowledged: pydicom's truncated files and cut copies of whole ones;
- an image without a Study Instance UID is refused saying exactly that;
- a study stays open while its images are still arriving over a slow link;
- two different images with one SOP Instance UID are both kept under unique names;
- a sender cut off mid-image leaves no partial file behind.

DCMTK's storescu refuses to send a broken file at all ("Bad DICOM file"), so broken files go
out through pynetdicom with ``STORE_SEND_CHUNKED_DATASET``, which streams a file's bytes as
they are. Every hostile case is followed by a normal study from DCMTK that must still arrive.
"""

from __future__ import annotations

import io
import socket
import struct
import subprocess
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from bridge.aggregator import Aggregator
from bridge.layout import INBOX_MANUAL
from bridge.logbook import FAILED, RECEIVE, WARNING

from .conftest import RunningBridge, free_port
from .fakes import FakeClock, received_file
from .peers import PEER_ENV, dcmtk, run_storescu, storescu_args
from .slow_link import SlowLink
from .studies import make_large_study, make_study

CALLED = "CRYPE_DCM"
TRUNCATED = {
    "MR_truncated.dcm": "element (7FE0,0010) declares 8192 bytes, 8130 left",
    "rtplan_truncated.dcm": "element (300A,012C) declares 50 bytes, 29 left",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "pixel data (7FE0,0010) fragments not closed",
}


# -- peers that misbehave -------------------------------------------------------------------
@contextmanager
def _streaming_files_raw() -> Iterator[None]:
    """pynetdicom sends a file's dataset bytes as they are, broken or not (no decoding)."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before


def send_raw(port: int, files: list[Path], called: str = CALLED) -> list[int | None]:
    """Send files byte for byte over one pynetdicom association; each status (None: no answer)."""
    metas = [read_file_meta_info(path) for path in files]
    ae = AE(ae_title="RAWSCU")
    for pair in {(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas}:
        ae.add_requested_context(*pair)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    statuses: list[int | None] = []
    with _streaming_files_raw():
        for path in files:
            if not assoc.is_established:
                statuses.append(None)
                continue
            answer = assoc.send_c_store(path)
            statuses.append(int(answer.Status) if "Status" in answer else None)
    if assoc.is_established:
        assoc.release()
    return statuses


def cut_copy(source: Path, target: Path, keep_bytes: int) -> Path:
    target.write_bytes(source.read_bytes()[:keep_bytes])
    return target


def normal_study_still_arrives(bridge: RunningBridge, folder: Path) -> None:
    study = make_study(folder, count=2)
    run_storescu(bridge.port, [str(f) for f in study.files])
    (routed,) = bridge.wait_routed(1)
    zips = [z for z in bridge.zips(INBOX_MANUAL) if study.uid in z.name]
    assert len(zips) == 1 and len(zipfile.ZipFile(zips[0]).namelist()) == 2, routed


def failed_rows(bridge: RunningBridge) -> list[str]:
    return [r.detail for r in bridge.engine.logbook.newest() if (r.action, r.status) == (RECEIVE, FAILED)]


# -- item 1: nothing incomplete is acknowledged ---------------------------------------------------
@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_pydicoms_truncated_files_are_refused_kept_and_explained(running_bridge, tmp_path, name):
    path = Path(get_testdata_file(name))
    sop = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
    assert send_raw(running_bridge.port, [path]) == [0xC000]
    folder = running_bridge.storage / "Inbox_Failed" / f"unreadable_{sop}"
    reason = (folder / "reason.txt").read_text()
    assert TRUNCATED[name] in reason and "incomplete" in reason and "0xC000" in reason
    assert (folder / "received.dcm").exists()
    (row,) = failed_rows(running_bridge)
    assert TRUNCATED[name] in row
    assert list(running_bridge.engine.layout.spool.iterdir()) == []
    normal_study_still_arrives(running_bridge, tmp_path / "after")


def _whole_ct(tmp_path: Path) -> Path:
    return make_study(tmp_path / "whole", count=1).files[0]


@pytest.mark.parametrize("where", ["element header", "value", "pixel data"])
def test_a_whole_image_cut_anywhere_is_refused(running_bridge, tmp_path, where):
    whole = _whole_ct(tmp_path)
    data = whole.read_bytes()
    pixel_header = data.rindex(b"\xe0\x7f\x10\x00OW")
    keep = {"element header": pixel_header + 5, "value": data.index(b"HOLTZMANN") + 4,
            "pixel data": len(data) - 1000}[where]
    broken = cut_copy(whole, tmp_path / "broken.dcm", keep)
    assert send_raw(running_bridge.port, [broken]) == [0xC000]
    (row,) = failed_rows(running_bridge)
    expected = {"element header": "cut inside the header of an element", "value": "(0010,0010) declares",
                "pixel data": "(7FE0,0010) declares"}[where]
    assert expected in row and "incomplete" in row
    normal_study_still_arrives(running_bridge, tmp_path / "after")


@pytest.mark.peers
def test_dcmtk_storescp_refuses_the_same_bytes(tmp_path):
    """The reference: DCMTK's own receiver gives no success for pydicom's truncated file."""
    port = free_port()
    scp = subprocess.Popen([dcmtk("storescp"), "-od", str(tmp_path), "-aet", CALLED, str(port)], env=PEER_ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline, "storescp did not listen"
            time.sleep(0.05)
        statuses = send_raw(port, [Path(get_testdata_file("MR_truncated.dcm"))])
        assert statuses[0] != 0x0000  # storescp aborts the association: no success
    finally:
        scp.terminate()
        scp.wait(timeout=30)


# -- item 2: no Study Instance UID ----------------------------------------------------------------
def test_image_without_study_uid_is_refused_saying_exactly_that(running_bridge, tmp_path):
    study = make_study(tmp_path / "send", count=1, customize=lambda ds: delattr(ds, "StudyInstanceUID"))
    result = run_storescu(running_bridge.port, [str(study.files[0])], check=False, verbose=True)
    assert "DataSetDoesNotMatchSOPClass" in result.stdout + result.stderr  # DCMTK's name for 0xA900
    (row,) = failed_rows(running_bridge)
    assert "has no Study Instance UID (0020,000D)" in row and "not readable" not in row
    sop = str(dcmread(study.files[0]).SOPInstanceUID)
    reason = (running_bridge.storage / "Inbox_Failed" / f"no_study_uid_{sop}" / "reason.txt").read_text()
    assert "no Study Instance UID" in reason and "0xA900" in reason
    normal_study_still_arrives(running_bridge, tmp_path / "after")


# -- item 9: every acknowledged image has a member of its own ---------------------------------------
def test_two_different_images_with_one_sop_uid_are_both_zipped(running_bridge, tmp_path):
    """Same (0008,0018), different Affected SOP Instance UIDs (from the file meta) and content."""
    first = make_study(tmp_path / "a", count=1).files[0]
    dataset = dcmread(first)
    dataset.InstanceNumber = 2
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID + ".2"
    second = tmp_path / "second.dcm"
    dataset.save_as(second, enforce_file_format=True)
    assert send_raw(running_bridge.port, [first, second, first]) == [0, 0, 0]  # the last: an identical resend
    running_bridge.wait_routed(1)
    (zip_path,) = running_bridge.zips(INBOX_MANUAL)
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        numbers = sorted(int(dcmread(io.BytesIO(archive.read(n))).InstanceNumber) for n in names)
    sop = str(dataset.SOPInstanceUID)
    assert sorted(n.split("/")[-1] for n in names) == [f"{sop}-2.dcm", f"{sop}.dcm"]
    assert numbers == [1, 2]
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(zip_path).extractall(unpacked)
    assert len(list(unpacked.rglob("*.dcm"))) == 2
    warnings = [r.detail for r in running_bridge.engine.logbook.newest() if r.status == WARNING]
    assert any("same SOP Instance UID" in w and sop in w for w in warnings), warnings


def test_same_sop_key_different_bytes_get_unique_names_also_after_a_restart(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    incoming = tmp_path / "in"
    incoming.mkdir()

    def arriving(content: bytes) -> Path:
        path = incoming / f"tmp{len(list(spool.rglob('*')))}-{content.hex()}.dcm"
        path.write_bytes(content)
        return path

    aggregator = Aggregator(spool, lambda: 60, clock=FakeClock())
    assert aggregator.store("1.2", "1.2.3", arriving(b"one")).sop_key == "1.2.3"
    second = aggregator.store("1.2", "1.2.3", arriving(b"two"))
    assert (second.sop_key, second.renamed) == ("1.2.3-2", True)
    again = aggregator.store("1.2", "1.2.3", arriving(b"two"))  # an identical resend: stored once
    assert again.sop_key == "1.2.3-2" and again.study.image_count == 2
    restarted = Aggregator(spool, lambda: 60, clock=FakeClock())
    restarted.recover()
    third = restarted.store("1.2", "1.2.3", arriving(b"three"))
    assert third.sop_key == "1.2.3-3" and third.study.image_count == 3
    assert sorted(p.read_bytes() for p in third.study.folder.iterdir()) == [b"one", b"three", b"two"]


def test_member_names_never_repeat_even_for_files_placed_by_hand(tmp_path):
    from bridge.instance import InstanceHeader
    from bridge.zipper import member_names

    def header(name: str) -> InstanceHeader:
        return InstanceHeader(path=tmp_path / name, sop_uid="1.2.3", series_uid="1.2", study_uid="1",
                              modality="CT", transfer_syntax="1.2.840.10008.1.2.1")

    names = member_names([header("000001-1.2.3.dcm"), header("000002-1.2.3-2.dcm"), header("000003-1.2.3.dcm")])
    assert names == ["1.2/1.2.3.dcm", "1.2/1.2.3-2.dcm", "1.2/1.2.3-3.dcm"]


# -- item 5: a study stays open while its images are arriving --------------------------------------
def test_bytes_on_an_association_that_fed_the_study_keep_it_open(tmp_path):
    clock = FakeClock()
    spool = tmp_path / "spool"
    spool.mkdir()
    aggregator = Aggregator(spool, lambda: 2, clock=clock)
    aggregator.store("1.2.3", "1.2.3.1", received_file(tmp_path / "in", "a"), association=7)
    for _ in range(10):  # a large image trickles in for 10 s: never quiet
        clock.now += 1.5
        aggregator.association_active(7)
        assert aggregator.claim_due() == []
    aggregator.store("1.2.3", "1.2.3.2", received_file(tmp_path / "in", "b"), association=7)
    clock.now += 1.9
    assert aggregator.claim_due() == []
    clock.now += 0.2
    (study,) = aggregator.claim_due()
    assert study.image_count == 2


def test_an_ended_association_holds_nothing_and_others_studies_are_not_held(tmp_path):
    clock = FakeClock()
    spool = tmp_path / "spool"
    spool.mkdir()
    aggregator = Aggregator(spool, lambda: 2, clock=clock)
    aggregator.store("1.2.3", "1.2.3.1", received_file(tmp_path / "in", "a"), association=1)
    aggregator.store("4.5.6", "4.5.6.1", received_file(tmp_path / "in", "b"), association=2)
    clock.now += 1.5
    aggregator.association_active(1)  # still busy: only its own study stays open
    clock.now += 1.0
    assert [s.key for s in aggregator.claim_due()] == ["4.5.6"]
    aggregator.association_ended(1)  # aborted mid-image: the study's last image counts again
    assert [s.key for s in aggregator.claim_due()] == ["1.2.3"]


def test_an_association_known_to_carry_a_studys_image_keeps_it_open(tmp_path):
    clock = FakeClock()
    spool = tmp_path / "spool"
    spool.mkdir()
    aggregator = Aggregator(spool, lambda: 2, clock=clock)
    aggregator.store("1.2.3", "1.2.3.1", received_file(tmp_path / "in", "a"), association=1)
    aggregator.association_ended(1)
    clock.now += 1.5
    aggregator.association_active(9, study_uid="1.2.3")  # a second association brings the next image
    clock.now += 1.5
    assert aggregator.claim_due() == []
    aggregator.association_active(9)
    clock.now += 2.5
    assert len(aggregator.claim_due()) == 1


@pytest.mark.peers
def test_three_large_images_over_a_slow_link_make_one_zip(bridge_settings, tmp_path):
    """3 × 2 MB at 700 kB/s (~9 s) with a 2 s timeout: before, three ZIPs of one image each."""
    from dataclasses import replace

    from .conftest import start_running_bridge

    bridge = start_running_bridge(replace(bridge_settings, receive_timeout_seconds=2))
    try:
        study = make_large_study(tmp_path / "send", count=3, side=1024)
        with SlowLink(bridge.port, bytes_per_second=700_000) as link:
            run_storescu(link.port, [str(f) for f in study.files], timeout=120)
        bridge.wait_routed(1)
        (zip_path,) = bridge.zips(INBOX_MANUAL)
        assert len(zipfile.ZipFile(zip_path).namelist()) == 3
        assert bridge.engine.logbook.newest()[0].image_count == 3
        assert bridge.engine.aggregator._last_bytes == {}  # the finished association holds nothing
    finally:
        bridge.engine.stop(grace_seconds=5)


# -- item 10: partial files never pile up ---------------------------------------------------------
def _incoming_empties(bridge: RunningBridge, timeout: float = 30) -> None:
    incoming = bridge.engine.layout.incoming
    deadline = time.monotonic() + timeout
    while any(incoming.iterdir()):
        assert time.monotonic() < deadline, list(incoming.iterdir())
        time.sleep(0.05)


def _wait_for_partial(bridge: RunningBridge, timeout: float = 60) -> None:
    incoming = bridge.engine.layout.incoming
    deadline = time.monotonic() + timeout
    while not any(p.stat().st_size > 0 for p in incoming.iterdir()):
        assert time.monotonic() < deadline, "no partial file ever appeared"
        time.sleep(0.02)


@pytest.mark.peers
def test_storescu_killed_mid_image_leaves_no_partial_file(running_bridge, tmp_path, capfd):
    study = make_large_study(tmp_path / "send", count=1, side=1024)
    with SlowLink(running_bridge.port, bytes_per_second=300_000) as link:
        sender = subprocess.Popen(storescu_args(CALLED, link.port, [str(study.files[0])], "-R"), env=PEER_ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_partial(running_bridge)
        finally:
            sender.kill()
            sender.wait(timeout=30)
    _incoming_empties(running_bridge)
    normal_study_still_arrives(running_bridge, tmp_path / "after")
    assert "Traceback" not in capfd.readouterr().err


def _associate_request(called: str, calling: str, sop_class: str, syntax: str) -> bytes:
    """A minimal A-ASSOCIATE-RQ PDU (PS3.8 9.3.2), built by hand: one presentation context."""
    def item(kind: int, body: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(body)) + body

    context = bytes([1, 0, 0, 0]) + item(0x30, sop_class.encode()) + item(0x40, syntax.encode())
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16) + bytes(32)
            + item(0x10, b"1.2.840.10008.3.1.1.1") + item(0x20, context)
            + item(0x50, item(0x51, struct.pack(">L", 16384))))
    return struct.pack(">BBL", 1, 0, len(body)) + body


def _store_pdus(path: Path) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE of ``path`` on presentation context 1, encoded by pynetdicom."""
    meta = read_file_meta_info(path)
    raw = path.read_bytes()
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = meta.MediaStorageSOPClassUID
    primitive.AffectedSOPInstanceUID = meta.MediaStorageSOPInstanceUID
    primitive.Priority = 2
    primitive.DataSet = io.BytesIO(raw[132 + 12 + meta.FileMetaInformationGroupLength:])
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    pdus = []
    for p_data in message.encode_msg(1, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(p_data)
        pdus.append(pdu.encode())
    return pdus


def test_a_raw_client_sending_half_a_p_data_and_closing_leaves_nothing(running_bridge, tmp_path, capfd):
    whole = _whole_ct(tmp_path)
    meta = read_file_meta_info(whole)
    pdus = _store_pdus(whole)
    assert len(pdus) > 3
    with socket.create_connection(("127.0.0.1", running_bridge.port), timeout=30) as sock:
        sock.sendall(_associate_request(CALLED, "RAWSOCK", str(meta.MediaStorageSOPClassUID),
                                        str(meta.TransferSyntaxUID)))
        assert sock.recv(1) == b"\x02"  # A-ASSOCIATE-AC
        for pdu in pdus[:2]:  # the command and the first piece of the dataset
            sock.sendall(pdu)
        sock.sendall(pdus[2][: len(pdus[2]) // 2])  # half a P-DATA, then the line drops
        _wait_for_partial(running_bridge)
    _incoming_empties(running_bridge)
    warnings = [r.detail for r in running_bridge.engine.logbook.newest() if r.status == WARNING]
    assert any("partial file was deleted" in w for w in warnings), warnings
    normal_study_still_arrives(running_bridge, tmp_path / "after")
    assert "Traceback" not in capfd.readouterr().err


