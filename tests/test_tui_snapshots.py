"""Snapshot tests of every screen and prompt at 80×24 and 120×40, with the fixed demo session.

Update after an intended change with: scripts/test tests/test_tui_snapshots.py --snapshot-update
(and look at the SVGs before committing them). Each picture the README shows is one of these.
"""

import re
from pathlib import Path

import pytest

from tui.app import DicomBridgeApp
from tui.demo import SCREENSHOTS, VIEWS, DemoSession, show

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
@pytest.mark.parametrize("view", VIEWS)
def test_screens(snap_compare, tmp_path, size, view):
    app = DicomBridgeApp(DemoSession(tmp_path / "config.toml"))

    async def run_before(pilot) -> None:
        await show(pilot, view)

    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)


def test_each_readme_picture_is_a_snapshot_and_regenerated_by_the_script():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"screenshots/([\w-]+)\.svg", readme))
    assert shown and shown <= set(SCREENSHOTS)
    for view, size in SCREENSHOTS.values():
        assert view in VIEWS and f"{size[0]}x{size[1]}" in SIZES
