#!/usr/bin/env python3
"""Save SVG screenshots of both screens with realistic content into screenshots/ (for the README)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual.widgets import DataTable  # noqa: E402

from tui.app import DicomBridgeApp  # noqa: E402
from tui.demo import DemoSession  # noqa: E402

SIZES = {"120x40": (120, 40), "80x24": (80, 24)}


async def save_all(folder: Path, config: Path) -> None:
    for label, size in SIZES.items():
        app = DicomBridgeApp(DemoSession(config))
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            app.screen.query_one(DataTable).move_cursor(row=0)
            await pilot.pause()
            app.save_screenshot(f"logbook-{label}.svg", str(folder))
            await pilot.press("f3")
            await pilot.pause()
            app.save_screenshot(f"settings-{label}.svg", str(folder))
            if label == "120x40":  # the security and e-mail part of the form too
                app.screen.query(".section-title").last().scroll_visible(top=True, animate=False)
                await pilot.pause()
                app.save_screenshot("settings-notify-120x40.svg", str(folder))


def main() -> int:
    folder = ROOT / "screenshots"
    folder.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(save_all(folder, Path(tmp) / "config.toml"))
    print(f"saved to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
