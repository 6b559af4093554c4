"""Sending (README "What happens to a ZIP in Outbox_Auto"): ZIPs reach a real PACS (Orthanc, DCMTK storescp)."""

from __future__ import annotations

import io
import os
import queue
import stat
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread

from bridge.engine import Engine
from bridge.events import LogBookEntryAdded, OutboxZipDone
from bridge.logbook import FAILED, SEND, SUCCESS, WARNING

from .conftest import free_port, write_config
from .pacs import Orthanc, StoreSCP
from .studies import CT, JPEG2000, JPEG_BASELINE, RLE, SR, make_study


@pytest.fixture
def orthanc(tmp_path):
    peer = Orthanc(tmp_path / "orthanc")
    yield peer
    peer.stop()


class SendingBridge:
    def __init__(self, settings) -> None:
        self.engine = Engine(settings, bind_address="127.0.0.1")
        self.events: queue.Queue = queue.Queue()
        self.engine.bus.subscribe(self.events.put)
        self.engine.start()

    @property
    def layout(self):
        return self.engine.layout

    def drop(self, zip_bytes: bytes, name: str = "study.zip") -> Path:
        """Write a ZIP the way an app should: elsewhere, then rename into the outbox."""
        temp = self.layout.root / f".{name}.tmp"
        temp.write_bytes(zip_bytes)
        target = self.layout.outbox_auto / name
        os.replace(temp, target)
        return target

    def wait_done(self, count: int = 1, timeout: float = 120) -> list[OutboxZipDone]:
        done: list[OutboxZipDone] = []
        while len(done) < count:
            event = self.events.get(timeout=timeout)
            if isinstance(event, OutboxZipDone):
                done.append(event)
        return done

    def wait_for_row(self, matches, timeout: float = 60):  # noqa: ANN001 - a LogEntry predicate
        """The next log-book row (from now on) that ``matches``; other events are dropped."""
        while True:
            event = self.events.get(timeout=timeout)
            if isinstance(event, LogBookEntryAdded) and event.entry is not None and matches(event.entry):
                return event.entry

    def stop(self) -> None:
        self.engine.stop(grace_seconds=5)


def sending_settings(bridge_settings, peer_port: int, called: str, **changes):
    return replace(bridge_settings, receive_enabled=False, send_enabled=True, send_host="127.0.0.1",
                   send_port=peer_port, send_ae_title_receiver=called, send_retries=1,
                   send_retry_delay_seconds=1, **changes)


def zip_of(files: list[Path], extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for number, path in enumerate(files):
            archive.write(path, f"series/{number:04d}.dcm")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def drop_and_wait(make_bridge, settings, peer, zip_bytes: bytes, name: str = "study.zip"):  # noqa: ANN001
    """Start a bridge with ``settings``, drop one ZIP, wait for its outcome; ``peer`` is stopped afterwards."""
    try:
        bridge = make_bridge(settings)
        bridge.drop(zip_bytes, name)
        (done,) = bridge.wait_done()
    finally:
        peer.stop()
    return bridge, done


def mixed_study(folder: Path) -> list[Path]:
    """CT + compressed (JPEG 2000, JPEG, RLE) + SR of one patient, as a messaging app sends them."""
    first = make_study(folder / "ct", count=4, sample=CT)
    files = list(first.files)
    for sample in (JPEG2000, JPEG_BASELINE, RLE, SR):
        files += make_study(folder / sample, count=2, sample=sample, study_uid=first.uid).files
    return files


@pytest.mark.parametrize("parallel", [1, 4])
def test_zip_reaches_orthanc_complete_and_is_deleted(bridge_settings, orthanc, make_bridge, tmp_path, parallel):
    files = mixed_study(tmp_path / "study")
    bridge = make_bridge(sending_settings(bridge_settings, orthanc.port, orthanc.aet,
                                          send_parallel_associations=parallel))
    dropped = bridge.drop(zip_of(files))
    (done,) = bridge.wait_done()
    assert done.status == SUCCESS
    assert not dropped.exists() and list(bridge.layout.outbox_failed.iterdir()) == []
    stored = orthanc.sop_uids()
    for path in files:
        sent = dcmread(path)
        assert sent.SOPInstanceUID in stored
        got = dcmread(io.BytesIO(orthanc.file(stored[sent.SOPInstanceUID])))
        assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        if "PixelData" in sent:
            assert got.PixelData == sent.PixelData
    row = bridge.engine.logbook.newest()[0]
    assert (row.action, row.status, row.image_count) == (SEND, SUCCESS, len(files))
    assert row.patient_name == "HOLTZMANN, Carsten" and "CT" in row.modality
    assert list(bridge.layout.outbox_work.iterdir()) == []


def test_zip_reaches_dcmtk_storescp(bridge_settings, make_bridge, tmp_path):
    scp = StoreSCP(tmp_path / "scp")
    try:
        files = mixed_study(tmp_path / "study")
        bridge = make_bridge(sending_settings(bridge_settings, scp.port, scp.aet))
        bridge.drop(zip_of(files, extra={"DICOMDIR": b"x" * 200, "readme.txt": b"hello"}))
        (done,) = bridge.wait_done()
        received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in scp.folder.iterdir()}
        assert received == {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
        assert done.status == WARNING  # the skipped entries are worth a look
        row = bridge.engine.logbook.newest()[0]
        assert "DICOMDIR" in row.detail and "readme.txt: not a DICOM file" in row.detail
    finally:
        scp.stop()


def _hostile_zips(tmp_path: Path, dicom: Path) -> dict[str, bytes]:
    def with_entry(name: str, data: bytes, attr: int | None = None) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.write(dicom, "ok.dcm")
            info = zipfile.ZipInfo(name)
            if attr is not None:
                info.create_system = 3
                info.external_attr = attr << 16
            archive.writestr(info, data)
        return buffer.getvalue()

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.dcm", b"\0" * (300 * 1024 * 1024))
    whole = zip_of([dicom])
    return {
        "dotdot.zip": with_entry("../../escaped.dcm", dicom.read_bytes()),
        "absolute.zip": with_entry("/tmp/escaped.dcm", dicom.read_bytes()),
        "symlink.zip": with_entry("link.dcm", b"/etc/passwd", attr=stat.S_IFLNK | 0o777),
        "bomb.zip": bomb.getvalue(),
        "truncated.zip": whole[: len(whole) // 2],
        "not-a-zip.zip": b"this is not a zip file at all" * 10,
        "empty.zip": zip_of([]),
    }


def test_hostile_zips_end_in_outbox_failed_and_nothing_escapes(bridge_settings, make_bridge, tmp_path, monkeypatch):
    import bridge.outbox as outbox

    monkeypatch.setattr(outbox, "INVALID_AFTER_SECONDS", 3.0)
    dicom = make_study(tmp_path / "study", count=1).files[0]
    hostile = _hostile_zips(tmp_path, dicom)
    before = {p for p in tmp_path.rglob("*")}
    bridge = make_bridge(sending_settings(bridge_settings, free_port(), "NOBODY"))
    for name, data in hostile.items():
        bridge.drop(data, name)
    done = {event.zip_name: event for event in bridge.wait_done(len(hostile))}
    assert set(done) == set(hostile) and all(e.status == FAILED for e in done.values())
    for name in hostile:
        reason = (bridge.layout.outbox_failed / f"{name}.reason.txt").read_text()
        assert reason.strip(), name
        assert (bridge.layout.outbox_failed / name).read_bytes() == hostile[name]
    reasons = {name: (bridge.layout.outbox_failed / f"{name}.reason.txt").read_text() for name in hostile}
    assert "'..'" in reasons["dotdot.zip"] and "absolute" in reasons["absolute.zip"]
    assert "symbolic link" in reasons["symlink.zip"] and "zip bomb" in reasons["bomb.zip"]
    assert "not a valid ZIP" in reasons["truncated.zip"] and "not a valid ZIP" in reasons["not-a-zip.zip"]
    assert "no DICOM files" in reasons["empty.zip"]
    store = bridge.layout.root
    escaped = {p for p in tmp_path.rglob("*") if p not in before and store not in p.parents and p != store}
    assert escaped == set()
    assert not Path("/tmp/escaped.dcm").exists()


def test_damaged_member_fails_the_zip_with_its_reason(bridge_settings, make_bridge, tmp_path):
    files = make_study(tmp_path / "study", count=2).files
    stored = io.BytesIO()
    with zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as archive:
        archive.write(files[0], "a.dcm")
        archive.write(files[1], "b.dcm")
    damaged = bytearray(stored.getvalue())
    damaged[len(damaged) * 3 // 4] ^= 0xFF  # inside b.dcm's pixel data: its CRC no longer matches
    scp = StoreSCP(tmp_path / "scp")
    bridge, done = drop_and_wait(make_bridge, sending_settings(bridge_settings, scp.port, scp.aet), scp,
                                 bytes(damaged), "damaged.zip")
    assert done.status == FAILED
    reason = (bridge.layout.outbox_failed / "damaged.zip.reason.txt").read_text()
    assert "b.dcm" in reason and "CRC" in reason
    assert (bridge.layout.outbox_failed / "damaged.zip").read_bytes() == bytes(damaged)


def test_zip_written_slowly_is_taken_only_when_complete(bridge_settings, orthanc, make_bridge, tmp_path):
    files = make_study(tmp_path / "study", count=3).files
    data = zip_of(files)
    bridge = make_bridge(sending_settings(bridge_settings, orthanc.port, orthanc.aet))
    target = bridge.layout.outbox_auto / "slow.zip"
    with open(target, "wb") as sink:  # an app writing in place, in chunks, over about 3 s
        for start in range(0, len(data), len(data) // 4 + 1):
            sink.write(data[start : start + len(data) // 4 + 1])
            sink.flush()
            time.sleep(0.8)
    (done,) = bridge.wait_done()
    assert done.status == SUCCESS and len(orthanc.sop_uids()) == 3


def test_zip_claimed_before_a_crash_is_sent_after_the_restart(bridge_settings, orthanc, make_bridge, tmp_path):
    files = make_study(tmp_path / "study", count=2).files
    settings = sending_settings(bridge_settings, orthanc.port, orthanc.aet)
    layout_work = settings.storage_folder / ".bridge" / "outbox"
    layout_work.mkdir(parents=True)
    (layout_work / "0123456789ab__claimed.zip").write_bytes(zip_of(files))
    bridge = make_bridge(settings)
    (done,) = bridge.wait_done()
    assert done.status == SUCCESS and len(orthanc.sop_uids()) == 2
    assert list(bridge.layout.outbox_work.iterdir()) == []


def echo_command(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "echo", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


def test_echo_command_against_orthanc_and_a_closed_port(orthanc, tmp_path):
    good = write_config(tmp_path / "good.toml", send__host="127.0.0.1", send__port=orthanc.port,
                        send__ae_title_receiver=orthanc.aet)
    result = echo_command(good)
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout and " ms)" in result.stdout
    closed = write_config(tmp_path / "closed.toml", send__host="127.0.0.1", send__port=free_port())
    result = echo_command(closed)
    assert result.returncode != 0
    assert "no connection to the PACS" in result.stderr


def test_more_than_128_contexts_are_split_over_associations(bridge_settings, orthanc, make_bridge, tmp_path):
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
    from pynetdicom import StoragePresentationContexts

    from .studies import template

    files = []
    study_uid = generate_uid()
    classes = [cx.abstract_syntax for cx in StoragePresentationContexts][:70]
    for number, (sop_class, syntax) in enumerate((c, t) for c in classes
                                                  for t in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)):
        dataset = template(CT)
        dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = sop_class
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.StudyInstanceUID = study_uid
        dataset.file_meta.TransferSyntaxUID = syntax
        path = tmp_path / f"{number:03d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        files.append(path)
    bridge = make_bridge(sending_settings(bridge_settings, orthanc.port, orthanc.aet))
    bridge.drop(zip_of(files))
    (done,) = bridge.wait_done()
    row = bridge.engine.logbook.newest()[0]
    assert done.status == SUCCESS, row.detail
    assert len(orthanc.sop_uids()) == 140


def _send_command(config: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "send", str(path), "--config", str(config)],
                          capture_output=True, text=True, timeout=300)


def test_send_command_delivers_a_folder_to_orthanc(orthanc, tmp_path):
    files = mixed_study(tmp_path / "study")
    (tmp_path / "study" / "notes.txt").write_text("not an image")
    config = write_config(tmp_path / "c.toml", general__storage_folder=str(tmp_path / "store"),
                          send__host="127.0.0.1", send__port=orthanc.port, send__ae_title_receiver=orthanc.aet)
    result = _send_command(config, tmp_path / "study")
    assert result.returncode == 0, result.stderr
    assert f"{len(files)}/{len(files)}" in result.stderr  # the progress bar reached the end
    assert f"sent {len(files)} of {len(files)}: 0 with warnings, 0 failed, 1 skipped" in result.stdout
    assert set(orthanc.sop_uids()) == {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    from bridge.logbook import LogBook

    row = LogBook(tmp_path / "store" / "Logs" / "logbook.sqlite3").newest()[0]
    assert row.action == SEND and row.image_count == len(files)


def test_send_command_with_a_zip_into_a_closed_port_fails_clearly(tmp_path):
    files = make_study(tmp_path / "study", count=2).files
    zip_path = tmp_path / "study.zip"
    zip_path.write_bytes(zip_of(files))
    config = write_config(tmp_path / "c.toml", general__storage_folder=str(tmp_path / "store"),
                          send__host="127.0.0.1", send__port=free_port(), send__retries=0)
    result = _send_command(config, zip_path)
    assert result.returncode != 0
    assert "no connection to the PACS" in result.stderr and "gave up after 1 tries" in result.stderr
