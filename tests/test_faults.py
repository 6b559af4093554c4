"""Fault injection on the real service: kill -9 while receiving, zipping and sending.

Every image a PACS was told "stored" must end up in exactly one ZIP (or exactly once in the
PACS), and nothing partial may ever be visible in an inbox.
"""

from __future__ import annotations

import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread

from .conftest import free_port, write_config
from .pacs import Orthanc
from .peers import PEER_ENV, send_watching_acks, storescu_args
from .studies import make_large_study, make_study
from .test_headless import HeadlessBridge, _config

ID = "1234567890123456"


def _sop(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _zip_sops(zip_path: Path) -> list[str]:
    from io import BytesIO

    with zipfile.ZipFile(zip_path) as archive:
        assert archive.testzip() is None
        return [str(dcmread(BytesIO(archive.read(n)), stop_before_pixels=True).SOPInstanceUID)
                for n in archive.namelist()]


def _no_partial_files(store: Path) -> None:
    for inbox in ("Inbox_Auto", "Inbox_Manual", "Inbox_Failed", "Outbox_Failed"):
        for path in (store / inbox).rglob("*"):
            assert not path.name.endswith((".part", ".tmp")), path


def _wait_until(condition, timeout: float = 60, step: float = 0.01) -> None:
    """Poll another process's files (no event crosses the process boundary); bounded."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(step)


def test_kill_during_reception_loses_no_acknowledged_image(tmp_path):
    port = free_port()
    study = make_study(tmp_path / "send", count=150, crid_value=f"CRID#{ID}")
    bridge = HeadlessBridge(_config(tmp_path, port, receive__timeout_seconds=3600))
    bridge.wait_for_line("running headless")
    acknowledged = send_watching_acks(port, [str(f) for f in study.files], after=40,
                                      action=lambda _sender: bridge.process.send_signal(signal.SIGKILL))
    bridge.process.wait(timeout=30)
    assert 40 <= len(acknowledged) < 150

    restarted = HeadlessBridge(_config(tmp_path, port, receive__timeout_seconds=1))
    try:
        restarted.wait_for_line("Receive Success")
    finally:
        assert restarted.stop() == 0
    store = tmp_path / "store"
    (zip_path,) = (store / "Inbox_Auto").glob("*.zip")
    in_zip = _zip_sops(zip_path)
    assert len(in_zip) == len(set(in_zip))  # stored once
    assert {_sop(Path(p)) for p in acknowledged} <= set(in_zip)
    assert list((store / ".bridge" / "incoming").iterdir()) == []
    _no_partial_files(store)


def test_kill_during_zipping_makes_exactly_one_complete_zip(tmp_path):
    port = free_port()
    study = make_large_study(tmp_path / "send", count=120, crid_value=f"CRID#{ID}")
    bridge = HeadlessBridge(_config(tmp_path, port, receive__timeout_seconds=1))
    bridge.wait_for_line("running headless")
    subprocess.run(storescu_args("CRYPE_DCM", port, [str(f) for f in study.files], "-R"), env=PEER_ENV,
                   check=True, capture_output=True, timeout=300)
    staging = tmp_path / "store" / ".bridge" / "staging"
    _wait_until(lambda: any(staging.iterdir()))  # a ZIP is being written right now
    bridge.process.send_signal(signal.SIGKILL)
    bridge.process.wait(timeout=30)
    store = tmp_path / "store"
    assert list((store / "Inbox_Auto").glob("*.zip")) == []  # nothing half-written became visible

    restarted = HeadlessBridge(_config(tmp_path, port, receive__timeout_seconds=1))
    try:
        restarted.wait_for_line("Receive Success")
    finally:
        assert restarted.stop() == 0
    (zip_path,) = (store / "Inbox_Auto").glob("*.zip")
    assert sorted(_zip_sops(zip_path)) == sorted(_sop(f) for f in study.files)
    assert list(staging.iterdir()) == [] and list((store / ".bridge" / "spool").iterdir()) == []
    _no_partial_files(store)


def test_kill_during_sending_sends_again_after_restart(tmp_path):
    orthanc = Orthanc(tmp_path / "orthanc")
    try:
        study = make_large_study(tmp_path / "send", count=150)
        zip_path = tmp_path / "study.zip"
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in study.files:
                archive.write(path, path.name)
        extra = dict(receive__enabled=False, send__enabled=True, send__host="127.0.0.1", send__port=orthanc.port,
                     send__ae_title_receiver=orthanc.aet)
        bridge = HeadlessBridge(_config(tmp_path, free_port(), **extra))
        bridge.wait_for_line("running headless")
        store = tmp_path / "store"
        (store / "drop.zip").write_bytes(zip_path.read_bytes())
        (store / "drop.zip").rename(store / "Outbox_Auto" / "study.zip")
        _wait_until(lambda: 0 < orthanc.get("/statistics")["CountInstances"] < 150, step=0.05)
        bridge.process.send_signal(signal.SIGKILL)
        bridge.process.wait(timeout=30)
        assert list((store / ".bridge" / "outbox").glob("*/*.zip"))  # still claimed, not lost

        restarted = HeadlessBridge(_config(tmp_path, free_port(), **extra))
        try:
            restarted.wait_for_line("Send Success", timeout=300)
        finally:
            assert restarted.stop() == 0
        assert set(orthanc.sop_uids()) == {_sop(f) for f in study.files}
        assert list((store / "Outbox_Auto").iterdir()) == [] and list((store / "Outbox_Failed").iterdir()) == []
        assert list((store / ".bridge" / "outbox").iterdir()) == []
    finally:
        orthanc.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB file system of our own (tmpfs) where the machine lets us mount one."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip()}); "
                    "the free-space floor test covers refusals")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_disk_full_refuses_with_a700_keeps_everything_and_recovers(tmp_path, small_disk):
    port = free_port()
    store = small_disk / "store"
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(store), general__min_free_mb=2,
                          receive__port=port, receive__timeout_seconds=4,
                          receive__crid_tag_group="0010", receive__crid_tag_element="2201")
    study = make_large_study(tmp_path / "send", count=12, crid_value=f"CRID#{ID}")
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 9 * 1024 * 1024)  # other data on the disk: about 7 MB stay free
    bridge = HeadlessBridge(config)
    try:
        bridge.wait_for_line("running headless")
        sender = subprocess.run(storescu_args("CRYPE_DCM", port, [str(f) for f in study.files], "-R", "-v"),
                                env=PEER_ENV, capture_output=True, text=True, timeout=120)
        output = sender.stdout + sender.stderr
        acknowledged = output.count("Received Store Response (Success)")
        assert "Refused: OutOfResources" in output and 5 <= acknowledged < 12
        # the study's ZIP (noise does not compress) needs more than the 2 MB left: zipping waits
        bridge.wait_for_line("disk full")
        assert list((store / "Inbox_Auto").iterdir()) == [] and list((store / "Inbox_Failed").iterdir()) == []
        assert len(list((store / ".bridge" / "spool").rglob("*.dcm"))) == acknowledged  # kept, not failed
        filler.unlink()  # space returns: the zipper's next try goes through
        line = bridge.wait_for_line("Receive Success")
        assert f"{acknowledged} images zipped" in line
        (zip_path,) = (store / "Inbox_Auto").glob("*.zip")
        assert len(_zip_sops(zip_path)) == acknowledged
        rest = subprocess.run(storescu_args("CRYPE_DCM", port, [str(f) for f in study.files[acknowledged:]], "-R"),
                              env=PEER_ENV, capture_output=True, text=True, timeout=120)
        assert rest.returncode == 0  # reception resumed
    finally:
        assert bridge.stop() == 0


def test_malformed_dataset_is_refused_kept_visible_and_the_service_keeps_running(tmp_path):
    """DCMTK will not send a broken dataset, so pynetdicom streams a crafted file as raw bytes."""
    from pynetdicom import AE

    from .studies import unreadable_dataset

    good = make_study(tmp_path / "good", count=1).files[0]
    crafted, meta = unreadable_dataset(tmp_path / "broken.dcm")
    port = free_port()
    bridge = HeadlessBridge(_config(tmp_path, port))
    try:
        bridge.wait_for_line("running headless")
        ae = AE(ae_title="CRAFTER")
        ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title="CRYPE_DCM")
        assert assoc.is_established
        status = assoc.send_c_store(crafted)
        assoc.release()
        assert status.Status == 0xC000
        line = bridge.wait_for_line("Receive Failed")
        assert "not readable DICOM" in line
        kept = tmp_path / "store" / "Inbox_Failed" / f"unreadable_{meta.MediaStorageSOPInstanceUID}"
        assert (kept / "received.dcm").exists() and "0xC000" in (kept / "reason.txt").read_text()
        subprocess.run(storescu_args("CRYPE_DCM", port, [str(good)], "-R"), env=PEER_ENV, check=True,
                       capture_output=True, timeout=60)
        assert "1 images zipped" in bridge.wait_for_line("Receive Success")
    finally:
        assert bridge.stop() == 0


def test_sender_dying_mid_study_keeps_what_was_acknowledged(tmp_path):
    port = free_port()
    study = make_large_study(tmp_path / "send", count=60)
    bridge = HeadlessBridge(_config(tmp_path, port, receive__timeout_seconds=1))
    try:
        bridge.wait_for_line("running headless")
        # the PACS dies mid-association: the bridge sees an abort
        acknowledged = len(send_watching_acks(port, [str(f) for f in study.files], after=10,
                                              action=lambda sender: sender.kill()))
        line = bridge.wait_for_line("Receive Success")
        zipped = int(line.split(" images zipped")[0].rsplit(" ", 1)[-1])
        assert acknowledged <= zipped <= acknowledged + 1  # the one in flight may have been complete
        _wait_until(lambda: not any((tmp_path / "store" / ".bridge" / "incoming").iterdir()))
        from .peers import dcmtk

        alive = subprocess.run([dcmtk("echoscu"), "-aec", "CRYPE_DCM", "127.0.0.1", str(port)], env=PEER_ENV,
                               capture_output=True, timeout=30)
        assert alive.returncode == 0
    finally:
        assert bridge.stop() == 0


def test_empty_study_folder_left_by_a_crash_is_removed_quietly(tmp_path):
    store = tmp_path / "store"
    empty = store / ".bridge" / "spool" / "1.2.3~1"
    empty.mkdir(parents=True)
    bridge = HeadlessBridge(_config(tmp_path, free_port()))
    try:
        bridge.wait_for_line("running headless")
        assert not empty.exists()
        assert list((store / "Inbox_Failed").iterdir()) == [] and list((store / "Inbox_Manual").iterdir()) == []
    finally:
        assert bridge.stop() == 0
