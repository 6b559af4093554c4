"""The ``dicombridge`` command: terminal UI by default, ``--headless`` for services."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .settings import SettingsError, default_config_path, load_settings

EXIT_BAD_SETTINGS = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicombridge",
        description="DICOM bridge between a PACS and a secure-messaging app: receives studies, "
                    "zips one ZIP per study into Inbox_* folders, sends ZIPs from Outbox_Auto.",
    )
    parser.add_argument("--config", type=Path, default=None,
                        help=f"settings file (default: {default_config_path()}; created with defaults if missing)")
    parser.add_argument("--headless", action="store_true", help="run without the terminal UI (for services)")
    parser.add_argument("--version", action="version", version=f"dicombridge {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_path = args.config or default_config_path()
    try:
        settings = load_settings(config_path)
    except SettingsError as err:
        print(f"dicombridge: {config_path}: {err}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    if not args.headless:
        print("dicombridge: the terminal UI is not built yet; running headless", file=sys.stderr)
    from .headless import run_headless

    return run_headless(settings)


if __name__ == "__main__":
    sys.exit(main())
