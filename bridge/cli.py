"""The command line: ``--headless`` for services, echo/send/test-mail/service, and the UI when plugged in.

``python -m bridge.cli --headless`` is what services run (no Textual is loaded). The
``dicombridge`` command (top-level ``dicombridge.py``) passes ``run_ui`` so that, without
``--headless``, the terminal UI opens; ``bridge`` itself never imports the UI.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__, exit_codes
from .runtime import configure_process
from .settings import Settings, SettingsError, default_config_path, load_settings

EXIT_BAD_SETTINGS = exit_codes.BAD_SETTINGS
# One-shot commands use an existing settings file; only starting the bridge creates the default one
NEEDS_EXISTING_CONFIG = ("echo", "send", "test-mail")


def build_parser() -> argparse.ArgumentParser:
    config_option = argparse.ArgumentParser(add_help=False)
    config_option.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                               help=f"settings file (default: {default_config_path()}; starting the bridge creates "
                                    f"it with defaults if missing)")
    parser = argparse.ArgumentParser(
        prog="dicombridge", parents=[config_option],
        description="DICOM bridge between a PACS and a secure-messaging app: receives studies, "
                    "zips one ZIP per study into Inbox_* folders, sends ZIPs from Outbox_Auto.",
    )
    parser.add_argument("--headless", action="store_true", help="run without the terminal UI (for services)")
    parser.add_argument("--version", action="version", version=f"dicombridge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    verbose_option = argparse.ArgumentParser(add_help=False)
    verbose_option.add_argument("-v", "--verbose", action="count", default=0,
                                help="print the DICOM exchange on stderr: one line per message and status "
                                     "(-vv: every PDU too)")
    commands.add_parser("echo", parents=[config_option, verbose_option], help="C-ECHO to the PACS in the settings",
                        epilog=exit_codes.epilog(exit_codes.ECHO_CODES),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands.add_parser("test-mail", parents=[config_option], help="mail the notification recipients now")
    send = commands.add_parser("send", parents=[config_option, verbose_option],
                               help="send a folder of DICOM files or a ZIP",
                               epilog=exit_codes.epilog(exit_codes.SEND_CODES),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    send.add_argument("path", type=Path)
    service = commands.add_parser(
        "service", parents=[config_option], help="run the bridge as a service (systemd; Windows: WinSW)",
        description="install: checks that the config exists and that the user can read it and the venv and "
                    "write the storage folder, then writes, enables and starts the service. Exit 0: done; "
                    "1: refused or failed (the message says why); status: 3 when not installed.")
    service.add_argument("action", choices=["install", "uninstall", "status"])
    service.add_argument("--user", help="Linux: user the service runs as (default: you)")
    service.add_argument("--unit-dir", type=Path,
                         help="where the definition goes (default: /etc/systemd/system, which also enables and "
                              "starts it; Windows: C:\\ProgramData\\DicomBridge\\service)")
    service.add_argument("--winsw", type=Path, help="Windows: the WinSW executable to use (copied beside the "
                                                    "service definition)")
    return parser


def main(argv: list[str] | None = None, run_ui: Callable[[Settings, Path], int] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_process()
    config_path = getattr(args, "config", None) or default_config_path()
    if args.command == "service":  # before the settings are loaded: install must not create a config
        return run_service(args.action, config_path, args.user, args.unit_dir, args.winsw)
    if args.command in NEEDS_EXISTING_CONFIG and not config_path.is_file():
        print(f"dicombridge {args.command}: no settings file {config_path} (name an existing one with --config; "
              f"starting dicombridge once creates the default one)", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    try:
        settings = load_settings(config_path)
    except SettingsError as err:
        print(f"dicombridge: {config_path}: {err}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    if args.command in ("echo", "send"):
        show_dicom_exchange(args.verbose)
    if args.command == "echo":
        return run_echo(settings)
    if args.command == "test-mail":
        return run_test_mail(settings)
    if args.command == "send":
        from .adhoc_send import run_send

        return run_send(args.path, settings, show_progress=not args.verbose)
    if not args.headless:
        if run_ui is None:
            print("dicombridge: the terminal UI is opened by the `dicombridge` command (`python -m dicombridge`); "
                  "`python -m bridge.cli` runs the bridge with --headless", file=sys.stderr)
            return EXIT_BAD_SETTINGS
        return run_ui(settings, config_path)
    from .headless import run_headless

    return run_headless(settings)


def run_service(action: str, config_path: Path, user: str | None, unit_dir: Path | None,
                winsw: Path | None = None) -> int:
    from .service_manager import ServiceError, service_manager

    manager = service_manager(unit_dir, winsw)
    try:
        if action == "install":
            print(manager.install(config_path, user))
        elif action == "uninstall":
            print(manager.uninstall())
        else:
            code, text = manager.status()
            print(text)
            return code
    except (ServiceError, OSError) as err:
        print(f"dicombridge service {action}: {err}", file=sys.stderr)
        return 1
    return 0


def show_dicom_exchange(verbosity: int) -> None:
    """``-v``: pynetdicom's one line per association step and message (C-ECHO/C-STORE and status)
    on stderr, like DCMTK's ``-v``; ``-vv``: its debug log, every PDU included."""
    if not verbosity:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s: %(message)s"))
    for name in ("pynetdicom", "bridge"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)


def run_echo(settings) -> int:  # noqa: ANN001 - Settings
    """``dicombridge echo``: exit 0 when the PACS answers C-ECHO, else the failure's class (``exit_codes``)."""
    from .pacs import pacs_target
    from .sender import echo

    if not settings.send_host:
        print("dicombridge echo: send.host is not set in the settings", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    result = echo(pacs_target(settings))
    print(f"{result.message} ({result.round_trip_ms:.0f} ms)" if result.ok else result.message,
          file=sys.stdout if result.ok else sys.stderr)
    return exit_codes.OK if result.ok else exit_codes.for_send_failure(result.failure)


def run_test_mail(settings) -> int:  # noqa: ANN001 - Settings
    """``dicombridge test-mail``: exit 0 when the mail server took the mail."""
    from .mail import MailError
    from .notifier import send_test_mail

    try:
        print(send_test_mail(settings))
    except MailError as err:
        print(f"dicombridge test-mail: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
