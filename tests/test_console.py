"""The admin's console (issue 15): keys from any field, unsaved edits, acting on failures,
Pending, Help, attach mode with the service's real state, hand edits, unknown keys."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import tomlkit
from textual.widgets import DataTable, Input, Label, Static

from bridge.events import StatusChanged
from bridge.logbook import FAILED, INFO, RECEIVE, SEND, SUCCESS, LogEntry
from bridge.open_error import open_error
from bridge.session import AttachedSession, HostedSession, open_session
from bridge.settings import load_settings, save_values, unknown_keys
from tui.app import DicomBridgeApp
from tui.folder_picker import FolderPicker
from tui.help_screen import HelpScreen
from tui.messages import LogBookRowsAdded, StatusUpdated
from tui.pending_screen import PendingScreen
from tui.unsaved_prompt import UnsavedPrompt

from .conftest import free_port, write_config
from .misbehaving_pacs import MisbehavingPacs
from .pacs import Orthanc
from .peers import run_storescu
from .studies import make_study
from .test_tui import open_settings, table_rows, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_config(tmp_path: Path, **overrides) -> Path:
    values = {"general__storage_folder": str(tmp_path / "store"), "general__min_free_mb": 0,
              "receive__port": free_port(), "receive__timeout_seconds": 1, "receive__crid_tag_group": "0010",
              "receive__crid_tag_element": "2201"}
    values.update(overrides)
    return write_config(tmp_path / "config.toml", **values)


@pytest.fixture
def hosted(tmp_path):
    config = make_config(tmp_path)
    session = open_session(load_settings(config), config, bind_address="127.0.0.1")
    assert isinstance(session, HostedSession)
    yield session
    session.close()


@contextlib.contextmanager
def attached_to_a_service(config: Path) -> Iterator[tuple[Any, AttachedSession]]:
    """A headless service running on ``config`` and a session attached to it; both end afterwards."""
    from .test_headless import HeadlessBridge

    service = HeadlessBridge(config)
    try:
        service.wait_for_line("running headless")
        session = open_session(load_settings(config), config, bind_address="127.0.0.1")
        assert isinstance(session, AttachedSession)
        try:
            yield service, session
        finally:
            session.close()
    finally:
        service.stop()


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def test_screen_keys_work_while_a_text_field_has_focus(hosted, tmp_path):
    app = DicomBridgeApp(hosted)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_settings(pilot)
        host = app.screen.query_one("#send-host", Input)
        host.focus()
        await pilot.press(*"127.0.0.1")
        app.screen.query_one("#send-port", Input).value = str(free_port())  # nobody listens there
        assert app.focused is host
        await pilot.press("ctrl+e")  # an Input alone would take it as "end of line"
        await app.workers.wait_for_complete()
        await until(pilot, lambda: "no connection" in text_of(app, "#result"))
        assert app.focused is host
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "Saved" in text_of(app, "#result"))
        assert tomlkit.parse(hosted.config_path.read_text())["send"]["host"] == "127.0.0.1"
        await pilot.press("ctrl+t")
        await app.workers.wait_for_complete()
        await until(pilot, lambda: "smtp_host" in text_of(app, "#result"))
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, FolderPicker))
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, FolderPicker))
        await pilot.press("ctrl+r")
        await until(pilot, lambda: "Showing the saved settings" in text_of(app, "#result"))


async def test_unsaved_changes_are_shown_and_quit_asks_save_discard_cancel(hosted):
    app = DicomBridgeApp(hosted)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_settings(pilot)
        settings_screen = app.screen
        assert text_of(app, "#dirty") == ""
        settings_screen.query_one("#receive-ae-title", Input).value = "EDITED"
        await until(pilot, lambda: "unsaved changes" in text_of(app, "#dirty"))
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, UnsavedPrompt))
        await pilot.click("#cancel")
        await until(pilot, lambda: app.screen is settings_screen)
        assert app.is_running and settings_screen.query_one("#receive-ae-title", Input).value == "EDITED"
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, UnsavedPrompt))
        await pilot.click("#save")
        await until(pilot, lambda: not app.is_running)
    assert tomlkit.parse(hosted.config_path.read_text())["receive"]["ae_title"] == "EDITED"


async def test_quit_discarding_leaves_the_file_alone(hosted):
    before = hosted.config_path.read_text()
    app = DicomBridgeApp(hosted)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_settings(pilot)
        app.screen.query_one("#receive-ae-title", Input).value = "EDITED"
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, UnsavedPrompt))
        await pilot.press("d")
        await until(pilot, lambda: not app.is_running)
    assert hosted.config_path.read_text() == before


async def test_switches_say_on_or_off(hosted):
    app = DicomBridgeApp(hosted)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_settings(pilot)
        state = app.screen.query_one("#send-tls-state", Label)
        await until(pilot, lambda: str(state.render()) == "off")
        app.screen.query_one("#send-tls").value = True
        await until(pilot, lambda: str(state.render()) == "on")
        assert str(app.screen.query_one("#receive-enabled-state", Label).render()) == "on"


def failed_zip_in_outbox(tmp_path: Path, storage: Path) -> tuple[Path, list]:
    study = make_study(tmp_path / "study", count=2)
    archive = tmp_path / "Befund.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in study.files:
            zf.write(path, path.name)
    os.replace(archive, storage / "Outbox_Auto" / archive.name)
    return storage / "Outbox_Auto" / archive.name, study


async def test_send_again_sends_a_failed_zip_to_orthanc(tmp_path):
    # A PACS that refuses every image fails the ZIP for good (an unreachable one would be waited out)
    refusing = MisbehavingPacs(lambda uid, n: 0xC000)
    config = make_config(tmp_path, send__enabled=True, send__host="127.0.0.1", send__port=refusing.port,
                         send__ae_title_receiver=refusing.aet, send__retries=0, send__retry_delay_seconds=1)
    session = open_session(load_settings(config), config, bind_address="127.0.0.1")
    orthanc = Orthanc(tmp_path / "orthanc")
    try:
        app = DicomBridgeApp(session)
        async with app.run_test(size=(120, 40)) as pilot:
            _, study = failed_zip_in_outbox(tmp_path, session.storage)
            await until(pilot, lambda: any(r["Action"] == "Send" and r["Status"] == "Failed" for r in table_rows(app)),
                        timeout=120)
            failed = session.storage / "Outbox_Failed" / "Befund.zip"
            assert failed.is_file() and failed.with_name("Befund.zip.reason.txt").is_file()
            session.apply(save_values(config, {"send.port": orthanc.port, "send.ae_title_receiver": orthanc.aet}))
            table = app.screen.query_one(DataTable)
            row = next(i for i, r in enumerate(table_rows(app)) if r["Status"] == "Failed")
            table.move_cursor(row=row)
            await until(pilot, lambda: "reason file:" in text_of(app, "#detail"))  # the reason in full
            assert "send again" in text_of(app, "#detail")
            await pilot.press("a")
            await app.workers.wait_for_complete()
            await until(pilot, lambda: any(r["Action"] == "Send" and r["Status"] == "Success"
                                           for r in table_rows(app)), timeout=120)
            assert not failed.exists() and not failed.with_name("Befund.zip.reason.txt").exists()
            assert any("sent again" in e.detail and "terminal UI" in e.detail for e in app.entries)
        sent = {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in study.files}
        assert sent <= set(orthanc.sop_uids())
    finally:
        orthanc.stop()
        refusing.stop()
        session.close()


def failed_study(tmp_path: Path, storage: Path, logbook, count: int, reason: str) -> Path:  # noqa: ANN001
    """A study the zipper could not route, as it leaves it: Inbox_Failed/<name>_failed + its log-book row."""
    study = make_study(tmp_path / "study", count=count, crid_value="CRID#1234567890123456")
    folder = storage / "Inbox_Failed" / "HOLTZMANN, Carsten_failed"
    folder.mkdir()
    for number, path in enumerate(study.files, start=1):
        os.replace(path, folder / f"{number:06d}-{number}.dcm")
    (folder / "reason.txt").write_text(f"{reason}\n")
    logbook.add(LogEntry(RECEIVE, FAILED, reason, target=str(folder)))
    return folder


async def test_zip_again_routes_a_failed_study_as_if_received_now(hosted, tmp_path):
    folder = failed_study(tmp_path, hosted.storage, hosted.engine.logbook, 3,
                          "zipping study x failed: the disk said no")
    app = DicomBridgeApp(hosted)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: table_rows(app) and table_rows(app)[0]["Status"] == "Failed")
        app.screen.query_one(DataTable).move_cursor(row=0)
        await until(pilot, lambda: "zip again" in text_of(app, "#detail"))
        assert "the disk said no" in text_of(app, "#detail")
        await pilot.press("a")
        await app.workers.wait_for_complete()
        await until(pilot, lambda: any(r["Action"] == "Receive" and r["Status"] == "Success"
                                       for r in table_rows(app)))
    assert not folder.exists()
    zips = list((hosted.storage / "Inbox_Auto").glob("*.zip"))
    assert len(zips) == 1 and len(zipfile.ZipFile(zips[0]).namelist()) == 3


async def test_pending_view_shows_a_study_while_it_arrives(tmp_path):
    config = make_config(tmp_path, receive__timeout_seconds=600)
    session = open_session(load_settings(config), config, bind_address="127.0.0.1")
    try:
        app = DicomBridgeApp(session)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("f4")
            await until(pilot, lambda: isinstance(app.screen, PendingScreen))
            study = make_study(tmp_path / "send", count=2, crid_value="CRID#1234567890123456")
            await asyncio.to_thread(run_storescu, session.engine.settings.receive_port,
                                    [str(f) for f in study.files])
            table = app.screen.query_one(DataTable)
            await until(pilot, lambda: table.row_count == 1 and str(table.get_row_at(0)[3]) == "2")
            cells = [str(c) for c in table.get_row_at(0)]
            assert cells[0] == "HOLTZMANN, Carsten" and cells[6] == "CRID#1234567890123456"
            assert cells[5].endswith("@127.0.0.1")  # calling AE title @ address
            assert "1 pending (2 images" in text_of(app, "#status")
    finally:
        session.close()


async def test_attached_ui_shows_the_service_pending_study_and_its_death(tmp_path):
    config = make_config(tmp_path, receive__timeout_seconds=600)
    settings = load_settings(config)
    with attached_to_a_service(config) as (service, session):
        app = DicomBridgeApp(session)
        async with app.run_test(size=(80, 24)) as pilot:
            pid = service.process.pid
            await until(pilot, lambda: f"service pid {pid}" in text_of(app, "#status"))
            assert f"listening on port {settings.receive_port}" in text_of(app, "#status")
            study = make_study(tmp_path / "send", count=1)
            await asyncio.to_thread(run_storescu, settings.receive_port, [str(study.files[0])])
            await pilot.press("f4")
            await until(pilot, lambda: isinstance(app.screen, PendingScreen))
            table = app.screen.query_one(DataTable)
            await until(pilot, lambda: table.row_count == 1
                        and str(table.get_row_at(0)[0]) == "HOLTZMANN, Carsten")
            assert "1 pending" in text_of(app, "#status")
            assert service.stop() == 0
            await until(pilot, lambda: "service not running" in text_of(app, "#status"))
            assert f"pid {pid}" in text_of(app, "#status")


async def test_hand_edits_are_applied_while_the_ui_hosts_and_the_form_follows(hosted):
    new_port = free_port()
    app = DicomBridgeApp(hosted)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_settings(pilot)
        document = tomlkit.parse(hosted.config_path.read_text())
        document["receive"]["port"] = new_port
        hosted.config_path.write_text(tomlkit.dumps(document))
        port_field = app.screen.query_one("#receive-port", Input)
        await until(pilot, lambda: port_field.value == str(new_port))
        await until(pilot, lambda: hosted.engine.settings.receive_port == new_port)
        await until(pilot, lambda: f"listening on port {new_port}" in text_of(app, "#status"))
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", new_port)) == 0
        port_field.value = "4242"  # being edited: a hand edit must not overwrite it
        document["receive"]["ae_title"] = "BYHAND"
        hosted.config_path.write_text(tomlkit.dumps(document))
        await until(pilot, lambda: hosted.engine.settings.receive_ae_title == "BYHAND")
        await until(pilot, lambda: any("settings applied" in e.detail and "BYHAND" in e.detail for e in app.entries))
        await until(pilot, lambda: "unsaved changes" in text_of(app, "#dirty"))
        assert port_field.value == "4242"


def test_unknown_keys_name_the_nearest_known_one(tmp_path):
    config = make_config(tmp_path)
    config.write_text(config.read_text().replace("[receive]", "[receive]\ntimout_seconds = 5"))
    expected = f"unknown setting receive.timout_seconds in {config} is ignored (did you mean receive.timeout_seconds?)"
    assert unknown_keys(config) == [expected]


async def test_unknown_keys_are_warned_in_the_log_book_and_on_the_settings_screen(tmp_path):
    config = make_config(tmp_path)
    config.write_text(config.read_text().replace("[receive]", "[receive]\ntimout_seconds = 5"))
    session = open_session(load_settings(config), config, bind_address="127.0.0.1")
    try:
        assert any("receive.timout_seconds" in e.detail and "receive.timeout_seconds" in e.detail
                   for e in session.newest())
        app = DicomBridgeApp(session)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_settings(pilot)
            assert "did you mean receive.timeout_seconds" in text_of(app, "#result")
            await pilot.press("ctrl+s")
            await until(pilot, lambda: "Saved" in text_of(app, "#result"))
            assert "did you mean receive.timeout_seconds" in text_of(app, "#result")
    finally:
        session.close()


def test_last_error_clears_once_the_same_kind_of_work_succeeds():
    def row(action, status, detail="", time="10:00:00"):
        return LogEntry(action, status, detail, timestamp=f"2026-11-23T{time}+01:00")

    failed_send = row(SEND, FAILED, "no connection to the PACS", "10:00:01")
    assert open_error([failed_send]) == "10:00:01 send: no connection to the PACS"
    assert open_error([row(SEND, SUCCESS), failed_send]) == ""
    assert open_error([row(RECEIVE, SUCCESS), failed_send]).endswith("no connection to the PACS")
    assert open_error([row(SEND, INFO, "moved back by admin"), failed_send]) == ""


async def test_folder_picker_goes_up_and_refuses_folders_inside_the_storage(hosted, tmp_path):
    app = DicomBridgeApp(hosted)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_settings(pilot)
        field = app.screen.query_one("#general-storage-folder", Input)
        field.value = str(hosted.storage)
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, FolderPicker))
        picker = app.screen
        tree = picker.query_one("#tree")
        inbox = hosted.storage / "Inbox_Auto"
        await until(pilot, lambda: any(child.data.path == inbox for child in tree.root.children))
        tree.move_cursor(next(child for child in tree.root.children if child.data.path == inbox))
        await pilot.click("#choose")
        await until(pilot, lambda: "inside the current storage folder" in text_of(app, "#picker-warning"))
        assert app.screen is picker
        await pilot.click("#parent")
        await until(pilot, lambda: Path(tree.path) == tmp_path)
        other = tmp_path / "elsewhere"
        other.mkdir()
        tree.reload()
        await until(pilot, lambda: any(child.data.path == other for child in tree.root.children))
        tree.move_cursor(next(child for child in tree.root.children if child.data.path == other))
        await pilot.click("#choose")
        await until(pilot, lambda: not isinstance(app.screen, FolderPicker))
        assert field.value == str(other)


async def test_help_lists_folders_keys_files_and_how_to_point_the_pacs(hosted):
    app = DicomBridgeApp(hosted)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = str(app.screen.query_one("#help-text", Static).render())
        for expected in ("Inbox_Failed", "Outbox_Auto", "Ctrl+E", "F4", "logbook.sqlite3", str(hosted.config_path),
                         "AE title", "receive.ae_title", "Days to keep entries"):
            assert expected in text, expected
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen))
        app.screen.query_one("#filter", Input).focus()
        await pilot.press("question_mark")  # typed into the filter, not taken as Help
        assert app.screen.query_one("#filter", Input).value == "?"


async def test_a_burst_of_rows_reaches_the_table_in_few_coalesced_messages(hosted):
    """520 rows at once: newest first, capped at 500 (the selected oldest row falls off), few messages."""
    seen: list = []
    app = DicomBridgeApp(hosted)
    async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
        table = app.screen.query_one(DataTable)
        table.move_cursor(row=table.row_count - 1)  # the oldest row: it will be trimmed away
        for number in range(520):
            hosted.engine.logbook.add(LogEntry(SEND, INFO, f"burst {number}"))
        await until(pilot, lambda: table_rows(app)[0]["Patient / what happened"] == "burst 519")
        shown = [r["Patient / what happened"] for r in table_rows(app)]
        assert shown == [f"burst {n}" for n in range(519, 19, -1)]
        rows_messages = [m for m in seen if isinstance(m, LogBookRowsAdded)]
        assert 1 <= len(rows_messages) < 520
        hosted.engine.bus.publish(StatusChanged(hosted.status()))
        await until(pilot, lambda: any(isinstance(m, StatusUpdated) for m in seen))


async def test_zip_again_from_an_attached_ui_is_done_by_the_service(tmp_path):
    with attached_to_a_service(make_config(tmp_path)) as (service, session):
        folder = failed_study(tmp_path, session.storage, session.logbook, 2, "zipping failed")
        app = DicomBridgeApp(session)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: table_rows(app) and table_rows(app)[0]["Status"] == "Failed")
            app.screen.query_one(DataTable).move_cursor(row=0)
            await until(pilot, lambda: "zip again" in text_of(app, "#detail"))
            await pilot.press("a")
            await app.workers.wait_for_complete()
            await until(pilot, lambda: any(r["Action"] == "Receive" and r["Status"] == "Success"
                                           for r in table_rows(app)))
        assert not folder.exists() and len(list((session.storage / "Inbox_Auto").glob("*.zip"))) == 1
        assert service.stop() == 0


async def test_log_book_at_80x24_shows_the_important_columns_first_and_one_status_line(tmp_path):
    import re

    blocker = socket.socket()  # the receive port is taken: a long "not listening" reason
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    config = make_config(tmp_path, receive__port=blocker.getsockname()[1])
    session = open_session(load_settings(config), config, bind_address="127.0.0.1")
    try:
        app = DicomBridgeApp(session)
        async with app.run_test(size=(80, 24)) as pilot:
            status = app.screen.query_one("#status", Static)
            await until(pilot, lambda: "not listening" in text_of(app, "#status"))
            assert status.size.height == 1
            table = app.screen.query_one(DataTable)
            labels = [str(column.label) for column in table.ordered_columns]
            assert labels[:4] == ["Time", "Patient / what happened", "Status", "Action"]
            assert sum(column.get_render_width(table) for column in table.ordered_columns[:4]) <= 80
            assert app.screen.query_one("#columns-hint").display
            rows = table_rows(app)
            assert all(re.fullmatch(r"\d\d-\d\d \d\d:\d\d:\d\d", row["Time"]) for row in rows)
            failed = next(row for row in rows if row["Status"] == "Failed")
            assert failed["Patient / what happened"]  # a service row says what happened, not only a time
            table.move_cursor(row=rows.index(failed))
            port = str(blocker.getsockname()[1])
            await until(pilot, lambda: port in text_of(app, "#detail"))  # the whole reason, not cut
    finally:
        session.close()
        blocker.close()


def test_attached_status_follows_a_killed_service_and_its_successor(tmp_path):
    """kill -9 leaves the status file behind: its dead PID still says "not running"; a new service's PID shows."""
    from .test_headless import HeadlessBridge

    config = make_config(tmp_path)
    with attached_to_a_service(config) as (first, session):
        changes: queue.Queue[StatusChanged] = queue.Queue()
        session.subscribe(lambda event: changes.put(event) if isinstance(event, StatusChanged) else None)

        def next_status(matches) -> StatusChanged:
            while True:
                event = changes.get(timeout=60)
                if matches(event.status):
                    return event

        next_status(lambda s: s.service_alive and s.owner_pid == first.process.pid and s.listening)
        first.process.kill()
        first.process.wait(timeout=30)
        dead = next_status(lambda s: not s.service_alive)
        assert dead.status.owner_pid == first.process.pid
        second = HeadlessBridge(config)
        try:
            second.wait_for_line("running headless")
            next_status(lambda s: s.service_alive and s.owner_pid == second.process.pid)
        finally:
            assert second.stop() == 0
