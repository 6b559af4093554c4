"""The outbox never stops silently (issue 13): each input that killed or blocked it, then a good
ZIP behind it that must still be sent; a worker that dies anyway is logged and restarted."""

from __future__ import annotations

import errno
import io
import os
import queue
import shutil
import threading
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

import bridge.outbox as outbox_module
from bridge.config_watch import watch_config
from bridge.janitor import sweep
from bridge.logbook import FAILED, SERVICE, SUCCESS, WARNING
from bridge.safe_unzip import HEAD_BYTES, ZipUnpacker
from bridge.settings import load_settings, save_values
from bridge.supervisor import Supervisor

from .conftest import write_config
from .pacs import Orthanc, StoreSCP
from .studies import make_study
from .test_send import sending_settings, zip_of


@pytest.fixture
def storescp(tmp_path):
    scp = StoreSCP(tmp_path / "scp")
    yield scp
    scp.stop()


def good_zip(tmp_path: Path, name: str = "good") -> bytes:
    return zip_of(make_study(tmp_path / name, count=2).files)


def assert_next_good_zip_is_sent(bridge, tmp_path: Path, name: str = "next.zip") -> None:
    bridge.drop(good_zip(tmp_path, name), name)
    (done,) = bridge.wait_done()
    assert (done.zip_name, done.status) == (name, SUCCESS), bridge.engine.logbook.newest()[0].detail


def drop_as(bridge, data: bytes, name: str, tmp_path: Path) -> None:
    """Drop under a name too long for the ``.<name>.tmp`` that SendingBridge.drop writes first."""
    temp = tmp_path / "dropping.tmp"
    temp.write_bytes(data)
    os.replace(temp, bridge.layout.outbox_auto / name)


def _member_data_start(data: bytes) -> tuple[int, int]:
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    return info.header_offset + 30 + len(info.filename.encode()) + len(info.extra), info.compress_size


def _reads(data: bytes, size: int) -> Exception | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive, archive.open(archive.infolist()[0]) as member:
            member.read(size)
    except Exception as err:  # noqa: BLE001 - which error is the point
        return err
    return None


def deflated_member(tmp_path: Path) -> bytes:
    import random

    from bridge.runtime import configure_process

    configure_process()  # ISA-L as zipfile's zlib, as in the running bridge

    pixels = bytes(random.Random(13).choices(b"abcdefgh", k=512 * 1024))  # deflates about 2.5:1, in many blocks
    dicom = make_study(tmp_path / "deflate", count=1, customize=lambda d: setattr(d, "PixelData", pixels))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(dicom.files[0], "series/damaged.dcm")
    return buffer.getvalue()


def damage(data: bytes, late: bool) -> bytes:
    """The member's deflate stream broken in its first 16 KB, or after them (ISA-L, not zlib.error)."""
    start, size = _member_data_start(data)
    offsets = [0] if not late else range(size // 2, size - 32, 7)
    for offset in offsets:
        damaged = bytearray(data)
        damaged[start + offset : start + offset + 16] = b"\xff" * 16
        if late and _reads(bytes(damaged), HEAD_BYTES) is not None:
            continue
        err = _reads(bytes(damaged), 1 << 30)
        if err is not None and not isinstance(err, zipfile.BadZipFile):  # a decompressor error, not a CRC one
            return bytes(damaged)
    raise AssertionError("no damage found that the decompressor reports")


@pytest.mark.parametrize("late", [False, True], ids=["early", "late"])
def test_damaged_deflate_stream_fails_that_zip_only(bridge_settings, make_bridge, storescp, tmp_path, late, capfd):
    bridge = make_bridge(sending_settings(bridge_settings, storescp.port, storescp.aet))
    bridge.drop(damage(deflated_member(tmp_path), late), "damaged.zip")
    (done,) = bridge.wait_done()
    assert done.status == FAILED
    reason = (bridge.layout.outbox_failed / "damaged.zip.reason.txt").read_text()
    assert "series/damaged.dcm" in reason and ("damaged" in reason or "cannot be read" in reason)
    assert_next_good_zip_is_sent(bridge, tmp_path)
    assert "Traceback" not in capfd.readouterr().err


def test_pacs_closing_an_idle_association_while_unpacking(bridge_settings, make_bridge, tmp_path, monkeypatch):
    orthanc = Orthanc(tmp_path / "orthanc", DicomScpTimeout=1)
    chunks = ZipUnpacker._member_chunks

    def slow_second_member(self, info, total):  # noqa: ANN001 - a slow disk, for the test
        if info.filename.endswith("0001.dcm"):
            time.sleep(2.5)  # not synchronisation: the idle time Orthanc must see (DicomScpTimeout 1 s)
        return chunks(self, info, total)

    monkeypatch.setattr(ZipUnpacker, "_member_chunks", slow_second_member)
    try:
        bridge = make_bridge(sending_settings(bridge_settings, orthanc.port, orthanc.aet))
        files = make_study(tmp_path / "study", count=3).files
        bridge.drop(zip_of(files))
        (done,) = bridge.wait_done()
        assert done.status == SUCCESS, bridge.engine.logbook.newest()[0].detail
        assert len(orthanc.sop_uids()) == 3
    finally:
        orthanc.stop()


def test_disk_full_while_unpacking_waits_and_sends_when_space_is_back(bridge_settings, make_bridge, storescp,
                                                                     tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_module, "DISK_FULL_RETRY_SECONDS", 0.5)
    full = threading.Event()
    full.set()
    copy = ZipUnpacker._copy_member

    def no_space(self, info, target, total):  # noqa: ANN001
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        return copy(self, info, target, total)

    monkeypatch.setattr(ZipUnpacker, "_copy_member", no_space)
    bridge = make_bridge(sending_settings(bridge_settings, storescp.port, storescp.aet))
    bridge.drop(good_zip(tmp_path, "a"), "a.zip")
    row = bridge.wait_for_row(lambda r: "disk is full" in r.detail)
    assert row.status == WARNING and row.needs_attention
    bridge.drop(good_zip(tmp_path, "b"), "b.zip")
    assert list(bridge.layout.outbox_failed.iterdir()) == []
    full.clear()  # space freed
    done = bridge.wait_done(2)
    assert [(d.zip_name, d.status) for d in done] == [("a.zip", SUCCESS), ("b.zip", SUCCESS)]


def test_disk_full_when_writing_the_reason_file(bridge_settings, make_bridge, storescp, tmp_path, monkeypatch):
    write_text = Path.write_text

    def refusing(self, *args, **kwargs):  # noqa: ANN001
        if self.name.endswith(".reason.txt"):
            self.touch()  # the file is created, then the disk refuses the bytes
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refusing)
    bridge = make_bridge(sending_settings(bridge_settings, storescp.port, storescp.aet))
    bridge.drop(b"not a zip" * 100, "bad.zip")
    monkeypatch.setattr(outbox_module, "INVALID_AFTER_SECONDS", 1.0)
    (done,) = bridge.wait_done()
    assert done.status == FAILED
    assert sorted(p.name for p in bridge.layout.outbox_failed.iterdir()) == ["bad.zip"]  # no empty reason file
    assert "reason file could not be written" in bridge.engine.logbook.newest()[0].detail
    assert_next_good_zip_is_sent(bridge, tmp_path)


def test_names_longer_than_241_bytes_are_sent_and_failed(bridge_settings, make_bridge, storescp, tmp_path,
                                                         monkeypatch):
    monkeypatch.setattr(outbox_module, "INVALID_AFTER_SECONDS", 1.0)
    bridge = make_bridge(sending_settings(bridge_settings, storescp.port, storescp.aet))
    long_good = "ü" * 100 + "x" * 46 + ".zip"  # 250 bytes
    assert len(long_good.encode()) == 250
    drop_as(bridge, good_zip(tmp_path), long_good, tmp_path)
    (done,) = bridge.wait_done()
    assert (done.zip_name, done.status) == (long_good, SUCCESS)
    long_bad = "y" * 251 + ".zip"
    drop_as(bridge, b"not a zip" * 10, long_bad, tmp_path)
    (done,) = bridge.wait_done()
    assert done.status == FAILED
    failed = sorted(p.name for p in bridge.layout.outbox_failed.iterdir())
    assert len(failed) == 2 and all(len(name.encode()) <= 255 for name in failed)
    assert (bridge.layout.outbox_failed / failed[0]).read_bytes() == b"not a zip" * 10
    assert_next_good_zip_is_sent(bridge, tmp_path)


def test_name_not_in_utf8_is_sent(bridge_settings, make_bridge, storescp, tmp_path):
    bridge = make_bridge(sending_settings(bridge_settings, storescp.port, storescp.aet))
    latin1 = os.fsdecode(b"M\xfcller.zip")
    bridge.drop(good_zip(tmp_path), latin1)
    (done,) = bridge.wait_done()
    assert (done.zip_name, done.status) == ("M\ufffdller.zip", SUCCESS)
    assert_next_good_zip_is_sent(bridge, tmp_path)


def test_config_watcher_survives_odd_names_and_refuses_a_deleted_or_empty_file(bridge_settings, make_bridge,
                                                                               tmp_path, monkeypatch):
    from bridge import config_watch

    monkeypatch.setattr(config_watch, "POLL_SECONDS", 0.1)
    (tmp_path / "conf").mkdir()
    config = write_config(tmp_path / "conf" / "config.toml", general__storage_folder=str(tmp_path / "store"),
                          general__min_free_mb=0, receive__enabled=False, receive__timeout_seconds=5)
    bridge = make_bridge(load_settings(config))
    stop = threading.Event()
    watch_config(config, bridge.engine, stop)
    try:
        os.makedirs(tmp_path / "conf" / "sub")
        (tmp_path / "conf" / "sub" / os.fsdecode(b"M\xfcller.zip")).write_bytes(b"x")
        save_values(config, {"receive.timeout_seconds": 7})
        bridge.wait_for_row(lambda r: r.action == SERVICE and "settings applied" in r.detail)
        assert bridge.engine.settings.receive_timeout_seconds == 7
        saved = config.read_text()
        config.write_text("")
        row = bridge.wait_for_row(lambda r: "settings file refused" in r.detail)
        assert "is empty" in row.detail and row.status == WARNING
        config.unlink()
        row = bridge.wait_for_row(lambda r: "settings file refused" in r.detail)
        assert "was deleted" in row.detail and not config.exists()  # not re-created with defaults
        assert bridge.engine.settings.receive_timeout_seconds == 7
        config.write_text(saved.replace("timeout_seconds = 7", "timeout_seconds = 9"))
        bridge.wait_for_row(lambda r: "settings applied" in r.detail)
        assert bridge.engine.settings.receive_timeout_seconds == 9
    finally:
        stop.set()


def test_outbox_auto_deleted_and_recreated(bridge_settings, make_bridge, storescp, tmp_path):
    bridge = make_bridge(sending_settings(bridge_settings, storescp.port, storescp.aet))
    assert_next_good_zip_is_sent(bridge, tmp_path, "before.zip")
    shutil.rmtree(bridge.layout.outbox_auto)
    row = bridge.wait_for_row(lambda r: "was missing" in r.detail)
    assert "Outbox_Auto" in row.detail
    assert_next_good_zip_is_sent(bridge, tmp_path, "after.zip")
    shutil.rmtree(bridge.layout.outbox_auto)
    bridge.layout.outbox_auto.mkdir()  # re-created by a person before the bridge noticed
    assert_next_good_zip_is_sent(bridge, tmp_path, "again.zip")


def test_a_named_pipe_called_zip_is_never_opened(bridge_settings, make_bridge, storescp, tmp_path):
    bridge = make_bridge(sending_settings(bridge_settings, storescp.port, storescp.aet))
    os.mkfifo(bridge.layout.outbox_auto / "x.zip")
    (done,) = bridge.wait_done()
    assert (done.zip_name, done.status) == ("x.zip", FAILED)
    assert "named pipe" in (bridge.layout.outbox_failed / "x.zip.reason.txt").read_text()
    assert_next_good_zip_is_sent(bridge, tmp_path)


def test_failed_zip_age_counts_from_the_failure_and_its_reason_goes_after_a_resend(
        bridge_settings, make_bridge, storescp, tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_module, "INVALID_AFTER_SECONDS", 1.0)
    bridge = make_bridge(sending_settings(bridge_settings, storescp.port, storescp.aet))
    old = tmp_path / "old.zip"
    old.write_bytes(b"not a zip" * 10)
    month_ago = time.time() - 30 * 86400
    os.utime(old, (month_ago, month_ago))  # as cp -p or robocopy leave it
    shutil.copy2(old, bridge.layout.outbox_auto / "old.zip")
    (done,) = bridge.wait_done()
    assert done.status == FAILED
    assert sweep(bridge.layout, bridge.engine.logbook, keep_days=7) == []
    # a person fixes the ZIP and moves it back: after it is sent its old reason is gone
    (bridge.layout.outbox_failed / "old.zip").unlink()
    bridge.drop(good_zip(tmp_path), "old.zip")
    (done,) = bridge.wait_done()
    assert done.status == SUCCESS
    assert list(bridge.layout.outbox_failed.iterdir()) == []


def test_a_worker_that_dies_is_logged_restarted_and_shown(bridge_settings, make_bridge, tmp_path, monkeypatch,
                                                          capfd):
    from bridge import supervisor as supervisor_module

    monkeypatch.setattr(supervisor_module, "FIRST_BACKOFF_SECONDS", 0.2)
    calls: queue.Queue[int] = queue.Queue()
    count = [0]
    real_sweep = sweep

    def sweep_failing_once(*args, **kwargs):  # noqa: ANN002, ANN003
        count[0] += 1
        calls.put(count[0])
        if count[0] == 1:
            raise PermissionError(13, "Permission denied", "Outbox_Failed")
        return real_sweep(*args, **kwargs)

    monkeypatch.setattr("bridge.janitor.sweep", sweep_failing_once)
    bridge = make_bridge(replace(bridge_settings, receive_enabled=False))
    row = bridge.wait_for_row(lambda r: "janitor worker stopped unexpectedly" in r.detail)
    assert row.status == FAILED and "PermissionError" in row.detail
    calls.get(timeout=30)
    calls.get(timeout=30)  # swept again after the restart
    notes = bridge.engine.status().worker_notes
    assert len(notes) == 1 and notes[0].startswith("janitor restarted 1×")
    assert "Traceback" not in capfd.readouterr().err  # in dicombridge.log, not on stderr
    assert "PermissionError" in bridge.layout.text_log.read_text()


def test_supervisor_restarts_with_back_off_and_a_row_per_death(tmp_path):
    from bridge.logbook import LogBook

    logbook = LogBook(tmp_path / "log.sqlite3")
    stop = threading.Event()
    runs: queue.Queue[int] = queue.Queue()
    count = [0]

    def loop() -> None:
        count[0] += 1
        runs.put(count[0])
        if count[0] < 3:
            raise RuntimeError("boom")
        stop.wait()

    from bridge import supervisor as supervisor_module

    supervisor_module.FIRST_BACKOFF_SECONDS, saved = 0.05, supervisor_module.FIRST_BACKOFF_SECONDS
    try:
        thread = Supervisor(logbook, stop).thread("test", loop)
        thread.start()
        for _ in range(3):
            runs.get(timeout=30)
        stop.set()
        thread.join(30)
    finally:
        supervisor_module.FIRST_BACKOFF_SECONDS = saved
    rows = [r for r in logbook.newest() if "test worker stopped unexpectedly" in r.detail]
    assert len(rows) == 2 and "restarting it in 0 s" in rows[1].detail  # 0.05 s, then 0.1 s
    logbook.close()

