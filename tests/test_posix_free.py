"""The engine where POSIX is missing (as on Windows): no ``os.link``, ``os.umask``, ``os.fchmod``,
``O_DIRECTORY``, ``posix_fadvise``, no SIGTERM, ``chmod`` unsupported, signals not installable.

Each fallback is proved by running the real engine: DCMTK's storescu sends a study, it is zipped.
"""

from __future__ import annotations

import os
import signal
import threading
import zipfile

import pytest

from bridge import headless, layout
from bridge.settings import load_settings

from .conftest import free_port, start_running_bridge, write_config
from .peers import run_storescu
from .studies import make_study

ID = "CRID#1234567890123456"


def _unsupported(*_args: object, **_kwargs: object) -> None:
    raise NotImplementedError("not on this platform")


@pytest.fixture
def without_posix(monkeypatch):
    from bridge import fast_send

    for name in ("link", "fchmod", "O_DIRECTORY", "posix_fadvise", "POSIX_FADV_DONTNEED", "fchown", "getuid",
                 "pread"):
        monkeypatch.delattr(os, name, raising=False)
    monkeypatch.setattr(fast_send, "fcntl", None)  # no SIOCOUTQ: the DIMSE timeout counts from the last write
    monkeypatch.setattr(os, "umask", _unsupported)
    monkeypatch.setattr(os, "chmod", _unsupported)
    monkeypatch.delattr(signal, "SIGTERM", raising=False)


def test_engine_receives_and_zips_without_posix_calls(tmp_path, without_posix):
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                          general__min_free_mb=0, receive__port=free_port(), receive__timeout_seconds=1,
                          receive__crid_tag_group="0010", receive__crid_tag_element="2201")
    running = start_running_bridge(load_settings(config))
    try:
        study = make_study(tmp_path / "study", count=3, crid_value=ID)
        run_storescu(running.port, [str(p) for p in study.files])
        running.wait_routed()
        zips = running.zips("Inbox_Auto")
        assert len(zips) == 1 and len(zipfile.ZipFile(zips[0]).namelist()) == 3
        assert not list((running.storage / ".bridge" / "staging").iterdir())  # moved, not copied
    finally:
        running.engine.stop(grace_seconds=5)


def test_a_second_zip_of_the_same_name_is_never_overwritten_without_links(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "link")
    first, second, target = tmp_path / "a.part", tmp_path / "b.part", tmp_path / "study.zip"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    assert layout.link_without_overwrite(first, target)
    assert not layout.link_without_overwrite(second, target)
    assert target.read_bytes() == b"first" and second.exists()


def test_headless_runs_and_stops_where_no_stop_signal_can_be_installed(tmp_path, without_posix):
    """Run on a thread (signal.signal refuses there, as a Windows service host would run it, and
    SIGTERM is absent): nothing is installed, nothing fails, and the caller's event stops it."""
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                          general__min_free_mb=0, receive__port=free_port())
    installed: list[list[str]] = []
    probe = threading.Thread(target=lambda: installed.append(headless.install_stop_handlers(threading.Event())))
    probe.start()
    probe.join(timeout=30)
    assert installed == [[]]
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(headless.run_headless(load_settings(config), 1, stop)))
    runner.start()
    try:
        assert _wait_for_file(tmp_path / "store" / "Logs" / "logbook.sqlite3")
    finally:
        stop.set()
        runner.join(timeout=60)
    assert result == [0]


def _wait_for_file(path, attempts: int = 600) -> bool:
    ready = threading.Event()
    for _ in range(attempts):
        if path.exists():
            return True
        ready.wait(0.1)
    return False


def test_the_send_fast_path_works_without_pread_and_socket_queue_sizes(tmp_path, without_posix):
    from bridge import sender
    from bridge.fast_send import FastSendDUL

    from .pacs import StoreSCP

    big = make_study(tmp_path / "big", count=1, customize=lambda d: setattr(d, "PixelData", bytes(3 * 1024 * 1024)))
    files = [*make_study(tmp_path / "study", count=2).files, *big.files]  # one read in several pieces
    scp = StoreSCP(tmp_path / "scp")
    sent_before = FastSendDUL.sent
    try:
        target = sender.PacsTarget("127.0.0.1", scp.port, scp.aet, "BRIDGE", network_timeout_seconds=10)
        report = sender.send_files(target, [sender.read_meta(f) for f in files], sender.SendReport())
    finally:
        scp.process.kill()  # no SIGTERM in this test's world
        scp.process.wait(timeout=30)
    assert report.ok and len(report.delivered) == 3 and FastSendDUL.sent - sent_before == 3
    assert len(list((tmp_path / "scp").iterdir())) == 3
