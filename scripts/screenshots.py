#!/usr/bin/env python3
"""Save SVG screenshots of the UI with realistic content into screenshots/ (for the README).

The views and sizes are ``tui.demo.SCREENSHOTS``; the snapshot tests show the same views.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tui.app import DicomBridgeApp  # noqa: E402
from tui.demo import SCREENSHOTS, DemoSession, show  # noqa: E402


async def save_all(folder: Path, config: Path) -> None:
    for name, (view, size) in SCREENSHOTS.items():
        app = DicomBridgeApp(DemoSession(config))
        async with app.run_test(size=size) as pilot:
            await show(pilot, view)
            app.save_screenshot(f"{name}.svg", str(folder))


def main() -> int:
    folder = ROOT / "screenshots"
    folder.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(save_all(folder, Path(tmp) / "config.toml"))
    print(f"saved to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
