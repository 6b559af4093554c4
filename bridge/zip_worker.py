"""The zip worker: takes studies the aggregator says are due and routes each into an inbox.

Receive → aggregator → **zip worker** → inbox. It runs on its own thread, shaped like the
outbox and the notifier: every failure of one study ends that study visibly (a retry later
when the disk is full, else ``Inbox_Failed`` with a reason), and the loop goes on.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable

from .aggregator import Aggregator, PendingStudy
from .events import EventBus, StudyRouted
from .layout import StorageLayout
from .logbook import FAILED, RECEIVE, SUCCESS, WARNING, LogBook, LogEntry
from .study_record import log_columns
from .supervisor import ThreadFactory, plain_thread
from .zipper import Zipper, ZippingAborted, is_transient

log = logging.getLogger(__name__)

DISK_FULL_RETRY_SECONDS = 10.0


class ZipWorker:
    """Zips due studies, one at a time, until ``stop`` is set."""

    def __init__(self, layout: StorageLayout, aggregator: Aggregator, zipper: Zipper, logbook: LogBook,
                 bus: EventBus, stop: threading.Event, heartbeat: Callable[[], None] = lambda: None,
                 thread_factory: ThreadFactory = plain_thread) -> None:
        """``heartbeat`` is called every round of the loop (the service watchdog's sign of life);
        ``thread_factory`` is the engine's supervisor, which restarts a loop that died."""
        self.layout = layout
        self.aggregator = aggregator
        self.zipper = zipper
        self.logbook = logbook
        self.bus = bus
        self.stop = stop
        self.heartbeat = heartbeat
        self._thread = thread_factory("zipper", self._run)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.heartbeat()
            for study in self.aggregator.claim_due():
                if self.stop.is_set():
                    break
                self.route_study(study)
            self.aggregator.wait_for_work(self.stop)

    def route_study(self, study: PendingStudy) -> None:
        """Zip one claimed study into an inbox, or keep it visibly in Inbox_Failed."""
        try:
            outcome = self.zipper.zip_study(study)
        except ZippingAborted:
            return  # stays in the spool; zipped after the restart
        except Exception as err:  # noqa: BLE001 - every failure is logged and the data kept
            self._handle_failure(study, err)
            return
        shutil.rmtree(study.folder, ignore_errors=True)
        summary = outcome.summary
        status = WARNING if summary.warnings else SUCCESS
        where = outcome.target.parent.name
        detail = f"{summary.image_count} images zipped into {where}"
        if not summary.crids:
            detail += " (no recipient IDs: forward manually)"
        if summary.warnings:
            detail += "; " + "; ".join(summary.warnings)
        self.logbook.add(LogEntry(action=RECEIVE, status=status, detail=detail, target=str(outcome.target),
                                  **log_columns(summary.record)))
        self.bus.publish(StudyRouted(study_key=study.key, target=str(outcome.target), status=status))

    def _handle_failure(self, study: PendingStudy, err: Exception) -> None:
        if is_transient(err):
            self.aggregator.retry_later(study, DISK_FULL_RETRY_SECONDS)
            log.warning("zipping %s: disk full (try %d): %s", study.key, study.attempts, err)
            if study.attempts == 1:
                self.logbook.add(LogEntry(action=RECEIVE, status=WARNING, image_count=study.image_count,
                                          detail=f"cannot zip study {study.key}: disk full ({err}); "
                                                 f"the images stay in the spool and zipping is retried"))
            return
        reason = f"zipping study {study.key} failed: {err}"
        log.exception("zipping %s failed", study.key)
        try:
            target = self.zipper.move_to_failed(study, reason)
        except OSError as move_err:
            self.aggregator.retry_later(study, DISK_FULL_RETRY_SECONDS)
            reason += f"; moving it to {self.layout.inbox_failed.name} failed too ({move_err}), kept in the spool"
            target = study.folder
        self.logbook.add(LogEntry(action=RECEIVE, status=FAILED, detail=reason, image_count=study.image_count,
                                  target=str(target)))
        self.bus.publish(StudyRouted(study_key=study.key, target=str(target), status=FAILED))
