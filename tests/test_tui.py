"""The terminal UI, driven by Textual's Pilot, over a real bridge and real DICOM peers."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
import tomlkit
from textual.widgets import DataTable, Input, Static

from bridge.session import AttachedSession, HostedSession, open_session
from bridge.settings import load_settings
from tui.app import DicomBridgeApp
from tui.unsaved_prompt import UnsavedPrompt

from .conftest import free_port, write_config
from .pacs import StoreSCP
from .peers import run_storescu
from .studies import make_study

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def config(tmp_path) -> Path:
    path = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                        general__min_free_mb=0, receive__port=free_port(), receive__timeout_seconds=1,
                        receive__crid_tag_group="0010", receive__crid_tag_element="2201")
    text = path.read_text().replace("[receive]", "# the PACS in room 2 sends here\n[receive]")
    path.write_text(text)
    return path


@pytest.fixture
def session(config):
    opened = open_session(load_settings(config), config, bind_address="127.0.0.1")
    yield opened
    opened.close()


async def until(pilot, condition, timeout: float = 30.0) -> None:
    """Let the app run until ``condition()`` holds (bounded; the UI refreshes on its own)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def table_rows(app) -> list[dict[str, str]]:
    """The Log Book's rows as shown, top to bottom, by column label."""
    table = app.screen.query_one(DataTable)
    labels = [str(column.label) for column in table.ordered_columns]
    return [dict(zip(labels, (str(cell) for cell in table.get_row_at(i)), strict=True)) for i in range(table.row_count)]


async def test_a_study_sent_by_storescu_appears_without_a_key_press(session, tmp_path):
    assert isinstance(session, HostedSession)
    study = make_study(tmp_path / "send", count=2, crid_value="CRID#1234567890123456")
    app = DicomBridgeApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        port = session.engine.settings.receive_port
        await asyncio.to_thread(run_storescu, port, [str(f) for f in study.files])
        await until(pilot, lambda: any(row["Action"] == "Receive" and row["Status"] == "Success"
                                       for row in table_rows(app)))
        row = next(r for r in table_rows(app) if r["Action"] == "Receive")
        assert row["Patient / what happened"] == "HOLTZMANN, Carsten" and row["#"] == "2"
        assert row["CRID"] == "CRID#1234567890123456"
        status = str(app.screen.query_one("#status", Static).render())
        assert f"listening on port {port}" in status


async def test_filter_and_detail(session, tmp_path):
    app = DicomBridgeApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(table_rows(app)) >= 1)
        await pilot.press("slash")
        await pilot.press(*"nobody-matches-this")
        await until(pilot, lambda: table_rows(app) == [])
        app.screen.query_one("#filter", Input).value = "service"
        await until(pilot, lambda: len(table_rows(app)) >= 1)
        await pilot.press("escape", "down", "up")
        detail = str(app.screen.query_one("#detail", Static).render())
        assert "bridge started" in detail


async def open_settings(pilot):
    await pilot.press("f3")
    await pilot.pause()


async def test_wrong_port_shows_its_message_and_is_not_saved(session, config):
    before = config.read_text()
    app = DicomBridgeApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_settings(pilot)
        port_input = app.screen.query_one("#receive-port", Input)
        port_input.value = "70000"
        await pilot.pause()
        assert "1 to 65535" in str(app.screen.query_one("#receive-port-error", Static).render())
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "Not saved" in str(app.screen.query_one("#result", Static).render())
    assert config.read_text() == before


async def test_save_keeps_comments_applies_the_port_and_reset_restores(session, config):
    new_port = free_port()
    app = DicomBridgeApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_settings(pilot)
        app.screen.query_one("#receive-port", Input).value = str(new_port)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "Saved" in str(app.screen.query_one("#result", Static).render())
        saved = config.read_text()
        assert "# the PACS in room 2 sends here" in saved
        assert tomlkit.parse(saved)["receive"]["port"] == new_port
        with socket.socket() as probe:  # the receiver moved to the new port without a restart
            assert probe.connect_ex(("127.0.0.1", new_port)) == 0
        settings_screen = app.screen
        settings_screen.query_one("#receive-ae-title", Input).value = "CHANGED"
        await pilot.press("ctrl+r")  # an edit would be lost: Save / Discard / Cancel first
        await until(pilot, lambda: isinstance(app.screen, UnsavedPrompt))
        await pilot.click("#discard")
        await until(pilot, lambda: app.screen is settings_screen)
        assert settings_screen.query_one("#receive-ae-title", Input).value == "CRYPE_DCM"


async def test_echo_reports_success_and_failure_and_the_ui_stays_responsive(session, tmp_path):
    scp = StoreSCP(tmp_path / "scp")
    silent = socket.socket()  # accepts connections, never answers: the echo has to wait
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        app = DicomBridgeApp(session)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_settings(pilot)
            screen = app.screen
            screen.query_one("#send-host", Input).value = "127.0.0.1"
            screen.query_one("#send-port", Input).value = str(scp.port)
            screen.query_one("#send-ae-title-receiver", Input).value = scp.aet
            result = screen.query_one("#result", Static)
            await pilot.press("ctrl+e")
            await until(pilot, lambda: "succeeded" in str(result.render()))
            assert " ms" in str(result.render())
            screen.query_one("#send-port", Input).value = str(free_port())
            await pilot.press("ctrl+e")
            await until(pilot, lambda: "no connection" in str(result.render()))
            screen.query_one("#send-port", Input).value = str(silent.getsockname()[1])
            await pilot.press("ctrl+e")
            await pilot.pause()
            await pilot.press("f2")  # the UI answers while the echo waits on its worker thread
            await pilot.pause()
            # Had the echo blocked the UI, its failure would be on screen before F2 was handled.
            assert app.current_mode == "logbook"
            assert str(result.render()).endswith("…"), result.render()
    finally:
        silent.close()
        scp.stop()


async def test_attaches_to_a_running_service_and_starts_no_listener(config, tmp_path):
    from .test_headless import HeadlessBridge

    settings = load_settings(config)
    service = HeadlessBridge(config)
    try:
        service.wait_for_line("running headless")
        session = open_session(settings, config, bind_address="127.0.0.1")
        try:
            assert isinstance(session, AttachedSession)
            app = DicomBridgeApp(session)
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: any(r["Action"] == "Service" for r in table_rows(app)))
                study = make_study(tmp_path / "send", count=1)
                await asyncio.to_thread(run_storescu, settings.receive_port, [str(study.files[0])])
                await until(pilot, lambda: any(r["Action"] == "Receive" for r in table_rows(app)))
                status = str(app.screen.query_one("#status", Static).render())
                assert f"pid {service.process.pid}" in status
            with socket.socket() as probe:  # the port still belongs to the service alone
                with pytest.raises(OSError):
                    probe.bind(("127.0.0.1", settings.receive_port))
        finally:
            session.close()
    finally:
        assert service.stop() == 0


async def test_storage_folder_can_be_picked(session, tmp_path):
    from tui.folder_picker import FolderPicker

    target = tmp_path / "picked"
    target.mkdir()
    app = DicomBridgeApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_settings(pilot)
        field = app.screen.query_one("#general-storage-folder", Input)
        field.value = str(tmp_path)
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, FolderPicker))
        tree = app.screen.query_one("#tree")
        await until(pilot, lambda: any(child.data.path == target for child in tree.root.children))
        node = next(child for child in tree.root.children if child.data.path == target)
        tree.move_cursor(node)
        await pilot.click("#choose")
        await until(pilot, lambda: not isinstance(app.screen, FolderPicker))
        assert field.value == str(target)
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, FolderPicker))
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, FolderPicker))
        assert field.value == str(target)


async def test_tls_settings_are_on_screen_checked_inline_and_used_by_echo(session, tmp_path):
    from .pki import make_pki

    pki = make_pki(tmp_path / "pki")
    scp = StoreSCP(tmp_path / "scp", extra_args=("+tls", str(pki.server.key), str(pki.server.cert),
                                                  "+cf", str(pki.ca)))
    try:
        app = DicomBridgeApp(session)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_settings(pilot)
            screen = app.screen
            screen.query_one("#receive-tls-key", Input).value = str(tmp_path / "missing.key")
            await pilot.pause()
            assert "existing PEM file" in str(screen.query_one("#receive-tls-key-error", Static).render())
            screen.query_one("#receive-tls-key", Input).value = ""
            for widget, value in (("send-host", "127.0.0.1"), ("send-port", str(scp.port)),
                                  ("send-ae-title-receiver", scp.aet), ("send-tls-ca", str(pki.ca)),
                                  ("send-tls-cert", str(pki.client.cert)), ("send-tls-key", str(pki.client.key))):
                screen.query_one(f"#{widget}", Input).value = value
            screen.query_one("#send-tls").value = True
            result = screen.query_one("#result", Static)
            await pilot.press("ctrl+e")
            await until(pilot, lambda: "succeeded" in str(result.render()))
            screen.query_one("#send-tls").value = False  # plain DICOM to the TLS port fails
            await pilot.press("ctrl+e")
            await until(pilot, lambda: "failed" in str(result.render()))
    finally:
        scp.stop()


async def test_notification_settings_are_on_screen_and_test_mail_reaches_the_server(session, tmp_path):
    from .smtp import MailServer

    port = free_port()
    server = MailServer(port)
    try:
        app = DicomBridgeApp(session)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_settings(pilot)
            screen = app.screen
            assert screen.query_one("#notify-smtp-password", Input).password  # typed blind
            for widget, value in (("notify-smtp-host", "127.0.0.1"), ("notify-smtp-port", str(port)),
                                  ("notify-smtp-security", "none"), ("notify-recipients", "it@practice.example")):
                screen.query_one(f"#{widget}", Input).value = value
            result = screen.query_one("#result", Static)
            await pilot.press("ctrl+t")
            await until(pilot, lambda: "test mail sent to it@practice.example" in str(result.render()))
            assert "test mail" in str(server.next_mail(timeout=10)["Subject"])
            screen.query_one("#notify-smtp-port", Input).value = str(free_port())
            await pilot.press("ctrl+t")
            await until(pilot, lambda: "cannot reach mail server" in str(result.render()))
    finally:
        server.stop()
