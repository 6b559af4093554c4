"""Headless mode: run the engine under a service manager, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import sys
import threading

from .config_watch import watch_config
from .engine import Engine
from .layout import StorageError
from .ownership import FolderOwnedElsewhere
from .receiver import ReceiverStartError
from .settings import Settings

EXIT_START_FAILED = 3


def run_headless(settings: Settings, grace_seconds: float = 10.0) -> int:
    """Run until a stop signal; returns the process exit code."""
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        print(f"dicombridge: {signal.Signals(signum).name} received, stopping", file=sys.stderr, flush=True)
        stop_requested.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    try:
        engine = Engine(settings, log_to_stderr=True)
    except (StorageError, FolderOwnedElsewhere) as err:
        print(f"dicombridge: {err}", file=sys.stderr)
        return EXIT_START_FAILED
    try:
        engine.start()
    except ReceiverStartError as err:
        print(f"dicombridge: {err}", file=sys.stderr)
        engine.stop(grace_seconds=0)
        return EXIT_START_FAILED
    if settings.source is not None:
        watch_config(settings.source, engine, stop_requested)
    print(f"dicombridge: running headless; storage {engine.storage}; stop with SIGTERM or Ctrl-C",
          file=sys.stderr, flush=True)
    while not stop_requested.wait(timeout=1.0):
        pass
    engine.stop(grace_seconds)
    return 0
