"""The ``dicombridge`` command: the engine's command line (``bridge.cli``) with the terminal UI plugged in.

The one module that may import both sides: ``bridge/`` never imports the UI and ``tui/`` reaches
the engine only through ``bridge.session`` (tests/test_architecture.py checks both). Services run
``python -m bridge.cli --headless`` and never load Textual.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bridge.cli import main as engine_main
from bridge.exit_codes import BAD_SETTINGS
from bridge.settings import Settings


def run_ui(settings: Settings, config_path: Path) -> int:
    """Open the terminal UI (hosting the engine, or attached to a running service)."""
    try:
        from tui.app import run_tui  # Textual is loaded only for the UI
    except ImportError as err:  # the engine runs without Textual; the UI needs it
        print(f"dicombridge: the terminal UI needs Textual ({err}); use --headless", file=sys.stderr)
        return BAD_SETTINGS
    return run_tui(settings, config_path)


def main(argv: list[str] | None = None) -> int:
    return engine_main(argv, run_ui=run_ui)


if __name__ == "__main__":
    sys.exit(main())
