"""The janitor: failed data a person did not act on is deleted after ``keep_failed_days``.

Only Inbox_Failed and Outbox_Failed are touched, by modification time, which counts from the
failure: the outbox sets a failed ZIP's time stamp when it moves it there (a ZIP copied in with
its original time stamp would otherwise look old), and a failed study folder gets its
reason.txt written at the move. A folder missing for a moment (deleted by hand) is skipped. Every deletion is in
the log book. Log-book rows older than a year are pruned in the same pass.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .layout import StorageLayout
from .logbook import CLEANUP, FAILED, SUCCESS, LogBook, LogEntry
from .supervisor import ThreadFactory, plain_thread

JANITOR_INTERVAL_SECONDS = 3600.0


def sweep(layout: StorageLayout, logbook: LogBook, keep_days: int, now: float | None = None) -> list[Path]:
    """Delete what is older than ``keep_days`` in the two failed folders; returns what went."""
    cutoff = (now or time.time()) - keep_days * 86400
    deleted = []
    for folder in (layout.inbox_failed, layout.outbox_failed):
        try:
            entries = sorted(folder.iterdir())
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if entry.lstat().st_mtime >= cutoff:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except FileNotFoundError:
                continue
            except OSError as err:
                logbook.add(LogEntry(action=CLEANUP, status=FAILED, target=str(entry),
                                     detail=f"cannot delete {entry.name} from {folder.name}: {err}"))
                continue
            deleted.append(entry)
            logbook.add(LogEntry(action=CLEANUP, status=SUCCESS, target=str(entry),
                                 detail=f"deleted {entry.name} from {folder.name}: older than {keep_days} days"))
    logbook.prune()
    return deleted


class Janitor:
    """Sweeps at start-up and then every hour, on its own thread."""

    def __init__(self, layout: StorageLayout, logbook: LogBook, keep_days: Callable[[], int], stop: threading.Event,
                 thread_factory: ThreadFactory = plain_thread) -> None:
        self.layout = layout
        self.logbook = logbook
        self.keep_days = keep_days
        self.stop = stop
        self._thread = thread_factory("janitor", self._run)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            sweep(self.layout, self.logbook, self.keep_days())
            if self.stop.wait(JANITOR_INTERVAL_SECONDS):
                return
