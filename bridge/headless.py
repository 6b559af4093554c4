"""Headless mode: run the engine under a service manager, stop cleanly on SIGTERM/SIGINT/Ctrl-C.

Under systemd (``Type=notify``) it says READY=1 once the listener is open, sends the
watchdog's keep-alive from its main loop only while every engine worker shows signs of life,
and says STOPPING=1 when it stops; elsewhere those calls do nothing.
"""

from __future__ import annotations

import signal
import sys
import threading

from .config_watch import watch_config
from .engine import Engine
from .layout import StorageError
from .logbook import FAILED, SERVICE, LogEntry
from .ownership import FolderOwnedElsewhere
from .receiver import ReceiverStartError
from .sd_notify import notify, watchdog_interval
from .settings import Settings

EXIT_START_FAILED = 3
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGBREAK")  # SIGBREAK: Ctrl-Break on Windows; absent names are skipped


def install_stop_handlers(stop_requested: threading.Event) -> list[str]:
    """Route the stop signals this platform has to ``stop_requested``; returns their names."""

    def request_stop(signum: int, _frame: object) -> None:
        print(f"dicombridge: {signal.Signals(signum).name} received, stopping", file=sys.stderr, flush=True)
        stop_requested.set()

    installed = []
    for name in STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            signal.signal(signum, request_stop)
        except (ValueError, OSError, RuntimeError):  # not the main thread, or not deliverable here
            continue
        installed.append(name)
    return installed


def run_headless(settings: Settings, grace_seconds: float = 10.0,
                 stop_requested: threading.Event | None = None) -> int:
    """Run until a stop signal (or ``stop_requested``); returns the process exit code."""
    stop_requested = stop_requested or threading.Event()
    stop_signals = install_stop_handlers(stop_requested)
    notify("STATUS=starting: checking the storage folder and recovering an earlier run")
    try:
        engine = Engine(settings, log_to_stderr=True)
    except (StorageError, FolderOwnedElsewhere) as err:
        print(f"dicombridge: {err}", file=sys.stderr)
        notify(f"STATUS=cannot start: {err}")
        return EXIT_START_FAILED
    try:
        engine.start()
    except ReceiverStartError as err:
        print(f"dicombridge: {err}", file=sys.stderr)
        notify(f"STATUS=cannot start: {err}")
        engine.stop(grace_seconds=0)
        return EXIT_START_FAILED
    if settings.source is not None:
        watch_config(settings.source, engine, stop_requested)
    running = (f"receiving on port {settings.receive_port}" if engine.receiver is not None else "receiving is off")
    notify("READY=1", f"STATUS=running: {running}; storage {engine.storage}")
    print(f"dicombridge: running headless; storage {engine.storage}; stop with {' or '.join(stop_signals) or 'Ctrl-C'}",
          file=sys.stderr, flush=True)
    keep_alive(engine, stop_requested, watchdog_interval())
    notify("STOPPING=1", "STATUS=stopping: letting running associations finish")
    engine.stop(grace_seconds)
    return 0


def keep_alive(engine: Engine, stop_requested: threading.Event, watchdog_seconds: float | None) -> None:
    """Until a stop is requested: WATCHDOG=1 at half systemd's interval while no worker is stuck.

    A worker counts as stuck when it showed no sign of life for a whole watchdog interval; the
    keep-alives then stop, and systemd restarts the bridge one interval later.
    """
    period = watchdog_seconds / 2 if watchdog_seconds else 1.0
    reported = False
    while not stop_requested.wait(timeout=period):
        if watchdog_seconds is None:
            continue
        stuck = engine.stuck_workers(max_age_seconds=watchdog_seconds)
        if not stuck:
            notify("WATCHDOG=1", f"STATUS={status_line(engine)}")
            reported = False
        elif not reported:
            problem = "stuck: " + ", ".join(stuck) + "; no keep-alive sent, systemd will restart the bridge"
            print(f"dicombridge: {problem}", file=sys.stderr, flush=True)
            notify(f"STATUS={problem}")
            engine.logbook.add(LogEntry(action=SERVICE, status=FAILED, detail=f"bridge {problem}"))
            reported = True


def status_line(engine: Engine) -> str:
    """What ``systemctl status`` shows while the bridge runs."""
    status = engine.status()
    receiving = f"listening on port {status.port}" if status.listening else status.receiver_error
    return (f"running: {receiving}; {len(status.pending)} studies pending; "
            f"{status.outbox_waiting} ZIPs waiting to be sent")
