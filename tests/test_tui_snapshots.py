"""Snapshot tests of both screens at 80×24 and 120×40, with the fixed demo session.

Update after an intended change with: scripts/test tests/test_tui_snapshots.py --snapshot-update
(and look at the SVGs before committing them).
"""

import pytest
from textual.widgets import DataTable, Input

from tui.app import DicomBridgeApp
from tui.demo import DemoSession


def _steady(screen_key: str):
    async def run_before(pilot) -> None:
        if screen_key:
            await pilot.press(screen_key)
        await pilot.pause()
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False  # a blinking cursor would make the picture random
        tables = pilot.app.screen.query(DataTable)
        if tables:
            tables.first().move_cursor(row=1)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@pytest.mark.parametrize("screen_key", ["", "f3"], ids=["logbook", "settings"])
def test_screens(snap_compare, tmp_path, size, screen_key):
    app = DicomBridgeApp(DemoSession(tmp_path / "config.toml"))
    assert snap_compare(app, terminal_size=size, run_before=_steady(screen_key))
